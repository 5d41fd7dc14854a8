"""Hostile layers and manifests: findings or clear errors, never a crash, a write outside, or
unbounded memory."""

import gzip
import hashlib
import json
import os
import tarfile
import tracemalloc
import zlib

import pytest

from agent.imagegate.config import ImageGateConfig
from agent.imagegate.decide import decide
from agent.imagegate.layer import LayerScanner, ScanLimits
from agent.imagegate.malware import RuleSet
from agent.imagegate.scanner import ImageScanner
from agent.imagegate.source import ImageError, open_path
from agent.policy.model import ImagePolicy
from tests.unit.imagegate_helpers import EICAR, busybox_layer, entry, raw_tar, sha, write_layout

BASE = busybox_layer()


@pytest.fixture(scope="module")
def rules():
    return RuleSet()


@pytest.fixture
def scanner():
    return ImageScanner(ImageGateConfig(cache_path="", advisory_db="", bomb_min_bytes=8 << 20, bomb_ratio=50))


def _rules(rep):
    return {f.rule: f for f in rep.findings}


def test_hostile_paths_and_links(scanner, tmp_path):
    before = set(os.listdir(tmp_path.parent))
    layer = raw_tar(
        [
            entry("../../escape.txt", EICAR),
            entry("/etc/abs.conf", b"x"),
            entry("app/link", kind=tarfile.SYMTYPE, link="../../../../etc/shadow"),
            entry("app/ok", kind=tarfile.SYMTYPE, link="/bin/busybox"),
            entry("app/hard", kind=tarfile.LNKTYPE, link="../../etc/passwd"),
            entry("app/hard2", kind=tarfile.LNKTYPE, link="etc/not-in-this-layer"),
        ]
    )
    built = write_layout(tmp_path, [BASE, layer])
    rep = scanner.scan(open_path(str(built.path)))
    got = _rules(rep)
    assert {"path-traversal", "absolute-path", "symlink-escape", "hardlink-escape", "hardlink-outside-layer"} <= set(
        got
    )
    assert got["path-traversal"].severity.label == "high"
    # the ../ entry is never scanned as a file (it has no place in the view), but is reported
    assert not any(f.rule == "yara:EICAR_Test_File" for f in rep.findings)
    assert decide(rep, ImagePolicy()).verdict == "alert"
    assert set(os.listdir(tmp_path.parent)) == before and not os.path.exists("/escape.txt")


def test_decompression_bomb_bounded(scanner, tmp_path):
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    ti = tarfile.TarInfo("zeros")
    ti.size = 400 << 20
    head = ti.tobuf(format=tarfile.PAX_FORMAT)
    parts = [comp.compress(head)]
    chunk = bytes(1 << 20)
    for _ in range(400):
        parts.append(comp.compress(chunk))
    parts.append(comp.flush())
    blob = b"".join(parts)  # ~400 KB that expands to 400 MB
    built = write_layout(tmp_path, [BASE, b"placeholder"], blobs_override={1: blob})
    tracemalloc.start()
    rep = scanner.scan(open_path(str(built.path)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "decompression-bomb" in _rules(rep) and _rules(rep)["decompression-bomb"].severity.label == "critical"
    assert peak < 80 << 20, peak
    assert decide(rep, ImagePolicy()).verdict == "block"


def test_layer_size_limit(rules):
    data = raw_tar([entry("big", bytes(3 << 20))])
    res = LayerScanner(rules, ScanLimits(max_layer_bytes=1 << 20)).scan(sha(data), [data])
    assert "decompression-bomb" in {f.rule for f in res.findings}


def test_truncated_gzip(rules):
    blob = gzip.compress(raw_tar([entry("a", os.urandom(200_000))]))
    cut = blob[: len(blob) // 2]
    res = LayerScanner(rules).scan(sha(blob), [cut], len(blob))
    got = {f.rule: f for f in res.findings}
    assert "layer-unreadable" in got and "truncated" in got["layer-unreadable"].detail
    assert {"blob-digest-mismatch", "blob-size-mismatch"} <= set(got)


@pytest.mark.parametrize("blob,why", [
    (os.urandom(10_000), "invalid header"),  # no compression magic: read as a plain tar
    (b"", "empty file"),
    (b"\x1f\x8b" + os.urandom(100), "gzip"),
    (b"\x28\xb5\x2f\xfd" + os.urandom(100), "zstd"),
], ids=["garbage", "empty", "gzip-garbage", "zstd-garbage"])
def test_garbage_and_empty_blobs(rules, blob, why):
    res = LayerScanner(rules).scan(sha(blob), [blob], len(blob))
    # Unreadable is a critical integrity finding (the policy blocks on it), never an empty result:
    # a layer nobody could read must not pass as a clean one.
    assert res.files == 0 and [f.rule for f in res.findings] == ["layer-unreadable"]
    (f,) = res.findings
    assert f.category == "integrity" and f.severity.label == "critical"
    assert why in f.detail.lower()


def test_blob_digest_mismatch_in_image(scanner, tmp_path):
    other = gzip.compress(raw_tar([entry("evil", EICAR)]), mtime=0)
    built = write_layout(tmp_path, [BASE, raw_tar([entry("fine", b"ok")])], blobs_override={1: other})
    rep = scanner.scan(open_path(str(built.path)))
    got = _rules(rep)
    assert got["blob-digest-mismatch"].severity.label == "critical" and "diff-id-mismatch" in got
    assert decide(rep, ImagePolicy()).verdict == "block"


def test_manifest_digest_mismatch(scanner, tmp_path):
    built = write_layout(tmp_path, [BASE], tamper_manifest=True)
    rep = scanner.scan(open_path(str(built.path)))
    assert _rules(rep)["manifest-digest-mismatch"].severity.label == "critical"
    assert decide(rep, ImagePolicy()).verdict == "block"


def test_diff_id_mismatch_and_count(scanner, tmp_path):
    built = write_layout(tmp_path, [BASE], diff_ids=["sha256:" + "0" * 64, "sha256:" + "1" * 64])
    got = _rules(scanner.scan(open_path(str(built.path))))
    assert "diff-id-mismatch" in got and "diff-id-count" in got


def test_unreadable_layouts_give_clear_errors(scanner, tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        open_path(str(tmp_path / "nope"))
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ImageError, match="tar"):
        open_path(str(tmp_path / "junk.tar"))
    (tmp_path / "d").mkdir()
    with pytest.raises(ImageError, match="OCI image layout"):
        open_path(str(tmp_path / "d"))
    built = write_layout(tmp_path / "m", [BASE])
    os.unlink(built.path / "blobs" / "sha256" / built.layers[0].split(":")[1])
    with pytest.raises(ImageError, match="missing"):
        scanner.scan(open_path(str(built.path)))
    # a layout whose index points at a bad digest string
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "index.json").write_text(json.dumps({"manifests": [{"digest": "sha256:../../etc/passwd"}]}))
    with pytest.raises(ImageError, match="invalid digest"):
        scanner.scan(open_path(str(bad)))


def test_blob_symlink_out_of_layout_refused(scanner, tmp_path):
    built = write_layout(tmp_path / "l", [BASE])
    outside = tmp_path / "outside"
    blob = built.path / "blobs" / "sha256" / built.layers[0].split(":")[1]
    outside.write_bytes(blob.read_bytes())
    blob.unlink()
    blob.symlink_to(outside)
    with pytest.raises(ImageError, match="outside the layout"):
        scanner.scan(open_path(str(built.path)))


def test_big_file_memory_is_capped(rules):
    data = raw_tar([entry("huge.bin", os.urandom(24 << 20))])
    chunks = [data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20)]
    tracemalloc.start()
    res = LayerScanner(rules, ScanLimits(max_file_scan=1 << 20)).scan(sha(data), iter(chunks))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert res.files == 1 and res.diff_id == sha(data) and not res.findings
    assert peak < 12 << 20, peak


def test_multi_member_gzip(rules):
    layer = raw_tar([entry("a", EICAR)])
    blob = gzip.compress(layer[:5000]) + gzip.compress(layer[5000:])
    res = LayerScanner(rules).scan(sha(blob), [blob])
    assert res.diff_id == "sha256:" + hashlib.sha256(layer).hexdigest()
    assert any(f.rule == "yara:EICAR_Test_File" for f in res.findings)
