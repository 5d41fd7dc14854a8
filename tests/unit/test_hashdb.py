"""The known-bad hash store (agent/imagegate/hashdb.py): every input format, merge and dedupe, lookups,
hostile input and corrupt stores, the `nodewarden db import-hashes` command, and the image scan using it."""

import hashlib
import os
import subprocess
import sys
import zipfile

import pytest

from agent.imagegate import hashdb
from agent.imagegate.config import ImageGateConfig
from agent.imagegate.hashdb import HashDB, HashDBError, WatchedHashDB, import_hashes
from agent.imagegate.malware import RuleSet
from agent.imagegate.model import Severity
from agent.imagegate.scanner import ImageScanner
from agent.imagegate.source import open_path
from tests.unit.imagegate_helpers import busybox_layer, entry, raw_tar, write_layout

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def h(data) -> str:
    return hashlib.sha256(data if isinstance(data, bytes) else data.encode()).hexdigest()


MB_HEADER = (
    "################################################################\n"
    "# MalwareBazaar full malware samples dump (CSV)                #\n"
    "################################################################\n#\n"
    '# "first_seen_utc","sha256_hash","md5_hash","sha1_hash","reporter","file_name","file_type_guess",'
    '"mime_type","signature","clamav","vtpercent","imphash","ssdeep","tlsh"\n'
)


def mb_row(digest: str, signature: str = "AgentTesla", name: str = "invoice.exe") -> str:
    return (f'"2024-05-01 10:00:00", "{digest}", "{digest[:32]}", "{digest[:40]}", "anon", "{name}", "exe", '
            f'"application/x-dosexec", "{signature}", "n/a", "n/a", "n/a", "n/a", "n/a"\n')


def test_plain_list_formats(tmp_path):
    a, b, c, d, e = (h(x) for x in "abcde")
    src = tmp_path / "mine.sha256"
    src.write_text(
        f"# my list\n\n{a} dropper v2\nsha256:{b}\n{c.upper()}  *evil.bin\n{d}\tminer\n   \n{e}\n"
        f"{a[:63]} one short\nnot-a-hash at all\nsha256:{'g' * 64}\n"
    )
    store = str(tmp_path / "s.hashdb")
    res = import_hashes(str(src), store)
    assert (res.fmt, res.added, res.total, res.bad) == ("list", 5, 5, 3)
    assert all("not a sha256 digest" in x and "mine.sha256:" in x for x in res.errors)
    assert [x.rsplit(":", 2)[1] for x in res.errors] == ["9", "10", "11"]  # line numbers
    db = HashDB.open(store)
    assert db.lookup(a) == "mine.sha256: dropper v2"
    assert db.lookup(b) == db.lookup(e) == "mine.sha256"
    assert db.lookup(c) == "mine.sha256: evil.bin"  # sha256sum's binary-mode star dropped
    assert db.lookup(d) == "mine.sha256: miner"
    assert db.lookup(h("f")) is None and db.lookup(a[:63]) is None


def test_lookup_forms(tmp_path):
    a = h("a")
    src = tmp_path / "l.txt"
    src.write_text(f"{a} x\n")
    store = str(tmp_path / "s")
    import_hashes(str(src), store, source="Feed")
    db = HashDB.open(store)
    assert db.lookup(a) == db.lookup("sha256:" + a) == db.lookup(a.upper()) == db.lookup(bytes.fromhex(a)) == "Feed: x"
    assert db.lookup(bytearray.fromhex(a)) == "Feed: x" and a in db
    for miss in ("", "zz" * 32, a[:-2], a + "00", b"\0" * 32, b"short", None, 12, 10**30, ["x"]):
        assert db.lookup(miss) is None
    assert len(db) == 1 and db.label_count == 1
    db.close()
    assert db.lookup(a) is None  # closed: finds nothing, never raises


def test_malwarebazaar_csv_and_zip(tmp_path):
    fam, noname, hashname, spaced = h("1"), h("2"), h("3"), h("4")
    text = (MB_HEADER + mb_row(fam) + mb_row(noname, "n/a", "payload.dll") + mb_row(hashname, "n/a", f"{hashname}.exe")
            + mb_row(spaced, "Mirai,  variant\n2", "x") + '"2024-05-01", "not-a-digest", "x"\n'
            + '"2024-05-01"\n' + "# trailer comment\n")
    csvf = tmp_path / "full.csv"
    csvf.write_text(text)
    res = import_hashes(str(csvf), str(tmp_path / "a"), source="MalwareBazaar")
    assert (res.fmt, res.total, res.bad) == ("csv", 4, 2)
    assert any("sha256_hash is not a sha256" in e for e in res.errors)
    assert any("1 CSV fields" in e for e in res.errors)
    db = HashDB.open(str(tmp_path / "a"))
    assert db.lookup(fam) == "MalwareBazaar: AgentTesla"
    assert db.lookup(noname) == "MalwareBazaar: payload.dll"  # no family: the sample's name
    assert db.lookup(hashname) == "MalwareBazaar"  # a name that is only the hash says nothing
    assert db.lookup(spaced) == "MalwareBazaar: Mirai, variant 2"  # control characters folded
    zf = tmp_path / "full.csv.zip"
    with zipfile.ZipFile(zf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("full.csv", text)
    res = import_hashes(str(zf), str(tmp_path / "z"))
    assert (res.fmt, res.total, res.bad) == ("csv", 4, 2)
    assert HashDB.open(str(tmp_path / "z")).lookup(fam) == "full.csv: AgentTesla"  # default source: file name


def test_csv_with_plain_header_and_headerless_dump(tmp_path):
    a, b = h("a"), h("b")
    (tmp_path / "p.csv").write_text(f"sha256_hash,signature\n{a},Emotet\n")
    assert HashDB.open(str(import_hashes(str(tmp_path / "p.csv"), str(tmp_path / "s1")).path)).lookup(a) == \
        "p.csv: Emotet"
    (tmp_path / "cut.csv").write_text(mb_row(b, "Qakbot"))  # the comment block and header cut off
    res = import_hashes(str(tmp_path / "cut.csv"), str(tmp_path / "s2"), source="MB")
    assert res.fmt == "csv" and HashDB.open(res.path).lookup(b) == "MB: Qakbot"


def test_truncated_csv(tmp_path):
    digests = [h(str(i)) for i in range(50)]
    text = MB_HEADER + "".join(mb_row(d) for d in digests)
    cut = text[: text.index(digests[-1]) + 20]  # the last row ends inside its digest
    (tmp_path / "t.csv").write_text(cut)
    res = import_hashes(str(tmp_path / "t.csv"), str(tmp_path / "s"))
    assert (res.total, res.bad) == (49, 1)
    db = HashDB.open(res.path)
    assert all(db.lookup(d) for d in digests[:-1]) and db.lookup(digests[-1]) is None
    # Cut inside a quoted field: the digest is whole (kept) or not (rejected), never a crash.
    (tmp_path / "q.csv").write_text(MB_HEADER + mb_row(digests[0]) + '"2024-05-01", "' + digests[1])
    res = import_hashes(str(tmp_path / "q.csv"), str(tmp_path / "s3"))
    assert (res.total, res.bad) == (2, 0)
    (tmp_path / "r.csv").write_text(MB_HEADER + mb_row(digests[0]) + '"2024-05-01", "' + digests[1][:40])
    res = import_hashes(str(tmp_path / "r.csv"), str(tmp_path / "s4"))
    assert (res.total, res.bad) == (1, 1)


def test_huge_line_is_skipped_without_reading_it_whole(tmp_path):
    a, b = h("a"), h("b")
    src = tmp_path / "big.txt"
    with open(src, "w") as f:
        f.write(f"{a} before\n")
        f.write("f" * (8 << 20) + " a line of 8 MB\n")
        f.write(f"{b} after\n")
    res = import_hashes(str(src), str(tmp_path / "s"))
    assert (res.total, res.bad) == (2, 1) and "longer than" in res.errors[0] and ":2:" in res.errors[0]
    (tmp_path / "big.csv").write_text(MB_HEADER + mb_row(a) + '"x", "' + "y" * (1 << 20) + '"\n' + mb_row(b))
    res = import_hashes(str(tmp_path / "big.csv"), str(tmp_path / "s2"))
    assert (res.fmt, res.total, res.bad) == ("csv", 2, 1)


def test_merge_dedupe_and_replace(tmp_path):
    store = str(tmp_path / "s")
    one = [h(f"1-{i}") for i in range(300)]
    two = [h(f"2-{i}") for i in range(200)]
    (tmp_path / "one.txt").write_text("".join(f"{d} old\n" for d in one) + f"{one[0]} again\n")
    r1 = import_hashes(str(tmp_path / "one.txt"), store)
    assert (r1.added, r1.duplicates, r1.total) == (300, 1, 300)
    fp1 = HashDB.open(store).fingerprint
    (tmp_path / "two.txt").write_text("".join(f"{d} new\n" for d in one[:100] + two))
    r2 = import_hashes(str(tmp_path / "two.txt"), store)
    assert (r2.added, r2.updated, r2.total) == (200, 100, 500)
    db = HashDB.open(store)
    db.verify()
    assert db.fingerprint != fp1 and len(db) == 500
    assert db.lookup(one[0]) == "two.txt: new" and db.lookup(one[200]) == "one.txt: old"
    assert sorted(k for k, _ in db.items()) == sorted(bytes.fromhex(d) for d in one + two)
    r3 = import_hashes(str(tmp_path / "two.txt"), store)  # the same again: same content, same fingerprint
    assert (r3.added, r3.total) == (0, 500) and HashDB.open(store).fingerprint == db.fingerprint
    r4 = import_hashes(str(tmp_path / "two.txt"), store, replace=True)
    assert r4.total == 300 and HashDB.open(store).lookup(one[200]) is None
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]  # no temporary file left


def test_many_labels_use_wide_index(tmp_path):
    n = 70_000  # over 65535 distinct labels: u32 label numbers, labels read from the mapping
    entries = {hashlib.sha256(str(i).encode()).digest(): f"s: sample {i}" for i in range(n)}
    hashdb.write_store(str(tmp_path / "w"), entries)
    db = HashDB.open(str(tmp_path / "w"))
    db.verify()
    assert db.label_count == n and db._names is None
    for i in (0, 1, n // 2, n - 1):
        assert db.lookup(hashlib.sha256(str(i).encode()).digest()) == f"s: sample {i}"


def test_empty_input_makes_an_empty_store(tmp_path):
    (tmp_path / "e.txt").write_text("# nothing\n\n")
    res = import_hashes(str(tmp_path / "e.txt"), str(tmp_path / "s"))
    assert (res.total, res.bad) == (0, 0)
    db = HashDB.open(res.path)
    db.verify()
    assert len(db) == 0 and db.lookup(h("a")) is None


def _store(tmp_path, name="s", digests=("a", "b")) -> str:
    (tmp_path / f"{name}.txt").write_text("".join(f"{h(d)} fam-{d}\n" for d in digests))
    return import_hashes(str(tmp_path / f"{name}.txt"), str(tmp_path / name)).path


def test_corrupt_stores_give_one_line_errors(tmp_path):
    good = open(_store(tmp_path), "rb").read()
    cases = {
        "missing": None,
        "empty": b"",
        "text": b"d2a84f4b8b650937ec8f73cd8be2c74add5a911ba64df27458ed8229da804a26 a hash list, not a store\n",
        "magic": b"XXHASHDB" + good[8:],
        "version": good[:8] + (99).to_bytes(4, "little") + good[12:],
        "width": good[:28] + (3).to_bytes(4, "little") + good[32:],
        "truncated": good[: len(good) // 2],
        "count": good[:16] + (10**9).to_bytes(8, "little") + good[24:],
    }
    for name, data in cases.items():
        p = tmp_path / f"bad-{name}"
        if data is not None:
            p.write_bytes(data)
        with pytest.raises(HashDBError) as ei:
            HashDB.open(str(p))
        msg = str(ei.value)
        assert msg.startswith(str(p)) and "\n" not in msg, (name, msg)
    flipped = bytearray(good)
    flipped[-3] ^= 0xFF  # in the label text: opens, lookups work, verify() notices
    (tmp_path / "flip").write_bytes(flipped)
    db = HashDB.open(str(tmp_path / "flip"))
    assert db.lookup(h("a"))
    with pytest.raises(HashDBError, match="checksum"):
        db.verify()


def test_garbage_tables_never_crash_a_lookup(tmp_path):
    good = bytearray(open(_store(tmp_path, digests=[str(i) for i in range(500)]), "rb").read())
    lay = hashdb._Layout.of(500, 500, 2)
    for start, end in ((lay.prefix + 4, lay.suffix - 4), (lay.lindex, lay.loffs), (lay.loffs + 4, lay.ltext)):
        bad = bytearray(good)
        bad[start:end] = os.urandom(end - start)
        (tmp_path / "g").write_bytes(bad)
        try:
            db = HashDB.open(str(tmp_path / "g"))
        except HashDBError:
            continue
        for i in range(500):
            r = db.lookup(h(str(i)))
            assert r is None or isinstance(r, str) and r
        with pytest.raises(HashDBError):
            db.verify()


def test_ruleset_uses_the_store_and_survives_a_corrupt_one(tmp_path):
    store = _store(tmp_path)
    rs = RuleSet(hash_db=store)
    assert rs.known_bad(h("a")) == "s.txt: fam-a" and rs.known_bad(h("z")) is None
    assert rs.known_bad(h(b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"))  # bundled list
    base_fp = RuleSet().fingerprint
    assert rs.fingerprint != base_fp and RuleSet(hash_db=str(tmp_path / "none")).fingerprint == base_fp
    assert RuleSet(hash_lists=(store,)).known_bad(h("b")) == "s.txt: fam-b"  # a store named as a hash list
    (tmp_path / "corrupt").write_bytes(hashdb.MAGIC + b"\0" * 100)
    broken = RuleSet(hash_db=str(tmp_path / "corrupt"))
    assert len(broken.errors) == 1 and "corrupt" in broken.errors[0] and "\n" not in broken.errors[0]
    assert broken.known_bad(h("a")) is None and broken.stores == []
    _store(tmp_path, digests=("a", "b", "c"))
    assert RuleSet(hash_db=store).fingerprint != rs.fingerprint  # new content: cached layers redone
    assert rs.stores_changed()


def test_watched_store_reopens_on_change(tmp_path):
    path = str(tmp_path / "s")
    w = WatchedHashDB(path, interval=0)
    assert w.db is None and w.lookup(h("a")) is None  # none yet: nothing found, no error
    _store(tmp_path, digests=("a",))
    assert w.lookup(h("a")) == "s.txt: fam-a"
    _store(tmp_path, digests=("b",))
    assert w.lookup(h("b")) == "s.txt: fam-b"
    old = w.db
    with open(path + ".new", "wb") as f:
        f.write(b"garbage" * 30)
    os.replace(path + ".new", path)
    assert w.lookup(h("b")) == "s.txt: fam-b" and w.db is old  # the old one stays
    assert w.errors_total == 1 and "not a hash store" in w.error
    os.unlink(path)
    assert w.lookup(h("b")) is None


def test_bad_inputs_are_errors_and_write_nothing(tmp_path):
    store = _store(tmp_path)
    before = open(store, "rb").read()
    with pytest.raises(HashDBError, match="No such file"):
        import_hashes(str(tmp_path / "absent.csv"), store)
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as z:
        z.writestr("a.csv", "x")
        z.writestr("b.csv", "y")
    with pytest.raises(HashDBError, match="2 candidate files"):
        import_hashes(str(tmp_path / "two.zip"), store)
    data = (tmp_path / "full.zip")
    with zipfile.ZipFile(data, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("full.csv", MB_HEADER + "".join(mb_row(h(str(i))) for i in range(5000)))
    raw = data.read_bytes()
    (tmp_path / "cut.zip").write_bytes(raw[: len(raw) // 2])  # an interrupted download
    with pytest.raises(HashDBError):
        import_hashes(str(tmp_path / "cut.zip"), store)
    (tmp_path / "corrupt").write_bytes(hashdb.MAGIC + b"\0" * 100)
    with pytest.raises(HashDBError, match="corrupt"):
        import_hashes(str(tmp_path / "s.txt"), str(tmp_path / "corrupt"))  # will not merge into it
    assert open(store, "rb").read() == before


def cli(*args):
    return subprocess.run([sys.executable, "-m", "agent.cli", "db", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_import_hashes_command(tmp_path):
    store = str(tmp_path / "state" / "known-bad.hashdb")
    good = [h(str(i)) for i in range(30)]
    csvf = tmp_path / "full.csv"
    csvf.write_text(MB_HEADER + "".join(mb_row(d) for d in good))
    with zipfile.ZipFile(tmp_path / "full.csv.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.write(csvf, "full.csv")
    r = cli("import-hashes", str(tmp_path / "full.csv.zip"), "--hash-db", store, "--source", "MalwareBazaar")
    assert r.returncode == 0, r.stderr
    assert "imported 30 digests (csv)" in r.stdout and "30 in the store" in r.stdout and r.stderr == ""
    (tmp_path / "l.txt").write_text(f"{good[0]} again\n" + "".join(f"{'ab' * 31}{i:02x}0 bad\n" for i in range(25)))
    r = cli("import-hashes", str(tmp_path / "l.txt"), "--hash-db", store)
    assert r.returncode == 1
    err = r.stderr.splitlines()
    assert len(err) == 21 and "... and 5 more rejected" in err[-1] and all("not a sha256" in e for e in err[:20])
    assert "1 already there" in r.stdout and "30 in the store" in r.stdout
    r = cli("info", "--db", str(tmp_path / "no-advisories"), "--hash-db", store)
    assert r.returncode == 0 and "30 known-bad hashes, 2 labels" in r.stdout
    r = cli("import-hashes", str(tmp_path / "nope.csv"), "--hash-db", store)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nope.csv" in r.stderr
    with open(store, "r+b") as f:
        f.write(b"junk")
    r = cli("info", "--db", str(tmp_path / "no-advisories"), "--hash-db", store)
    assert r.returncode == 2 and "not a hash store" in r.stderr
    r = cli("import-hashes", str(tmp_path / "l.txt"), "--hash-db", store)
    assert r.returncode == 2 and "--replace" in r.stderr and r.stderr.count("\n") == 1
    r = cli("info", "--db", str(tmp_path / "no-advisories"), "--hash-db", str(tmp_path / "none"))
    assert r.returncode == 2 and "no known-bad hash store" in r.stdout


def test_image_scan_flags_a_file_in_the_store_and_redoes_cached_layers(tmp_path):
    dropper, later = b"\x7fELF dropper from a feed\n", b"#!/bin/sh\n# fetched later\n"
    (tmp_path / "feed.txt").write_text(f"{h(dropper)} Mirai\n")
    store = import_hashes(str(tmp_path / "feed.txt"), str(tmp_path / "known-bad.hashdb"), source="feed").path
    cfg = ImageGateConfig(cache_path=str(tmp_path / "cache.db"), advisory_db="", hash_lists=(store,),
                          refresh_interval=0)
    s = ImageScanner(cfg)
    built = write_layout(tmp_path / "img", [busybox_layer(), raw_tar([entry("opt/d", dropper), entry("opt/l", later)])])
    rep = s.scan(open_path(str(built.path)))
    flagged = {(f.rule, f.path, f.severity) for f in rep.findings if f.category == "malware"}
    assert flagged == {("hash:feed", "/opt/d", Severity.CRITICAL)}
    assert any("feed: Mirai" in f.detail for f in rep.findings)
    assert s.scan(open_path(str(built.path))).cache_hit == "verdict"
    (tmp_path / "more.txt").write_text(f"{h(later)} Gafgyt\n")
    import_hashes(str(tmp_path / "more.txt"), store, source="feed")
    assert s.refresh() is True  # the store was replaced: new fingerprint, cached layer results dropped
    rep = s.scan(open_path(str(built.path)))
    assert rep.cache_hit == "none"
    assert {f.path for f in rep.findings if f.rule == "hash:feed"} == {"/opt/d", "/opt/l"}


def test_scanner_goes_on_without_a_corrupt_store(tmp_path):
    (tmp_path / "broken.hashdb").write_bytes(hashdb.MAGIC + os.urandom(300))
    s = ImageScanner(ImageGateConfig(cache_path="", advisory_db="", hash_lists=(str(tmp_path / "broken.hashdb"),)))
    assert [e for e in s.rule_errors if "broken.hashdb" in e and "\n" not in e]
    eicar = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
    built = write_layout(tmp_path / "img", [busybox_layer(), raw_tar([entry("tmp/e", eicar)])])
    rep = s.scan(open_path(str(built.path)))
    assert ("hash:known-bad.sha256", "/tmp/e") in {(f.rule, f.path) for f in rep.findings}  # bundled list still on


def test_concurrent_imports_lose_nothing(tmp_path):
    import threading

    store = str(tmp_path / "s")
    files = []
    for n in range(4):
        (tmp_path / f"f{n}.txt").write_text("".join(f"{h(f'{n}-{i}')}\n" for i in range(2000)))
        files.append(str(tmp_path / f"f{n}.txt"))
    ts = [threading.Thread(target=import_hashes, args=(f, store)) for f in files]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    db = HashDB.open(store)
    assert len(db) == 8000 and all(db.lookup(h(f"{n}-1999")) == f"f{n}.txt" for n in range(4))
