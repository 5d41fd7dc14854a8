"""A private NATS JetStream cluster for tests: Debian's nats-server, three nodes on loopback.

Each node gets its own config file and JetStream store dir under a temp dir, a free client port,
cluster (route) port and monitoring port. `kill(i)` is SIGKILL, as a node dying would; `start(i)`
brings it back on the same ports and store (it catches up from the others). `stop()` ends them all.
Nothing here reads or writes outside the temp dir, and no node listens beyond 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def missing_requirements() -> str | None:
    """Why a NATS cluster cannot run here, or None."""
    if not os.path.exists(NATS_SERVER):
        return "nats-server not installed (scripts/setup.sh test installs Debian's nats-server)"
    try:
        import nats  # noqa: F401
    except ImportError:
        return "nats-py not installed (pyproject's test extras)"
    return None


def _free_ports(n: int) -> list[int]:
    # Bound together, so the n are distinct; a race with another process is possible and shows up as
    # a node that does not start (the test then fails with its log).
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class NatsCluster:
    def __init__(self, root: Path, nodes: int = 3, name: str = "nw-test"):
        self.root = Path(root)
        self.name = name
        self.n = nodes
        ports = _free_ports(3 * nodes)
        self.client_ports = ports[:nodes]
        self.route_ports = ports[nodes:2 * nodes]
        self.http_ports = ports[2 * nodes:]
        self.procs: list[subprocess.Popen | None] = [None] * nodes
        self._logs: list = [None] * nodes

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{p}" for p in self.client_ports]

    @property
    def url(self) -> str:
        """All nodes, comma-separated: what `--nats` takes."""
        return ",".join(self.urls)

    def _config(self, i: int) -> Path:
        d = self.root / f"n{i}"
        (d / "js").mkdir(parents=True, exist_ok=True)
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for j, p in enumerate(self.route_ports) if j != i)
        text = f"""server_name: n{i}
listen: 127.0.0.1:{self.client_ports[i]}
http: 127.0.0.1:{self.http_ports[i]}
jetstream {{
  store_dir: "{d / 'js'}"
  max_memory_store: 64MB
  max_file_store: 1GB
}}
"""
        if self.n > 1:
            text += f"""cluster {{
  name: {self.name}
  listen: 127.0.0.1:{self.route_ports[i]}
  routes: [{routes}]
}}
"""
        path = d / "nats.conf"
        path.write_text(text)
        return path

    def start(self, i: int | None = None, timeout: float = 20.0) -> None:
        """Start node i (all when None) and wait until each is healthy (JetStream included)."""
        which = range(self.n) if i is None else [i]
        for j in which:
            if self.procs[j] is not None and self.procs[j].poll() is None:
                continue
            conf = self._config(j)
            self._logs[j] = open(self.root / f"n{j}" / "nats.log", "ab")
            self.procs[j] = subprocess.Popen([NATS_SERVER, "-c", str(conf)], stdout=self._logs[j],
                                             stderr=subprocess.STDOUT, start_new_session=True)
        for j in which:
            self._wait_healthy(j, timeout)
        if i is None:
            self.wait_meta_leader(timeout)

    def _wait_healthy(self, i: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.http_ports[i]}/healthz"
        while time.monotonic() < deadline:
            if self.procs[i].poll() is not None:
                raise RuntimeError(f"nats node {i} exited: {self.log(i)[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"nats node {i} not healthy after {timeout}s: {self.log(i)[-2000:]}")

    def wait_meta_leader(self, timeout: float = 20.0) -> None:
        """Until JetStream answers API calls (the cluster elected its meta leader)."""
        import nats

        async def probe():
            nc = await nats.connect(self.urls, connect_timeout=1, max_reconnect_attempts=0)
            try:
                await nc.jetstream(timeout=1).account_info()
            finally:
                await nc.close()

        deadline = time.monotonic() + timeout
        err = None
        while time.monotonic() < deadline:
            try:
                asyncio.run(probe())
                return
            except Exception as e:  # not yet: no leader, or a node still joining
                err = e
                time.sleep(0.2)
        raise RuntimeError(f"JetStream has no meta leader after {timeout}s: {err!r}")

    def kill(self, i: int) -> None:
        p = self.procs[i]
        if p is not None and p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)

    def stop(self) -> None:
        for i, p in enumerate(self.procs):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    self.kill(i)
            if self._logs[i] is not None:
                self._logs[i].close()
                self._logs[i] = None

    def log(self, i: int) -> str:
        path = self.root / f"n{i}" / "nats.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> NatsCluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
