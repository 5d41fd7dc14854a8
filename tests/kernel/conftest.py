"""Kernel tests: load the real probes (root, bcc, BTF) and make real syscalls."""

import os
import subprocess
import sys
import threading
import time

import orjson
import pytest


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root to load BPF programs"
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return "kernel has no BTF"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "bcc Python module missing (python3-bpfcc)"
    return None


def pytest_collection_modifyitems(config, items):
    why = _why_not()
    for item in items:
        if "tests/kernel/" in str(item.fspath):
            item.add_marker(pytest.mark.kernel)
            if why:
                item.add_marker(pytest.mark.skip(reason=why))


def run_targeted(probes, code: str, cwd=None) -> tuple[int, list[str], list]:
    """Run `code` in a child that the probes (a (ProbeSet, reader) pair) target from its first syscall
    on: (pid, its output lines, its decoded events in order)."""
    import textwrap

    from agent.sensors.common import BootClock

    ps, reader = probes
    reader.read(1 << 20)  # whatever an earlier child left
    p = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read(1)\n" + textwrap.dedent(code)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=cwd)
    ps.set_target_tgid(p.pid)
    out, _ = p.communicate(b"x", timeout=60)
    assert p.returncode == 0
    ps.set_target_tgid(1 << 31)
    clock, events = BootClock(), []
    time.sleep(0.05)
    while batch := reader.read(1 << 20):
        events += [ps.decoders[raw[0]](raw, clock) for raw in batch]
    return p.pid, out.decode().split(), [e for e in events if e.pid == p.pid]


class AgentProcess:
    """`nodewarden run --json` in a subprocess; its lines collected as dicts."""

    def __init__(self, *extra: str):
        self.records: list[dict] = []
        self.stderr = b""
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--json", "--show-fork", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        self.wait_for(lambda r: r["event.name"] == "agent.ready", timeout=60)

    def _read(self):
        for line in self.proc.stdout:
            rec = orjson.loads(line)
            with self._cond:
                self.records.append(rec)
                self._cond.notify_all()

    def _read_err(self):
        self.stderr = self.proc.stderr.read()

    def find(self, pred) -> list[dict]:
        with self._cond:
            return [r for r in self.records if pred(r)]

    def wait_for(self, pred, timeout=10.0, count=1) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [r for r in self.records if pred(r)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(
                        f"timed out waiting for an event; agent rc={self.proc.poll()} stderr={self.stderr[-2000:]!r}"
                    )
                self._cond.wait(min(left, 0.2))

    def status(self, state_dir: str | None = None, timeout: float = 10.0) -> dict:
        """This agent's status.json (its state dir: the default unless given), once it has written it."""
        from agent.config import Config

        path = os.path.join(state_dir or Config().agent.state_dir, "status.json")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(path, "rb") as f:
                    rep = orjson.loads(f.read())
                if rep.get("pid") == self.proc.pid:
                    return rep
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"no status.json of pid {self.proc.pid} at {path}")

    def stop(self, sig=15) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=20)


@pytest.fixture(scope="module")
def agent():
    a = AgentProcess()
    yield a
    if a.proc.poll() is None:
        a.stop()
