"""Malformed OCI layouts and archives through the real CLI (`python -m agent.cli scan`): exit 2
(an error, never 1: that is the block status) with one line on stderr and no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from agent.imagegate.config import ImageGateConfig
from agent.imagegate.scanner import ImageScanner, spec_digest
from agent.imagegate.source import open_path
from tests.harness.oci import build_image, unpack_layout

ROOT = Path(__file__).resolve().parents[2]


def scan(*args) -> tuple[int, str, str]:
    p = subprocess.run([sys.executable, "-m", "agent.cli", "scan", *map(str, args), "--db", ""],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    return p.returncode, p.stdout, p.stderr


def assert_error(rc, err, *words):
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("nodewarden scan: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in err, err


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    img = build_image(tmp / "img.tar", "nodewarden.test/cli:1")
    return img, unpack_layout(img, tmp / "pristine")


def _copy(src: Path, dest: Path) -> Path:
    for p in src.rglob("*"):
        if p.is_file():
            (dest / p.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (dest / p.relative_to(src)).write_bytes(p.read_bytes())
    return dest


def _index(d: Path, fn) -> Path:
    index = json.loads((d / "index.json").read_text())
    (d / "index.json").write_text(json.dumps(fn(index)))
    return d


def test_pristine_layout_scans(layout):
    rc, out, err = scan(layout[1])
    assert rc == 0 and "verdict: ALERT" in out and "image-runs-as-root" in out, err  # no USER: alert, not block


def test_manifests_not_a_list(layout, tmp_path):
    d = _index(_copy(layout[1], tmp_path), lambda i: {"manifests": 5})
    assert_error(*scan(d)[::2], "manifests is an integer, expected an array")


def test_annotations_a_list(layout, tmp_path):
    def fn(index):
        index["manifests"][0]["annotations"] = ["io.containerd.image.name"]
        return index

    d = _index(_copy(layout[1], tmp_path), fn)
    assert_error(*scan(d)[::2], "annotations is an array")


def _looped_tar(layout, dest: Path) -> Path:
    img, d = layout
    hexd = img.manifest_digest.split(":")[1]
    with tarfile.open(dest, "w") as tar:
        for name in ("oci-layout", "index.json"):
            tar.add(d / name, name)
        for name, target in ((hexd, "loop"), ("loop", hexd)):
            ti = tarfile.TarInfo(f"blobs/sha256/{name}")
            ti.type, ti.linkname = tarfile.SYMTYPE, target
            tar.addfile(ti)
    return dest


def test_tar_blob_symlinks_in_a_loop(layout, tmp_path):
    assert_error(*scan(_looped_tar(layout, tmp_path / "loop.tar"))[::2], "links in a row")


def test_dir_blob_symlinks_in_a_loop(layout, tmp_path):
    img, _ = layout
    d = _copy(layout[1], tmp_path / "d")
    blob = d / "blobs" / "sha256" / img.manifest_digest.split(":")[1]
    blob.unlink()
    os.symlink("loop", blob)
    os.symlink(blob.name, blob.parent / "loop")
    assert_error(*scan(d)[::2], "loop")


def test_spec_with_huge_integers_and_odd_types(layout, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text('{"process": {"user": {"uid": 18446744073709551616}}, "x": 18446744073709551616}')
    rc, out, err = scan(layout[1], "--spec", spec)
    assert rc == 0 and "Traceback" not in err, err
    spec.write_text('{"process": {"user": {"uid": [1]}, "capabilities": [5]}, "linux": {"namespaces": 5},'
                    ' "mounts": {"a": 1}}')
    rc, out, err = scan(layout[1], "--spec", spec, "--all")
    assert rc == 0 and "Traceback" not in err and "runs-as-root" in out, err
    spec.write_text("[1]")
    assert_error(*scan(layout[1], "--spec", spec)[::2], "not a JSON object")


def test_spec_digest_never_raises(layout):
    # An integer past 64 bits, as the stdlib's json.loads gives it (orjson.dumps refuses those).
    assert spec_digest({"x": 2**64}) == spec_digest({"x": 2**64}) != spec_digest({"x": 2**64 + 1})
    deep: list = []
    for _ in range(400):  # past orjson's 254 levels
        deep = [deep]
    assert spec_digest({"x": deep})
    rep = ImageScanner(ImageGateConfig(cache_path="", advisory_db="")).scan(
        open_path(str(layout[1])), {"process": {"user": {"uid": 2**64}}})
    assert rep.image


def test_broken_config_is_an_error_not_a_verdict(layout, tmp_path):
    from tests.harness.oci import write_blob

    img, _ = layout
    d = _copy(layout[1], tmp_path / "d")
    blobs = d / "blobs" / "sha256"
    manifest = json.loads((blobs / img.manifest_digest.split(":")[1]).read_bytes())
    config = json.loads((blobs / img.config_digest.split(":")[1]).read_bytes())
    manifest["config"].update(write_blob(d, json.dumps({**config, "config": 1.5}).encode()))
    mdesc = write_blob(d, json.dumps(manifest).encode())

    def fn(index):
        index["manifests"][0].update(mdesc)
        return index

    assert_error(*scan(_index(d, fn))[::2], "config is a number, expected an object")
