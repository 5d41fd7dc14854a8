"""A private PostgreSQL for tests: Debian's server binaries, a cluster made by initdb in a temp dir,
run by pg_ctl on a free loopback port (and a unix socket in its own dir), torn down after.

PostgreSQL refuses to run as root, and tests run as root: the cluster belongs to the `postgres` user
Debian's package creates (or `nobody` where it is missing), in a dir under /tmp of its own (pytest's
tmp dirs are 0700 root, which that user could not enter). Trust auth on loopback only: nothing else
can reach it. By default fsync and full_page_writes are off: tests kill collectors and the server,
never the machine, and a commit still reaches the kernel before it returns (synchronous_commit stays
on: with it off, a killed server loses commits it already acknowledged); a bench passes durable=True
to measure what a deployment pays.

Fixtures (import them into a test module: `from tests.harness.pg import postgres, pg_url  # noqa: F401`):
- `postgres`: one PrivatePostgres for the test session;
- `pg_url`: a fresh, empty database on it for each test, as a postgresql:// URL.
Both skip the test, with the reason, when the Debian binaries are missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

PG_BIN = Path(os.environ.get("NODEWARDEN_PG_BIN", "/usr/lib/postgresql/15/bin"))
_SUPERUSER = "postgres"
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"  # util-linux


def missing_requirements() -> str:
    """Why a private PostgreSQL cannot run here ('' when it can)."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).exists():
            return f"{PG_BIN / tool} is missing (Debian package postgresql-15; scripts/setup.sh test)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "the psycopg package is missing (pip install 'psycopg[binary]')"
    if os.geteuid() == 0 and _run_user() is None:
        return "running as root and there is neither a `postgres` nor a `nobody` user to run the server as"
    if os.geteuid() == 0 and not os.path.exists(SETPRIV):
        return f"running as root and {SETPRIV} (util-linux) is missing to run the server as another user"
    return ""


def _run_user() -> pwd.struct_passwd | None:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivatePostgres:
    """One PostgreSQL cluster of our own. `start()` (initdb on first start), `url(db)`, `create_database()`,
    `stop()`, `kill()` (SIGKILL of the postmaster: a crash), `destroy()` (stop and remove everything).
    `root`: a dir the server's user can enter (not under pytest's tmp_path); by default one of its own."""

    def __init__(self, root: Path | str | None = None, durable: bool = False, settings: dict | None = None):
        self._own_root = root is None
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="nw-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "run"
        self.log = self.root / "server.log"
        self.port = 0
        self.durable = durable
        self.settings = dict(settings or {})
        self._user = _run_user() if os.geteuid() == 0 else None

    # -- running it ---------------------------------------------------------------------------

    def _as_user(self) -> list[str]:
        # setpriv, not subprocess's user=/group=: those make Python fork() instead of vfork(), and a
        # fork of a test process with gRPC's threads running can crash in the child before it execs.
        if self._user is None:
            return []
        return [SETPRIV, f"--reuid={self._user.pw_uid}", f"--regid={self._user.pw_gid}", "--clear-groups", "--"]

    def _run(self, *cmd: str, timeout: float = 60) -> str:
        p = subprocess.run([*self._as_user(), *cmd], capture_output=True, text=True, timeout=timeout, cwd=self.root,
                           env={**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"})
        if p.returncode != 0:
            tail = (p.stderr or p.stdout).strip().splitlines()[-5:]
            raise RuntimeError(f"{Path(cmd[0]).name} failed ({p.returncode}): {' | '.join(tail)}")
        return p.stdout

    def _chown(self, *paths: Path) -> None:
        if self._user is not None:
            for path in paths:
                os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def _initdb(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        os.chmod(self.root, 0o755)
        self._chown(self.root, self.sockets)
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", _SUPERUSER, "--auth=trust",
                  "--encoding=UTF8", "--no-instructions", timeout=120)

    def _options(self) -> list[str]:
        opts = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.sockets),
            "max_connections": "200",
            "shared_buffers": "256MB",
            "logging_collector": "off",
        }
        if not self.durable:
            opts.update(fsync="off", full_page_writes="off")
        opts.update({k: str(v) for k, v in self.settings.items()})
        return [f"-c {k}={v}" for k, v in opts.items()]

    def start(self, timeout: float = 60) -> PrivatePostgres:
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        last = None
        for _ in range(5):  # a free port can be taken between the probe and the bind: try another
            self.port = self.port or _free_port()
            try:
                self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                          "-t", str(int(timeout)), "-o", " ".join(self._options()), "start", timeout=timeout + 10)
                return self
            except RuntimeError as e:
                last = e
                if "already in use" not in self._log_tail():
                    break
                self.port = 0
        raise RuntimeError(f"{last}; server log: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-5:])
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.pid() is not None

    def pid(self) -> int | None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError, IndexError):
            return None

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", timeout=60)

    def kill(self) -> None:
        """SIGKILL the postmaster: its backends exit when they notice (PostgreSQL's crash path)."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.pid() is not None:
                time.sleep(0.05)

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except (RuntimeError, subprocess.TimeoutExpired):
            self.kill()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- using it -----------------------------------------------------------------------------

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{_SUPERUSER}@127.0.0.1:{self.port}/{db}"

    def connect(self, db: str = "postgres"):
        import psycopg

        return psycopg.connect(self.url(db), autocommit=True)

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; its URL."""
        name = name or f"nw_{uuid.uuid4().hex[:12]}"
        with self.connect() as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with self.connect() as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- pytest fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def postgres():
    why = missing_requirements()
    if why:
        pytest.skip(f"real PostgreSQL: {why}")
    pg = PrivatePostgres().start()
    try:
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def pg_url(postgres):
    url = postgres.create_database()
    try:
        yield url
    finally:
        try:
            postgres.drop_database(url.rsplit("/", 1)[1])
        except Exception:  # the server was killed by the test: the session fixture removes it all
            pass
