"""A quiet machine stays quiet: about two minutes of ordinary developer and CI work under the real agent
with its bundled rules and containers on (a private containerd) raise no alert.

The work: package queries (dpkg -l, dpkg -S, apt-cache policy; no network, so nothing is installed from
a mirror), compiling and running a C program with gcc, a venv with pip installing a wheel the test
builds, git init/commit/clone of a local repository, a container started and stopped, and shell work
(ls, cat, grep, sed, tar, find). It runs in a workspace below /tmp, because that is where CI checks a
project out and builds it.

The agent sees the whole machine, and a developer's machine runs other things (other test sessions,
say): an alert counts when it comes from this test's own process tree (followed through the agent's
fork records from this process and the private containerd) or from one of its containers. The failure
message lists each counted alert's rule and output line, and the others seen meanwhile.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
import zipfile

import pytest

from tests.kernel.conftest import AgentProcess

pytestmark = pytest.mark.e2e

ACTIVITY_S = 100.0  # the loop's length (the venv included); with the agent's start and stop about two minutes
HELLO_C = b'#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n'
SYSTEM_PY = "/usr/bin/python3"  # Debian's python3 (scripts/setup.sh): the venv is made from it, as a user would


@pytest.fixture
def workspace():
    d = tempfile.mkdtemp(prefix="nw-quiet-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _wheel(dest: str) -> str:
    """A pure-Python wheel of one module, written as pip would find it on an index (PEP 427)."""
    files = {
        "tinypkg/__init__.py": b"VALUE = 1\n",
        "tinypkg-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n",
        "tinypkg-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: nodewarden-tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }

    def digest(data: bytes) -> str:
        return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

    record = "".join(f"{n},{digest(d)},{len(d)}\n" for n, d in files.items()) + "tinypkg-0.1.dist-info/RECORD,,\n"
    path = os.path.join(dest, "tinypkg-0.1-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("tinypkg-0.1.dist-info/RECORD", record)
    return path


def _sh(cmd: list[str] | str, cwd: str, timeout: float = 120) -> str:
    p = subprocess.run(cmd, cwd=cwd, shell=isinstance(cmd, str), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{cmd} failed (rc {p.returncode}): {p.stderr[-800:]}"
    return p.stdout


GIT = ["git", "-c", "user.name=NodeWarden Tests", "-c", "user.email=tests@nodewarden.invalid",
       "-c", "init.defaultBranch=main"]


def _round(ws: str, n: int, containerd, image, cids: list[str]) -> None:
    """One round of ordinary work in ws."""
    _sh(["dpkg", "-l"], ws)
    _sh(["dpkg", "-S", "/bin/ls"], ws)
    _sh(["apt-cache", "policy", "bash"], ws)

    src = os.path.join(ws, "src")
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "hello.c"), "wb") as f:
        f.write(HELLO_C)
    _sh(["gcc", "-O2", "-Wall", "-o", "hello", "hello.c"], src)
    assert _sh(["./hello"], src) == "hello\n"

    venv = os.path.join(ws, "venv")
    _sh([f"{venv}/bin/pip", "install", "-q", "--no-index", "--force-reinstall", _wheel(ws)], ws)
    assert _sh([f"{venv}/bin/python", "-c", "import tinypkg; print(tinypkg.VALUE)"], ws) == "1\n"

    repo = os.path.join(ws, "repo")
    if not os.path.isdir(repo):
        _sh([*GIT, "init", "-q", repo], ws)
    with open(os.path.join(repo, "README"), "a") as f:
        f.write(f"round {n}\n")
    _sh([*GIT, "add", "README"], repo)
    _sh([*GIT, "commit", "-q", "-m", f"round {n}"], repo)
    _sh([*GIT, "clone", "-q", repo, f"clone-{n}"], ws)
    _sh([*GIT, "-C", f"clone-{n}", "log", "--oneline"], ws)

    cid = f"nw-quiet-{uuid.uuid4().hex[:8]}"
    cids.append(cid)
    containerd.run(image, "/bin/sleep", "60", cid=cid)
    assert containerd.exec(cid, "/bin/cat", "/etc/hosts", check=False).returncode == 0
    containerd.remove(cid)

    _sh("ls -la . src > /dev/null; cat src/hello.c | grep -c main > /dev/null; "
        "sed -e s/hello/bye/ src/hello.c > src/bye.c; tar czf work.tgz src repo/README; tar tzf work.tgz > /dev/null; "
        "find . -name '*.c' -newer work.tgz > /dev/null; wc -l src/*.c > /dev/null; rm -f work.tgz src/bye.c", ws)


def _ours(agent, roots: set[int], cids: set[str]) -> tuple[list[dict], list[dict]]:
    """The alerts from our process tree or our containers, and the others."""
    tree = set(roots)
    records = agent.find(lambda r: True)
    for r in records:  # in the agent's order: a fork record comes before anything its child does
        if r["event.name"] == "process.fork" and r["process.pid"] in tree:
            tree.add(r["process.child.pid"])
    ours, others = [], []
    for r in records:
        if r["event.name"] == "alert":
            (ours if r["process.pid"] in tree or r.get("container.id") in cids else others).append(r)
    return ours, others


def test_ordinary_work_raises_no_alert(containerd, busybox_image, workspace):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for tool in ("gcc", "git", "dpkg", "apt-cache", SYSTEM_PY):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed (scripts/setup.sh installs it)")
    agent = AgentProcess("--containerd-socket", str(containerd.socket))
    cids: list[str] = []
    try:
        start = time.monotonic()
        _sh([SYSTEM_PY, "-m", "venv", os.path.join(workspace, "venv")], workspace)
        n = 0
        while time.monotonic() - start < ACTIVITY_S:
            _round(workspace, n, containerd, busybox_image, cids)
            n += 1
        tag = f"quiet-done-{uuid.uuid4().hex[:8]}"
        subprocess.run(["/bin/true", tag], check=True)
        agent.wait_for(lambda r: r["event.name"] == "process.exec" and r.get("process.args") == ["/bin/true", tag],
                       timeout=30)
        time.sleep(1.0)  # the other sensors' ring buffers drain after the process one's
        ours, others = _ours(agent, {os.getpid(), containerd.proc.pid}, set(cids))
    finally:
        agent.stop()

    def lines(alerts):
        return "\n".join(f"  {a['rule.id']} pid {a['process.pid']}: {a.get('alert.output')}" for a in alerts)

    assert n >= 3, f"only {n} rounds of work in {ACTIVITY_S}s"
    assert not ours, f"{len(ours)} alerts from ordinary work ({n} rounds):\n{lines(ours)}\n" + (
        f"other alerts on this machine meanwhile (not counted):\n{lines(others)}" if others else "")
