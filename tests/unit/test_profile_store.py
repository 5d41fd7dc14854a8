"""agent/detect/profile/store.py on a real directory: crash-safe saves, loading back, corrupt files moved
aside (never fatal), control requests and apply_request."""

from __future__ import annotations

import os

import orjson
import pytest

from agent.detect.profile.key import Workload
from agent.detect.profile.model import Profile
from agent.detect.profile.store import ProfileStore, apply_request, file_id


def profile(container: str = "web", execs=("/usr/sbin/nginx",)) -> Profile:
    p = Profile(Workload("shop", "Deployment", "web", container, "nginx:1", "sha256:ab"), 100.0)
    for e in execs:
        p.learn("exec", e, 101.0, 512)
    p.learn("write", "/tmp/app", 101.0, 512)
    return p


def test_save_and_load(tmp_path):
    st = ProfileStore(str(tmp_path / "profiles"))
    assert st.load_all() == []  # no directory yet: nothing, no error
    p = profile()
    st.save(p)
    path = tmp_path / "profiles" / (file_id(p.key) + ".json")
    assert path.exists() and oct(path.stat().st_mode & 0o777) == "0o600"
    assert [q.to_doc() for q in st.load_all()] == [p.to_doc()]
    assert not [n for n in os.listdir(tmp_path / "profiles") if n.endswith(".tmp")]
    st.remove(p.key)
    assert st.load_all() == []
    st.remove(p.key)  # twice: fine
    assert st.errors == 0


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"format": 1}', b"\xff\xfe garbage",
                                     orjson.dumps({"format": 1, "key": "x", "workload": {"container": "c"}})])
def test_corrupt_files_are_moved_aside_and_counted(tmp_path, content):
    st = ProfileStore(str(tmp_path))
    good = profile()
    st.save(good)
    (tmp_path / "0123456789abcdef01234567.json").write_bytes(content)
    loaded = st.load_all()
    assert [p.key for p in loaded] == [good.key]
    assert st.errors == 1
    assert (tmp_path / "0123456789abcdef01234567.bad").read_bytes() == content
    assert not (tmp_path / "0123456789abcdef01234567.json").exists()


def test_a_file_under_another_name_is_kept_under_its_key(tmp_path):
    st = ProfileStore(str(tmp_path))
    p = profile()
    (tmp_path / "copied.json").write_bytes(orjson.dumps(p.to_doc()))
    assert [q.key for q in st.load_all()] == [p.key]
    assert sorted(os.listdir(tmp_path)) == sorted([file_id(p.key) + ".json", "requests"])


def test_load_trims_to_caps(tmp_path):
    p = profile(execs=[f"/bin/{i}" for i in range(10)])
    ProfileStore(str(tmp_path)).save(p)
    q, = ProfileStore(str(tmp_path), max_items=3).load_all()
    assert len(q.items["exec"]) == 3 and q.overflow["exec"] == 7


def test_requests_round_trip(tmp_path):
    st = ProfileStore(str(tmp_path))
    st.save(profile())
    os.makedirs(st.requests_dir, exist_ok=True)
    with open(os.path.join(st.requests_dir, "r1.json"), "wb") as f:
        f.write(orjson.dumps({"op": "lock", "key": profile().key, "mode": "protecting"}))
    with open(os.path.join(st.requests_dir, "r2.json"), "wb") as f:
        f.write(b"{not json")
    with open(os.path.join(st.requests_dir, ".r3.json"), "wb") as f:  # being written
        f.write(b"{")
    pend = st.pending()
    assert [(n, e) for n, _, e in pend] == [("r1", "")]  # r2 may still be being written: not yet
    old = os.path.getmtime(os.path.join(st.requests_dir, "r2.json")) - 60
    os.utime(os.path.join(st.requests_dir, "r2.json"), (old, old))
    pend = st.pending()
    assert [n for n, _, _ in pend] == ["r1", "r2"] and "does not parse" in pend[1][2]
    st.finish("r1", True)
    st.finish("r2", False, pend[1][2])
    assert orjson.loads((tmp_path / "requests" / "r1.done").read_bytes()) == {"ok": True, "error": ""}
    assert orjson.loads((tmp_path / "requests" / "r2.done").read_bytes())["ok"] is False
    assert st.pending() == []


def test_apply_request_ops():
    p = profile()
    ps = {p.key: p}
    assert apply_request(ps, {"op": "lock", "key": p.key, "mode": "monitoring"}, now=500.0) == (True, "")
    assert (p.mode, p.locked_by, p.mode_ts) == ("monitoring", "user", 500.0)
    assert apply_request(ps, {"op": "lock", "key": file_id(p.key)}, now=600.0) == (True, "")  # by file id
    assert p.mode == "protecting"
    p.deviations["exec"]["/bin/nc"] = [1.0, 1.0, 1]
    p.run_s = 99.0
    assert apply_request(ps, {"op": "unlock", "key": p.key}, now=700.0) == (True, "")
    assert (p.mode, p.locked_by, p.run_s, p.deviations["exec"]) == ("learning", "", 0.0, {})
    other = profile(container="side")
    assert apply_request(ps, {"op": "import", "doc": other.to_doc()}) == (True, "")
    assert other.key in ps
    assert apply_request(ps, {"op": "forget", "key": other.key}) == (True, "")
    assert other.key not in ps


@pytest.mark.parametrize("req,word", [
    (None, "not an object"),
    ({"op": "explode"}, "unknown op"),
    ({"op": "lock", "key": "nope"}, "no profile"),
    ({"op": "lock", "key": "K", "mode": "learning"}, "mode"),
    ({"op": "import", "doc": {"format": 9}}, "import"),
    ({"op": "import"}, "import"),
])
def test_apply_request_errors(req, word):
    p = profile()
    if isinstance(req, dict) and req.get("key") == "K":
        req = {**req, "key": p.key}
    ok, err = apply_request({p.key: p}, req)
    assert not ok and word in err and "\n" not in err


def test_lock_protecting_needs_an_exec():
    p = profile(execs=())
    ok, err = apply_request({p.key: p}, {"op": "lock", "key": p.key})
    assert not ok and "no executable" in err


def test_apply_offline_saves_and_removes(tmp_path):
    st = ProfileStore(str(tmp_path))
    p = profile()
    st.save(p)
    assert st.apply_offline({"op": "lock", "key": p.key, "mode": "protecting"}) == (True, "")
    q, = st.load_all()
    assert q.mode == "protecting" and q.locked_by == "user"
    assert st.apply_offline({"op": "forget", "key": p.key}) == (True, "")
    assert st.load_all() == []
    assert st.apply_offline({"op": "forget", "key": p.key})[0] is False


def test_unwritable_directory_counts_and_does_not_raise(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    st = ProfileStore(str(blocker / "profiles"))  # below a file: every write fails
    assert st.save_many([profile()]) == 1
    assert st.errors == 1
    assert st.load_all() == []
