"""The layer scan's streaming path (layer._TarIn): file data taken as views of the decompressed
chunks must give the same hashes, YARA matches and parser input wherever the chunk boundaries
fall, and truncation or oversized headers must stay findings with bounded memory."""

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tracemalloc
import zlib

import pytest

from agent.imagegate import layer
from agent.imagegate.layer import LayerScanner, ScanLimits
from agent.imagegate.malware import RuleSet
from tests.unit.imagegate_helpers import EICAR, PRIVATE_KEY, WEBSHELL, entry, raw_tar, sha


def _split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _hash_rules(tmp_path, *blobs: bytes) -> RuleSet:
    lst = tmp_path / "bad.sha256"
    lst.write_text("".join(f"{hashlib.sha256(b).hexdigest()}  bad-{i}\n" for i, b in enumerate(blobs)))
    return RuleSet(hash_lists=(str(lst),))


@pytest.mark.parametrize("chunk", [511, 4097, 65536, 1 << 20, 1 << 24])
def test_hashes_and_yara_across_chunk_boundaries(tmp_path, chunk):
    small = os.urandom(3000)
    spanning = os.urandom(300_000)
    beyond_cap = os.urandom(700_000)  # bigger than max_file_scan: hashed whole, YARA sees its head
    too_big = os.urandom(900_000)  # bigger than max_hash_bytes: not hashed, so not on the list
    rules = _hash_rules(tmp_path, small, spanning, beyond_cap, too_big)
    layer = raw_tar(
        [
            entry("a/small", small),
            entry("a/spanning", spanning),
            entry("a/eicar", EICAR),
            entry("a/beyond", beyond_cap),
            entry("a/too-big", too_big),
            entry("a/key.pem", PRIVATE_KEY),
            entry("etc/shadow", b"root:$6$salt$hash:19000:0:99999:7:::\nbin:*:19000::::::\n"),
        ]
    )
    limits = ScanLimits(max_file_scan=500_000, max_hash_bytes=800_000)
    res = LayerScanner(rules, limits).scan(sha(layer), _split(layer, chunk), len(layer))
    assert res.diff_id == sha(layer) and res.uncompressed == len(layer) and res.files == 7
    got = {(f.rule, f.path) for f in res.findings}
    assert {
        ("hash:bad.sha256", "/a/small"),
        ("hash:bad.sha256", "/a/spanning"),
        ("hash:bad.sha256", "/a/beyond"),
    } <= got
    assert ("hash:bad.sha256", "/a/too-big") not in got
    assert ("yara:EICAR_Test_File", "/a/eicar") in got
    assert ("yara:Secret_Private_Key", "/a/key.pem") in got
    assert ("shadow-password-hash", "/etc/shadow") in got
    assert not any(f.category == "integrity" for f in res.findings)


def test_gzip_layer_same_findings_as_plain(tmp_path):
    files = [entry(f"d/f{i}", os.urandom(200_000 + i)) for i in range(8)] + [entry("d/eicar", EICAR)]
    layer = raw_tar(files)
    blob = gzip.compress(layer, compresslevel=1)
    rules = _hash_rules(tmp_path, files[3][2])
    plain = LayerScanner(rules).scan(sha(layer), _split(layer, 100_003))
    gz = LayerScanner(rules).scan(sha(blob), _split(blob, 65536))
    assert gz.diff_id == plain.diff_id == sha(layer)
    key = sorted((f.rule, f.path) for f in plain.findings)
    assert key == sorted((f.rule, f.path) for f in gz.findings)
    assert ("hash:bad.sha256", "/d/f3") in key and ("yara:EICAR_Test_File", "/d/eicar") in key


def test_page_gets_all_text_and_web_rules_in_one_scan(tmp_path):
    # web shells are the detector's (agent/imagegate/webshell), not YARA's: a user's *.web.yar rule
    # stands for the "web" group here
    (tmp_path / "site.web.yar").write_text(
        'rule Page_Runs_Request { meta: category = "malware" severity = "high" '
        'strings: $a = "system($_REQUEST" condition: $a }\n')
    rules = RuleSet(rule_dirs=(str(tmp_path),))
    page = WEBSHELL + PRIVATE_KEY  # a web page (text) holding a key: the "all" and "web" groups both match
    got = {m.rule for m in rules.scan("var/www/x.php", page)[0]}
    assert {"yara:Page_Runs_Request", "yara:Secret_Private_Key"} <= got
    # the same bytes as a view (what the layer scan passes) match the same
    assert {m.rule for m in rules.scan("var/www/x.php", memoryview(page))[0]} == got
    # NUL in the head: not text, so only the "all" rules
    assert {m.rule for m in rules.scan("bin/x", b"\0" + PRIVATE_KEY)[0]} == {"yara:Secret_Private_Key"}


def test_truncated_plain_tar_mid_file(tmp_path):
    layer = raw_tar([entry("a", os.urandom(100_000)), entry("b", os.urandom(100_000))])
    cut = layer[:150_000]
    res = LayerScanner(RuleSet()).scan(sha(cut), _split(cut, 4096))
    assert "layer-unreadable" in {f.rule for f in res.findings}
    assert res.diff_id == sha(cut)


def test_oversized_pax_header_refused_with_bounded_memory():
    ti = tarfile.TarInfo("x")
    ti.type = tarfile.XHDTYPE
    ti.size = 1 << 40  # a PAX header that asks tarfile to read 1 TiB into memory
    head = ti.tobuf(format=tarfile.GNU_FORMAT)
    data = head + bytes(1 << 20)
    tracemalloc.start()
    res = LayerScanner(RuleSet(), ScanLimits(max_file_scan=1 << 20)).scan(sha(data), _split(data, 1 << 16))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "layer-unreadable" in {f.rule for f in res.findings}
    assert peak < 16 << 20, peak


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar writes the sparse member")
def test_sparse_member_hashed_expanded(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.write(EICAR)
        f.seek(3 << 20)
        f.write(b"tail")
    out = tmp_path / "l.tar"
    subprocess.run(["tar", "--sparse", "--format=gnu", "-cf", str(out), "-C", str(src), "sparse"], check=True)
    layer = out.read_bytes()
    expanded = (src / "sparse").read_bytes()
    rules = _hash_rules(tmp_path, expanded)
    res = LayerScanner(rules).scan(sha(layer), _split(layer, 4096))
    got = {f.rule for f in res.findings}
    assert {"hash:bad.sha256", "yara:EICAR_Test_File"} <= got and res.diff_id == sha(layer)


def _calls_during(fn):
    """(calls of layer._clean_vector_state, C calls it made) while fn runs: a profile hook watches,
    nothing is replaced."""
    target = layer._clean_vector_state.__code__
    seen = {"resets": 0, "inside": []}
    depth = []

    def hook(frame, event, arg):
        if event == "call" and frame.f_code is target:
            seen["resets"] += 1
            depth.append(frame)
        elif event == "return" and depth and frame is depth[-1]:
            depth.pop()
        elif event == "c_call" and depth and frame is depth[-1]:
            seen["inside"].append(getattr(arg, "__name__", repr(arg)))

    sys.setprofile(hook)
    try:
        result = fn()
    finally:
        sys.setprofile(None)
    return result, seen


def test_isal_inflate_is_followed_by_the_vector_reset_and_hashes_stay_right(tmp_path):
    # What the reset is for: after each ISA-L inflate call the layer scan runs one sha512 block
    # (its AVX2 code ends in VZEROUPPER) so that sha256 does not run with dirty upper vector
    # registers. Checked here: ISA-L is the inflater, the reset runs after every inflate call and
    # really runs sha512, and sha256 over data ISA-L produced still equals the known digest.
    assert layer._inflate is not zlib and layer._inflate.__name__.startswith("isal")
    big = bytes(range(256)) * (48 << 10)  # 12 MiB, hashed in the layer scan after inflate calls
    layer_tar = raw_tar([entry("d/big", big), entry("d/eicar", EICAR)])
    blob = gzip.compress(layer_tar, compresslevel=1)
    rules = _hash_rules(tmp_path, big)
    res, seen = _calls_during(lambda: LayerScanner(rules).scan(sha(blob), _split(blob, 65536)))
    # one inflate call per returned chunk (at most _CHUNK bytes each), each followed by a reset
    chunks = len(layer_tar) // layer._CHUNK
    assert seen["resets"] >= chunks > 10
    assert seen["inside"].count("openssl_sha512") == seen["resets"]
    assert res.diff_id == "sha256:" + hashlib.sha256(layer_tar).hexdigest()
    assert ("hash:bad.sha256", "/d/big") in {(f.rule, f.path) for f in res.findings}
    # and sha256 right after a bare ISA-L inflate, with and without the reset, is the known value
    want = hashlib.sha256(big).hexdigest()
    out = layer._inflate.decompressobj(wbits=31).decompress(gzip.compress(big, compresslevel=1))
    assert hashlib.sha256(out).hexdigest() == want
    layer._clean_vector_state()
    assert hashlib.sha256(out).hexdigest() == want
