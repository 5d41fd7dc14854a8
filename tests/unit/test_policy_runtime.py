"""The policy's runtime section (in-kernel exec rules) and the policy-file defects of issue 9: every
bad file is one PolicyError naming file:line:col, through the loader, hot reload and `nodewarden run`."""

import hashlib
import os
import subprocess
import sys
import time

import pytest

from agent.policy.loader import PolicyError, load, parse
from agent.policy.runtime import ExecRule, RuleError, RuntimeRules
from agent.policy.store import PolicyStore

GOOD = "runtime:\n  deny_exec:\n    - name: xmrig\n"

# (policy text, line:col of the first error, a piece of its message)
BAD = [
    ("runtime:\n", None, None),  # empty: the defaults, not an error (see test_empty_runtime_is_the_defaults)
    ("runtime: {deny_exec: 5}\n", "1:22", "runtime.deny_exec: expected a list"),
    ('on_error: {action: "\\U00110000"}\n', "1:23", "invalid YAML: escape out of range"),
    ('on_error: {action: "\\UFFFFFFFF"}\n', "1:23", "invalid YAML: escape out of range"),  # OverflowError
    ("runtime: 5\n", "1:10", "runtime: expected a mapping"),
    ("runtime:\n  deny_exec:\n    - 5\n", "3:7", "runtime.deny_exec[0]: expected {name: PROGRAM} or {path: PATH}"),
    ("runtime:\n  deny_exec:\n    - {name: a, path: /b}\n", "3:7", "expected {name: PROGRAM} or {path: PATH}"),
    ("runtime:\n  deny_exec:\n    - {}\n", "3:7", "expected {name: PROGRAM} or {path: PATH}"),
    ("runtime:\n  deny_exec:\n    - {name: 5}\n", "3:14", "runtime.deny_exec[0].name: expected a string"),
    ("runtime:\n  deny_exec:\n    - {name: [a]}\n", "3:14", "runtime.deny_exec[0].name: expected a string"),
    ("runtime:\n  deny_exec:\n    - {name: a, nmae: b}\n", "3:17", "unknown key 'nmae'"),
    ("runtime:\n  deny_exec:\n    - {name: a/b}\n", "3:14", "is a program name, not a path"),
    ("runtime:\n  deny_exec:\n    - path: relative/x\n", "3:13", "must be absolute"),
    ('runtime:\n  deny_exec:\n    - path: "/bin/true\\0x"\n', "3:13", "contains a NUL character"),
    ('runtime:\n  deny_exec:\n    - name: "a\\0"\n', "3:13", "contains a NUL character"),
    ("runtime:\n  deny_exec:\n    - path: /usr/*/bin\n", "3:13", "exact paths and prefixes ending in '*' only"),
    ("runtime:\n  deny_exec:\n    - path: /" + "a" * 300 + "\n", "3:13", "is longer than"),
    ("runtime:\n  deny_exec:\n    - {name: a, scope: pods}\n", "3:24", "scope must be containers, host or both"),
    ("runtime:\n  deny_exec:\n    - {name: a, scope: 5}\n", "3:24",
     "runtime.deny_exec[0].scope must be containers, host or both, not '5'"),
    ("runtime:\n  scope: everywhere\n", "2:10", "runtime.scope must be containers, host or both, not 'everywhere'"),
    ("runtime:\n  drift: maybe\n", "2:10", "runtime.drift must be off, alert or block, not 'maybe'"),
    ("runtime:\n  action: kill\n", "2:11", "runtime.action must be alert or block, not 'kill'"),
    ("runtime:\n  deny: []\n", "2:3", "unknown key 'deny'"),
    ("runtime:\n  drift: off\n  drift: block\n", "3:3", "duplicate key"),
    ("runtime:\n  deny_exec: {name: a}\n", "2:14", "runtime.deny_exec: expected a list"),
    ("a: 1\n\0\n", "2:1", "invalid YAML"),
    ("[" * 5000 + "]" * 5000 + "\n", "1:1", "nested too deeply"),
]


@pytest.mark.parametrize("text,pos,needle", [b for b in BAD if b[1]])
def test_bad_policy_is_one_error_with_its_position(text, pos, needle):
    with pytest.raises(PolicyError) as e:
        parse(text, "p.yaml")
    first = e.value.errors[0]
    assert "\n" not in first and first.startswith(f"p.yaml:{pos}: ") and needle in first, first


def test_empty_runtime_is_the_defaults():
    assert parse("runtime:\n", "p.yaml").runtime == RuntimeRules()
    assert parse("runtime: {}\n", "p.yaml").runtime == RuntimeRules()
    assert parse("runtime:\n  deny_exec:\n", "p.yaml").runtime == RuntimeRules()


def test_every_runtime_error_is_reported_at_once():
    text = "runtime:\n  drift: maybe\n  deny_exec:\n    - path: rel\n    - {name: a, scope: pods}\n  action: x\n"
    with pytest.raises(PolicyError) as e:
        parse(text, "p.yaml")
    positions = [err.split(": ")[0] for err in e.value.errors]
    assert positions == ["p.yaml:2:10", "p.yaml:4:13", "p.yaml:5:24", "p.yaml:6:11"]  # in file order


def test_runtime_section_and_scopes():
    p = parse("runtime:\n  scope: host\n  drift: block\n  action: alert\n  deny_exec:\n"
              "    - name: xmrig\n    - {path: /tmp/*, scope: both}\n    - {name: nc, scope: CONTAINERS}\n", "p.yaml")
    assert p.runtime == RuntimeRules(
        deny_exec=(ExecRule(name="xmrig", scope="host"), ExecRule(path="/tmp/*", scope="both"),
                   ExecRule(name="nc", scope="containers")),
        drift="block", action="alert", scope="host")
    assert parse("runtime: {drift: off}\n").runtime.drift == "off"  # YAML 1.1 reads a bare off as false
    assert parse("runtime: {drift: false}\n").runtime.drift == "off"
    assert parse(GOOD).runtime.deny_exec == (ExecRule(name="xmrig", scope="containers"),)


def test_from_dict_validates_like_the_file():
    """RuntimeRules.from_dict (rules held as data: the kernel tests) walks the same validator."""
    assert RuntimeRules.from_dict({"scope": "host", "deny_exec": [{"name": "a"}, {"path": "/b", "scope": "both"}]}) \
        == RuntimeRules((ExecRule(name="a", scope="host"), ExecRule(path="/b", scope="both")), scope="host")
    assert RuntimeRules.from_dict(None) == RuntimeRules() == RuntimeRules.from_dict({"drift": False})
    for bad, msg in [({"deny_exec": [{"path": "relative"}]}, "runtime.deny_exec[0].path: path 'relative' must be"),
                     ({"deny": []}, "runtime: unknown key 'deny'"), ({"deny_exec": 5}, "expected a list"),
                     ({"deny_exec": [{"name": "x", "path": "/y"}]}, "expected {name: PROGRAM}"),
                     ({"drift": "maybe"}, "runtime.drift must be off, alert or block"), (7, "expected a mapping"),
                     ({"deny_exec": [{"name": object()}]}, "runtime: cannot represent"),
                     ({"deny_exec": [{"name": "a\ud800"}]}, "is not valid Unicode text")]:
        with pytest.raises(RuleError) as e:
            RuntimeRules.from_dict(bad)
        assert msg in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_fingerprint_is_of_the_file_bytes(tmp_path):
    a, b = "on_timeout: {after: 1.5s}\nruntime: {drift: alert}\n", "on_timeout: {after: 1.5s}\nruntime: {drift: off}\n"
    pa, pb = tmp_path / "a.yaml", tmp_path / "b.yaml"
    pa.write_text(a)
    pb.write_text(b)
    fa, fb = load(str(pa)).fingerprint, load(str(pb)).fingerprint
    assert fa != fb and fa != hashlib.sha256(b"1.5s").hexdigest()[:12]
    assert fa == hashlib.sha256(pa.read_bytes()).hexdigest()[:12] == load(str(pa)).fingerprint == parse(a).fingerprint
    assert parse("").fingerprint == hashlib.sha256(b"").hexdigest()[:12]


def _touch(path, step):
    later = time.time_ns() + step * 10**9
    os.utime(path, ns=(later, later))


@pytest.mark.parametrize("text,pos", [("runtime:\n  deny_exec: 5\n", ":2:14:"),
                                      ('runtime: {scope: "\\U00110000"}\n', ":1:21:"),
                                      ("runtime:\n  deny_exec:\n    - {path: rel}\n", ":3:14:")])
def test_hot_reload_keeps_the_old_policy(tmp_path, text, pos):
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    store = PolicyStore(str(path))
    old = store.current
    path.write_text(text)
    _touch(path, 1)
    assert store.check() is False
    assert store.current is old and store.rejected == 1
    assert store.last_error.startswith(f"{path}{pos}") and "\n" not in store.last_error, store.last_error
    path.write_text("runtime:\n")  # an empty section is valid: the defaults
    _touch(path, 2)
    assert store.check() is True and store.current.runtime == RuntimeRules()


@pytest.mark.parametrize("text,pos,needle", [
    ("runtime:\n  deny_exec: 5\n", ":2:14:", "expected a list"),
    ('runtime:\n  scope: "\\U00110000"\n', ":2:13:", "invalid YAML"),
    ("runtime:\n  deny_exec:\n    - {name: a, scope: pods}\n", ":3:24:", "scope must be"),
])
def test_nodewarden_run_refuses_a_bad_policy_in_one_line(tmp_path, text, pos, needle):
    """Through the real CLI: exit 1, one line naming file:line:col, no traceback; no probes are loaded
    (the policy is read first), so this needs no root."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    env = {**os.environ, "NODEWARDEN_AGENT_STATE_DIR": str(tmp_path / "state")}
    p = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--no-containers", "--policy", str(policy),
                        "--duration", "1"], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 1, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in p.stderr and len(lines) == 1, p.stderr
    assert lines[0].startswith(f"nodewarden: ERROR {policy}{pos}") and needle in lines[0], lines[0]


def test_a_fifo_or_directory_is_refused_not_waited_on(tmp_path):
    """A FIFO at the policy path would block open() (and the reload thread) until a writer came."""
    fifo = tmp_path / "policy.yaml"
    os.mkfifo(fifo)
    with pytest.raises(PolicyError, match="not a regular file"):
        load(str(fifo))
    with pytest.raises(PolicyError, match="not a regular file|cannot read"):
        load(str(tmp_path))
