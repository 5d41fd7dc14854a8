"""Entries written through a symlink that points out of the image root (absolute, or climbing
above it with ../): their own finding, naming the link and the file, within a layer and across
layers; links replaced by an upper layer no longer count."""

from __future__ import annotations

import tarfile

import pytest

from agent.imagegate.cache import Cache
from agent.imagegate.config import ImageGateConfig
from agent.imagegate.decide import decide
from agent.imagegate.model import Severity
from agent.imagegate.scanner import ImageScanner
from agent.imagegate.source import open_path
from agent.policy.model import ImagePolicy
from tests.unit.imagegate_helpers import busybox_layer, entry, raw_tar, write_layout

BASE = busybox_layer()
SYM, DIR = tarfile.SYMTYPE, tarfile.DIRTYPE


def _scan(tmp_path, *layers, cache=None):
    scanner = ImageScanner(ImageGateConfig(cache_path="", advisory_db=""), cache=cache)
    built = write_layout(tmp_path, [BASE, *(raw_tar(x) for x in layers)])
    return scanner.scan(open_path(str(built.path)))


def _through(rep):
    return {f.path: f for f in rep.findings if f.rule == "symlink-write-through"}


def test_absolute_symlink_within_a_layer(tmp_path):
    rep = _scan(tmp_path, [entry("evil", kind=SYM, link="/somewhere"), entry("evil/x", b"payload")])
    f = _through(rep)["/evil/x"]
    assert f.category == "integrity" and f.severity == Severity.HIGH
    assert "/evil" in f.detail and "/somewhere" in f.detail and "/evil/x" in f.detail
    assert decide(rep, ImagePolicy()).verdict in ("alert", "block")


def test_relative_escape_within_a_layer(tmp_path):
    rep = _scan(tmp_path, [entry("app/up", kind=SYM, link="../../../../etc"), entry("app/up/cron.d/x", b"* * *"),
                           entry("app/up/sub", kind=DIR, mode=0o755)])
    rules = {f.rule: f for f in rep.findings}
    assert rules["symlink-escape"].path == "/app/up"
    through = _through(rep)
    assert set(through) == {"/app/up/cron.d/x", "/app/up/sub"}
    assert through["/app/up/cron.d/x"].severity >= rules["symlink-escape"].severity


def test_link_in_a_lower_layer_file_in_an_upper_one(tmp_path):
    rep = _scan(tmp_path, [entry("evil", kind=SYM, link="/etc"), entry("rel", kind=SYM, link="../../..")],
                [entry("evil/cron.d/job", b"x"), entry("rel/root/.ssh/authorized_keys", b"ssh-ed25519 A")])
    through = _through(rep)
    assert set(through) == {"/evil/cron.d/job", "/rel/root/.ssh/authorized_keys"}
    f = through["/evil/cron.d/job"]
    assert "/evil" in f.detail and "/etc" in f.detail and f.layer == rep.layers[2]


def test_upper_layer_whiteout_through_a_lower_link(tmp_path):
    rep = _scan(tmp_path, [entry("evil", kind=SYM, link="/etc")], [entry("evil/.wh.passwd")])
    assert "/evil/passwd" in _through(rep)


def test_cached_layers_keep_their_links(tmp_path):
    db = str(tmp_path / "cache.db")
    lower = [entry("evil", kind=SYM, link="/etc"), entry("d", kind=DIR, mode=0o755)]
    _scan(tmp_path / "a", lower, [entry("ok", b"x")], cache=Cache(db))
    rep = _scan(tmp_path / "b", lower, [entry("evil/x", b"x")], cache=Cache(db))  # read back from SQLite
    assert rep.cache_hit == "partial" and "/evil/x" in _through(rep)
    fix = [entry("evil", kind=DIR, mode=0o755)]
    _scan(tmp_path / "c", lower, fix, [entry("evil/y", b"y")], cache=Cache(db))
    rep = _scan(tmp_path / "d", lower, fix, [entry("evil/z", b"z")], cache=Cache(db))
    assert _through(rep) == {}  # the cached directory still replaces the link


@pytest.mark.parametrize("replace", [
    [entry("evil", kind=DIR, mode=0o755), entry("evil/x", b"x")],  # a directory replaces the link
    [entry(".wh.evil"), entry("other", b"x")],  # deleted
    [entry("evil", kind=SYM, link="usr/lib"), entry("usr/lib/x", b"x")],  # now pointing inside
])
def test_replaced_links_no_longer_count(tmp_path, replace):
    rep = _scan(tmp_path, [entry("evil", kind=SYM, link="/etc")], replace, [entry("evil/y", b"y")])
    assert _through(rep) == {}


def test_ordinary_links_are_no_finding(tmp_path):
    rep = _scan(tmp_path, [entry("usr/lib/x", b"x"), entry("lib", kind=SYM, link="usr/lib"),
                           entry("etc/localtime", kind=SYM, link="/usr/share/zoneinfo/UTC")],
                [entry("usr/lib/y", b"y")])
    assert _through(rep) == {} and not any(f.rule == "symlink-escape" for f in rep.findings)
