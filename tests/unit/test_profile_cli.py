"""`nodewarden profile` (agent/commands/profile.py), run as the real CLI in a fresh process over a temporary
state dir: list/show/export read the profile files (written here in the document format of the issue-13
contract, by hand), KEY by prefix or file name; lock/unlock/forget/import applied to the files when no agent
runs, and through the request files when one does (the agent here: this test process, named in status.json,
with the real ProfileEngine ticking on a thread); no answer in time: withdrawn.
Every error is one line on stderr and exit status 1."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOW = time.time()
DIGEST = "sha256:" + "ab" * 32


def _doc(namespace="shop", owner="web", container="app", mode="learning", execs=("/usr/bin/python3",),
         **extra) -> dict:
    w = {"namespace": namespace, "kind": "Deployment", "owner": owner, "container": container,
         "image": "registry.example.com/web:1", "image_digest": DIGEST}
    key = f"{namespace}/Deployment/{owner}/{container}@{DIGEST}"
    items = {"exec": {p: [NOW - 100, NOW - 5, 7] for p in execs},
             "edge": {f"?>{p}": [NOW - 100, NOW - 5, 7] for p in execs},
             "user": {"1000": [NOW - 100, NOW - 5, 7]},
             "peer": {"tcp/127.0.0.1:8080": [NOW - 90, NOW - 6, 30]},
             "listen": {"tcp/8080": [NOW - 99, NOW - 99, 1]},
             "write": {"/tmp/app": [NOW - 80, NOW - 7, 12]}}
    return {"format": 1, "key": key, "workload": w, "mode": mode, "locked_by": "", "created": NOW - 200,
            "run_s": 3000.0, "quiet_run_s": 400.0, "stable_since": NOW - 80, "revision": 3, "mode_ts": NOW - 200,
            "items": {k: v for k, v in items.items() if v}, "overflow": {}, "deviations": {}, **extra}


def _fid(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def _put(state: Path, doc: dict) -> Path:
    d = state / "profiles"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{_fid(doc['key'])}.json"
    path.write_bytes(orjson.dumps(doc))
    return path


def _load(state: Path, key: str) -> dict:
    return orjson.loads((state / "profiles" / f"{_fid(key)}.json").read_bytes())


def _cli(state: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODEWARDEN_")}
    return subprocess.run([sys.executable, "-m", "agent.cli", "profile", *args, "--state-dir", str(state)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _fails(out: subprocess.CompletedProcess, *words: str) -> None:
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("nodewarden profile: "), out.stderr
    assert "Traceback" not in out.stderr
    for w in words:
        assert w in out.stderr, (w, out.stderr)


@pytest.fixture
def state(tmp_path) -> Path:
    return tmp_path


def test_list_empty_and_missing(state):
    out = _cli(state, "list")
    assert out.returncode == 0 and out.stdout.strip() == f"no profiles in {state / 'profiles'}"
    out = _cli(state, "list", "--json")
    assert out.returncode == 0 and orjson.loads(out.stdout) == []


def test_list_and_show(state):
    a, b = _doc(), _doc(owner="api", mode="protecting", locked_by="user", overflow={"exec": 4})
    _put(state, a), _put(state, b)
    out = _cli(state, "list")
    assert out.returncode == 0, out.stderr
    head, *rows, note = out.stdout.splitlines()
    assert head.split()[:3] == ["ID", "MODE", "RUN"] and len(rows) == 2
    assert rows[0].startswith(_fid(b["key"])[:12]) and "protecting (user) !" in rows[0] and rows[0].endswith(b["key"])
    assert " 50m00s " in rows[1] and "learning" in rows[1]
    assert note.startswith("!: over its cap")
    rep = orjson.loads(_cli(state, "list", "--json").stdout)
    assert [r["key"] for r in rep] == [b["key"], a["key"]]
    assert rep[1]["items"] == {"exec": 1, "edge": 1, "user": 1, "peer": 1, "listen": 1, "write": 1}
    assert rep[0]["overflow"] == {"exec": 4} and rep[0]["locked_by"] == "user"

    out = _cli(state, "show", "shop/Deployment/web")  # a unique prefix of the key
    assert out.returncode == 0, out.stderr
    for part in (f"key:        {a['key']}", "namespace shop, kind Deployment, owner web, container app",
                 f"image:      registry.example.com/web:1 ({DIGEST})", "mode:       learning, since",
                 "exec (1):", "/usr/bin/python3", "write (1):", "/tmp/app", "tcp/127.0.0.1:8080"):
        assert part in out.stdout, (part, out.stdout)
    out = _cli(state, "show", _fid(b["key"])[:8], "--json")  # a prefix of the file name
    assert out.returncode == 0 and orjson.loads(out.stdout) == b
    assert "overflow (seen, not learned" in _cli(state, "show", b["key"]).stdout
    assert _cli(state, "show", f"{_fid(a['key'])}.json").returncode == 0  # the file name


def test_key_errors_are_one_line(state):
    _put(state, _doc()), _put(state, _doc(owner="api"))
    _fails(_cli(state, "show", "shop/Deployment/"), "matches 2 profiles", "give more of it")
    _fails(_cli(state, "show", "nothing-like-it"), "no profile matches 'nothing-like-it'")
    _fails(_cli(state, "lock", "nothing-like-it"), "no profile matches")
    _fails(_cli(state, "forget", "shop/"), "matches 2 profiles")
    _fails(_cli(state, "export", "zzz"), "no profile matches")


def test_unreadable_file_is_skipped_and_left_alone(state):
    _put(state, _doc())
    bad = state / "profiles" / f"{'0' * 24}.json"
    bad.write_bytes(b'{"format": 1, "key": ')
    wrong = state / "profiles" / f"{'1' * 24}.json"
    wrong.write_bytes(orjson.dumps({**_doc(), "mode": "sleeping"}))
    out = _cli(state, "list")
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 2
    assert out.stderr.count("skipped") == 2 and "sleeping" in out.stderr and str(bad) in out.stderr
    assert bad.exists() and wrong.exists()  # read-only: the agent moves such files aside, not the CLI


def test_offline_lock_unlock_forget(state):
    a = _doc()
    _put(state, a)
    out = _cli(state, "lock", "shop/Deployment/web")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{a['key']}: locked in protecting (no agent running: written to {state}/profiles)"
    got = _load(state, a["key"])
    assert (got["mode"], got["locked_by"]) == ("protecting", "user") and got["revision"] > a["revision"]
    assert got["mode_ts"] > a["mode_ts"] and got["items"] == a["items"]
    assert _cli(state, "lock", a["key"], "--mode", "monitoring").returncode == 0
    assert _load(state, a["key"])["mode"] == "monitoring"
    out = _cli(state, "unlock", _fid(a["key"]))
    assert out.returncode == 0 and "unlocked: learning" in out.stdout
    assert (_load(state, a["key"])["mode"], _load(state, a["key"])["locked_by"]) == ("learning", "")
    out = _cli(state, "forget", a["key"])
    assert out.returncode == 0 and "forgotten" in out.stdout
    assert not (state / "profiles" / f"{_fid(a['key'])}.json").exists()
    assert _cli(state, "list", "--json").stdout.strip() == "[]"


def test_lock_refusals(state):
    empty = _doc(execs=())
    _put(state, empty)
    _fails(_cli(state, "lock", empty["key"]), "learned no executable")  # protecting would kill every exec
    assert _load(state, empty["key"])["mode"] == "learning"
    assert _cli(state, "lock", empty["key"], "--mode", "monitoring").returncode == 0
    out = _cli(state, "lock", empty["key"], "--mode", "learning")
    assert out.returncode == 2 and "invalid choice" in out.stderr  # argparse's usage error


def test_export_import_round_trip(state, tmp_path):
    a, b = _doc(), _doc(owner="api", execs=("/bin/api", "/bin/sh"))
    src = state / "src"
    _put(src, a), _put(src, b)
    out = _cli(src, "export")
    assert out.returncode == 0 and orjson.loads(out.stdout) == [b, a]
    one = tmp_path / "one.json"
    out = _cli(src, "export", "shop/Deployment/api", "-o", str(one))
    assert out.returncode == 0 and out.stderr.strip() == f"exported 1 profile to {one}"
    assert orjson.loads(one.read_bytes()) == b
    every = tmp_path / "all.json"
    assert _cli(src, "export", "--output", str(every)).returncode == 0

    dst = state / "dst"
    out = _cli(dst, "import", str(every))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"imported 2 of 2 profiles from {every} (no agent running")
    assert {r["key"] for r in orjson.loads(_cli(dst, "list", "--json").stdout)} == {a["key"], b["key"]}
    assert _load(dst, b["key"])["items"] == b["items"]
    # importing again merges: counts are the max, so nothing doubles
    more = {**b, "items": {**b["items"], "exec": {**b["items"]["exec"], "/bin/new": [NOW, NOW, 1]}}}
    one.write_bytes(orjson.dumps(more))
    assert _cli(dst, "import", str(one)).returncode == 0
    got = _load(dst, b["key"])["items"]["exec"]
    assert set(got) == {"/bin/api", "/bin/sh", "/bin/new"} and got["/bin/api"][2] == 7


def test_import_errors(state, tmp_path):
    f = tmp_path / "in.json"
    _fails(_cli(state, "import", str(f)), "no such file")
    f.write_bytes(b"not json")
    _fails(_cli(state, "import", str(f)), str(f))
    f.write_bytes(b"[]")
    _fails(_cli(state, "import", str(f)), "no profile documents")
    f.write_bytes(orjson.dumps([_doc(), 5]))
    _fails(_cli(state, "import", str(f)), "profile 2 of 2", "a JSON object")
    f.write_bytes(orjson.dumps([_doc(owner="ok"), {**_doc(), "format": 9}]))
    _fails(_cli(state, "import", str(f)), "profile 2 of 2", "format 9")
    f.write_bytes(orjson.dumps({**_doc(), "key": "other"}))
    _fails(_cli(state, "import", str(f)), "does not match its workload")
    assert not (state / "profiles").exists() or not list((state / "profiles").glob("*.json"))  # all or nothing


def test_usage_errors(state, tmp_path):
    _fails(_cli(state), "give a subcommand")
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("profiles: {max_items: lots}\n")
    _fails(_cli(state, "list", "--config", str(cfg)), "profiles.max_items")


def test_config_names_the_profiles_dir(state, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"profiles: {{state_dir: {elsewhere}}}\n")
    d = _doc()
    elsewhere.mkdir()
    (elsewhere / f"{_fid(d['key'])}.json").write_bytes(orjson.dumps(d))
    out = _cli(state, "--config", str(cfg), "list", "--json")
    assert out.returncode == 0 and [r["key"] for r in orjson.loads(out.stdout)] == [d["key"]]
    out = _cli(state, "list", "--json", "--profiles-dir", str(elsewhere))
    assert [r["key"] for r in orjson.loads(out.stdout)] == [d["key"]]


class _Agent:
    """This process as the running agent: status.json names our pid, and the real ProfileEngine (no kernel,
    no collector) ticks on a thread as the pipeline's worker does, applying the requests."""

    def __init__(self, state: Path, answer: bool = True):
        from agent.config import ProfilesConfig
        from agent.detect.profile.engine import ProfileEngine
        from agent.detect.profile.store import ProfileStore
        from agent.policy.profiles import ProfilePolicy

        self.engine = ProfileEngine(ProfilesConfig(), ProfilePolicy(), ProfileStore(str(state / "profiles")))
        (state / "status.json").write_bytes(orjson.dumps({"pid": os.getpid(), "started": NOW}))
        self.changes: list = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run if answer else self._stop.wait, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.changes.extend(self.engine.tick())

    def profiles(self) -> dict:
        return {p.key: p for p in self.engine.profiles()}

    def close(self) -> None:
        self._stop.set()
        self._t.join(5)
        self.engine.close()


@pytest.fixture
def agent(state):
    made = []

    def start(answer: bool = True) -> _Agent:
        made.append(_Agent(state, answer))
        return made[-1]

    yield start
    for a in made:
        a.close()


def _requests_left(state: Path) -> list[str]:
    return sorted(os.listdir(state / "profiles" / "requests"))


def test_through_a_running_agent(state, agent, tmp_path):
    a = _doc()
    _put(state, a)
    ag = agent()
    out = _cli(state, "lock", "shop/", "--mode", "monitoring")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{a['key']}: locked in monitoring (by the agent, pid {os.getpid()})"
    assert ag.profiles()[a["key"]].mode == "monitoring" and _requests_left(state) == []
    assert _load(state, a["key"])["mode"] == "monitoring"  # saved before the answer: the CLI reads it next
    (change,) = [c for c in ag.changes if c.key == a["key"]]
    assert (change.mode, change.previous_mode, change.reason) == ("monitoring", "learning", "locked by user")
    # a key the agent holds but has not flushed yet goes to it as given; its refusal is the error
    _fails(_cli(state, "unlock", "shop/Deployment/new/app@x"), "no profile 'shop/Deployment/new/app@x'")
    f = tmp_path / "two.json"
    f.write_bytes(orjson.dumps([_doc(owner="x"), _doc(owner="y")]))
    out = _cli(state, "import", str(f))
    assert out.returncode == 0 and out.stdout.startswith("imported 2 of 2 profiles") and "by the agent" in out.stdout
    assert {"shop/Deployment/x/app@" + DIGEST, "shop/Deployment/y/app@" + DIGEST} <= set(ag.profiles())
    assert _load(state, "shop/Deployment/x/app@" + DIGEST)["items"] == _doc(owner="x")["items"]
    out = _cli(state, "unlock", a["key"][:20])
    assert out.returncode == 0 and ag.profiles()[a["key"]].mode == "learning"
    assert _cli(state, "forget", a["key"]).returncode == 0 and a["key"] not in ag.profiles()
    assert not (state / "profiles" / f"{_fid(a['key'])}.json").exists()
    assert _requests_left(state) == []


def test_agent_that_does_not_answer(state, agent):
    a = _doc()
    _put(state, a)
    agent(answer=False)
    t0 = time.monotonic()
    out = _cli(state, "lock", a["key"], "--wait", "0.5")
    assert time.monotonic() - t0 < 10
    _fails(out, f"no answer from the agent (pid {os.getpid()}) within 0.5 s, request withdrawn")
    assert _requests_left(state) == []  # withdrawn: it will not apply later
    assert _load(state, a["key"])["mode"] == "learning"


def test_dead_agent_in_status_json_is_no_agent(state):
    a = _doc()
    _put(state, a)
    p = subprocess.Popen(["true"])
    p.wait()
    (state / "status.json").write_bytes(orjson.dumps({"pid": p.pid}))
    out = _cli(state, "lock", a["key"])
    assert out.returncode == 0 and "no agent running" in out.stdout
    assert _load(state, a["key"])["mode"] == "protecting"
