"""nodewarden-runc: runc's stand-in that holds `runc create` until the agent's gate answers (docs/ocigate.md).

containerd's runc.v2 shim runs `BinaryName` for every runc call, e.g.
    runc --root /run/containerd/runc/<ns> --log <bundle>/log.json --log-format json create \
         --bundle <bundle> --pid-file <bundle>/init.pid <id>
`create` (and `run`, which creates too) asks the agent over a unix socket; every other subcommand execs the
real runc at once. The container's first instruction comes only after `runc start`, so refusing `create`
means it never runs one.

This file is also the helper that the installed shell wrapper execs with `python3 -I -S`: it must import
only the standard library (no `agent` package, no site-packages) and keep to what Python 3.8 runs, because it
is copied onto the host and run by the host's interpreter. The shell wrapper (`render_shell`) picks the
subcommand itself, so `state`, `kill`, `delete`, ... never start Python at all.

On a block the verdict goes as an `error` record into runc's `--log` file: the shim reads the last error
record of that file into its create error ("OCI runtime create failed: <msg>"), which ctr, crictl and the
kubelet show. stderr is not that channel: with container stdio the shim points runc's stderr at the
container's stderr pipe. So a fail-open warning goes to the log file (as a warning) and to syslog, not
to stderr; a block also goes to stderr, where a terminal-mode create shows it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

DEFAULT_SOCKET = "/run/nodewarden/gate.sock"
DEFAULT_TIMEOUT = 2.0
DEFAULT_RUNC = "/usr/sbin/runc"
PROTOCOL_VERSION = 1
MAX_SPEC_BYTES = 4 << 20  # an OCI spec is ~10-50 KB; never read a hostile bundle's huge file whole
MAX_REPLY_BYTES = 64 << 10
_MAX_ANNOTATIONS = 128
_MAX_VALUE = 4096

# runc 1.1's global flags that take a value (urfave/cli also accepts -flag and --flag=value).
# Booleans (--debug, --systemd-cgroup, --help, --version) take none. Keep in sync with render_shell's case.
GLOBAL_VALUE_FLAGS = frozenset({"root", "log", "log-format", "criu", "rootless"})
# Flags of `create`/`run` that take a value; the rest (--no-pivot, --no-new-keyring, --detach, ...) do not.
CREATE_VALUE_FLAGS = frozenset({"bundle", "b", "console-socket", "pid-file", "preserve-fds"})
GATED = frozenset({"create", "run"})

# CRI annotations that name what the gate needs (containerd's pkg/cri/annotations).
ANN_IMAGE = "io.kubernetes.cri.image-name"
ANN_TYPE = "io.kubernetes.cri.container-type"
ANN_POD = "io.kubernetes.cri.sandbox-name"
ANN_POD_NS = "io.kubernetes.cri.sandbox-namespace"
ANN_NAME = "io.kubernetes.cri.container-name"


class Invocation:
    """What one runc command line asks for; `subcommand` is "" when there is none (runc --version)."""

    __slots__ = ("subcommand", "root", "log", "log_format", "bundle", "container_id", "flags")

    def __init__(self) -> None:
        self.subcommand = ""
        self.root = ""
        self.log = ""
        self.log_format = "text"
        self.bundle = ""
        self.container_id = ""
        self.flags: dict = {}

    def __repr__(self) -> str:
        return "Invocation(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"


def _split_flag(arg: str) -> tuple[str, str | None]:
    """'--log=x' -> ('log', 'x'); '-b' -> ('b', None)."""
    name = arg.lstrip("-")
    if "=" in name:
        name, value = name.split("=", 1)
        return name, value
    return name, None


def _take_flags(args: list[str], i: int, value_flags: frozenset, out: dict) -> int:
    """Consume flags from args[i:] into out; return the index of the first non-flag (or len(args))."""
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return i + 1
        if not arg.startswith("-") or arg == "-":
            return i
        name, value = _split_flag(arg)
        if value is None and name in value_flags:
            i += 1
            value = args[i] if i < len(args) else ""
        out[name] = True if value is None else value
        i += 1
    return i


def parse_argv(args: list[str], cwd: str | None = None) -> Invocation:
    """Parse runc's argv (without argv[0]); pure except for the cwd default of --bundle."""
    inv = Invocation()
    glob: dict = {}
    i = _take_flags(args, 0, GLOBAL_VALUE_FLAGS, glob)
    inv.root = str(glob.get("root", ""))
    inv.log = str(glob.get("log", ""))
    inv.log_format = str(glob.get("log-format", "text"))
    inv.flags = glob
    if i >= len(args):
        return inv
    inv.subcommand = args[i]
    if inv.subcommand not in GATED:
        return inv
    sub: dict = {}
    j = _take_flags(args, i + 1, CREATE_VALUE_FLAGS, sub)
    # urfave/cli v1 stops at the first positional; runc takes the id there.
    inv.container_id = args[j] if j < len(args) else ""
    bundle = sub.get("bundle", sub.get("b", ""))
    inv.bundle = str(bundle) if bundle and bundle is not True else (cwd if cwd is not None else os.getcwd())
    inv.flags = dict(glob, **{"create." + k: v for k, v in sub.items()})
    return inv


def namespace_of(inv: Invocation) -> str:
    """containerd's namespace: the runc.v2 shim puts bundles at .../<ns>/<id> and runc state at <root>/<ns>."""
    bundle = inv.bundle.rstrip("/")
    if inv.container_id and os.path.basename(bundle) == inv.container_id:
        return os.path.basename(os.path.dirname(bundle))
    return os.path.basename(inv.root.rstrip("/"))


def _clip(value, limit: int = _MAX_VALUE) -> str:
    return value[:limit] if isinstance(value, str) else ""


def read_spec(bundle: str) -> dict:
    """The bundle's config.json, or {} when it is missing, too big or not JSON (the gate still asks)."""
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
        if len(data) > MAX_SPEC_BYTES:
            return {}
        spec = json.loads(data)
        return spec if isinstance(spec, dict) else {}
    except (OSError, ValueError):
        return {}


def build_request(inv: Invocation, spec: dict, deadline_ms: int) -> dict:
    """The one-line JSON request: who, which bundle, and the parts of the spec a verdict needs."""
    ann = spec.get("annotations")
    ann = ann if isinstance(ann, dict) else {}
    annotations = {_clip(k, 256): _clip(v) for k, v in list(ann.items())[:_MAX_ANNOTATIONS]}
    linux = spec.get("linux") if isinstance(spec.get("linux"), dict) else {}
    proc = spec.get("process") if isinstance(spec.get("process"), dict) else {}
    root = spec.get("root") if isinstance(spec.get("root"), dict) else {}
    args = proc.get("args") if isinstance(proc.get("args"), list) else []
    return {
        "v": PROTOCOL_VERSION,
        "op": inv.subcommand,
        "namespace": namespace_of(inv),
        "id": inv.container_id,
        "bundle": inv.bundle,
        "image": annotations.get(ANN_IMAGE, ""),
        "container_type": annotations.get(ANN_TYPE, ""),
        "pod": annotations.get(ANN_POD, ""),
        "pod_namespace": annotations.get(ANN_POD_NS, ""),
        "name": annotations.get(ANN_NAME, ""),
        "annotations": annotations,
        "cgroups_path": _clip(linux.get("cgroupsPath")),
        "rootfs": _clip(root.get("path")),
        "args": [_clip(a) for a in args[:64]],
        "deadline_ms": int(deadline_ms),
    }


class Config:
    """The wrapper's settings, from the environment the shell wrapper sets (baked in at install time)."""

    __slots__ = ("runc", "socket", "timeout", "fail_closed")

    def __init__(self, runc: str, socket: str, timeout: float, fail_closed: bool):
        self.runc, self.socket, self.timeout, self.fail_closed = runc, socket, timeout, fail_closed

    @classmethod
    def from_env(cls, env=None) -> Config:
        env = os.environ if env is None else env
        try:
            timeout = float(env.get("NODEWARDEN_GATE_TIMEOUT", DEFAULT_TIMEOUT))
        except ValueError:
            timeout = DEFAULT_TIMEOUT
        # A bad value must not turn into "wait forever": clamp to (0, 30] seconds.
        timeout = min(max(timeout, 0.05), 30.0) if timeout == timeout else DEFAULT_TIMEOUT
        fail = env.get("NODEWARDEN_GATE_FAIL", "open").strip().lower()
        return cls(
            runc=env.get("NODEWARDEN_RUNC", "") or find_runc(),
            socket=env.get("NODEWARDEN_GATE_SOCKET", "") or DEFAULT_SOCKET,
            timeout=timeout,
            fail_closed=fail == "closed",
        )


def find_runc(path_env: str | None = None, me: str | None = None) -> str:
    """/usr/sbin/runc, else the first `runc` on PATH that is not this wrapper."""
    if os.access(DEFAULT_RUNC, os.X_OK):
        return DEFAULT_RUNC
    me_real = os.path.realpath(me or sys.argv[0])
    for d in (path_env if path_env is not None else os.environ.get("PATH", "")).split(os.pathsep):
        cand = os.path.join(d or ".", "runc")
        if os.access(cand, os.X_OK) and os.path.realpath(cand) != me_real:
            return cand
    return DEFAULT_RUNC


def ask(path: str, request: dict, timeout: float) -> tuple[dict | None, str]:
    """Send the request, read one reply line; (reply, "") or (None, why) within `timeout` seconds in all."""
    deadline = time.monotonic() + timeout
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps(request, separators=(",", ":")).encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None, f"no answer within {timeout:.2f}s"
            s.settimeout(left)
            chunk = s.recv(65536)
            if not chunk:
                return None, "the agent closed the connection without an answer"
            buf += chunk
            if len(buf) > MAX_REPLY_BYTES:
                return None, "answer too long"
        reply = json.loads(buf.split(b"\n", 1)[0])
        if not isinstance(reply, dict) or not isinstance(reply.get("allow"), bool):
            return None, "malformed answer"
        return reply, ""
    except (TimeoutError, socket.timeout):  # noqa: UP041 - distinct classes before 3.10; the host may run 3.8
        return None, f"no answer within {timeout:.2f}s"
    except (OSError, ValueError) as e:
        return None, f"agent unreachable at {path}: {getattr(e, 'strerror', None) or e}"
    finally:
        s.close()


def _rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e6):06d}Z"


def runc_log(inv: Invocation, level: str, msg: str) -> None:
    """Append a record to runc's --log file in its format; the shim reports the last `error` record."""
    if not inv.log:
        return
    if inv.log_format == "json":
        line = json.dumps({"level": level, "msg": msg, "time": _rfc3339()}) + "\n"
    else:
        line = f'time="{_rfc3339()}" level={level} msg={json.dumps(msg)}\n'
    try:
        fd = os.open(inv.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError:
        pass


def syslog(msg: str, severity: int = 4) -> None:
    """One datagram to /dev/log (facility daemon); silently nothing where there is no syslog."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.settimeout(0.1)
        s.sendto(f"<{3 * 8 + severity}>nodewarden-runc[{os.getpid()}]: {msg}".encode(), "/dev/log")
    except OSError:
        pass
    finally:
        s.close()


def exec_runc(cfg: Config, args: list[str]) -> None:
    try:
        os.execv(cfg.runc, [cfg.runc] + args)
    except OSError as e:
        sys.stderr.write(f"nodewarden-runc: cannot exec {cfg.runc}: {e}\n")
        sys.exit(127)


def block(inv: Invocation, msg: str) -> int:
    """Refuse: the message reaches the create error through runc's log file; runc never runs."""
    line = f"nodewarden: container {inv.container_id or '?'} blocked: {msg}"
    runc_log(inv, "error", line)
    syslog(line, severity=3)
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except OSError:
        pass
    return 1


def gate(cfg: Config, inv: Invocation, started: float) -> int | None:
    """None to go on with runc, else the exit status of a refusal."""
    spec = read_spec(inv.bundle)
    left = cfg.timeout - (time.monotonic() - started)
    reply, why = ask(cfg.socket, build_request(inv, spec, int(left * 1000)), max(left, 0.01))
    if reply is not None:
        if reply["allow"]:
            return None
        return block(inv, str(reply.get("message") or "denied by the NodeWarden gate")[:2000])
    if cfg.fail_closed:
        return block(inv, f"gate failed closed: {why}")
    warn = f"gate failed open for container {inv.container_id}: {why}; starting it unchecked"
    runc_log(inv, "warning", "nodewarden: " + warn)
    syslog(warn)
    return None


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = list(sys.argv[1:] if argv is None else argv)
    cfg = Config.from_env()
    inv = parse_argv(args)
    if inv.subcommand in GATED:
        refused = gate(cfg, inv, started)
        if refused is not None:
            return refused
    exec_runc(cfg, args)
    return 127  # not reached


# --- installing the wrapper ---------------------------------------------------------------------------

HELPER_NAME = "nodewarden-runc-gate.py"

_SHELL = """#!/bin/sh
# nodewarden-runc: set as runc's BinaryName; holds `runc create` until the NodeWarden gate answers.
# Generated by agent/enforce/runc_wrapper.py (render_shell); docs/ocigate.md. The settings below are the
# wrapper's configuration: the shim's environment is containerd's, so they are written here, not read
# from the environment.
NODEWARDEN_RUNC={runc}
NODEWARDEN_GATE_SOCKET={socket}
NODEWARDEN_GATE_TIMEOUT={timeout}
NODEWARDEN_GATE_FAIL={fail}
NODEWARDEN_PYTHON={python}
NODEWARDEN_GATE_HELPER={helper}

# Find the subcommand past runc's global flags without starting anything: every call but create/run
# (state, start, kill, delete, exec, ps, events, ...) goes straight to runc.
skip=
sub=
for a in "$@"; do
  if [ -n "$skip" ]; then skip=; continue; fi
  case $a in
    --root|--log|--log-format|--criu|--rootless|-root|-log|-log-format|-criu|-rootless) skip=1 ;;
    -*) ;;
    *) sub=$a; break ;;
  esac
done
case $sub in
  create|run) ;;
  *) exec "$NODEWARDEN_RUNC" "$@" ;;
esac
export NODEWARDEN_RUNC NODEWARDEN_GATE_SOCKET NODEWARDEN_GATE_TIMEOUT NODEWARDEN_GATE_FAIL
exec "$NODEWARDEN_PYTHON" -I -S "$NODEWARDEN_GATE_HELPER" "$@"
"""


def _sh_quote(value: str) -> str:
    return "'" + str(value).replace("'", "'\"'\"'") + "'"


def render_shell(
    runc: str = DEFAULT_RUNC,
    socket_path: str = DEFAULT_SOCKET,
    timeout: float = DEFAULT_TIMEOUT,
    fail: str = "open",
    python: str = "/usr/bin/python3",
    helper: str = "",
) -> str:
    """The shell wrapper with its settings baked in; `helper` defaults to HELPER_NAME beside the script."""
    if fail not in ("open", "closed"):
        raise ValueError(f"fail must be 'open' or 'closed', not {fail!r}")
    if not 0 < float(timeout) <= 30:
        raise ValueError("timeout must be in (0, 30] seconds")
    return _SHELL.format(
        runc=_sh_quote(runc),
        socket=_sh_quote(socket_path),
        timeout=_sh_quote(f"{float(timeout):g}"),
        fail=fail,
        python=_sh_quote(python),
        # ${0%/*}: the script's directory, without forking dirname. containerd runs BinaryName by absolute path.
        helper=_sh_quote(helper) if helper else '"${0%/*}/' + HELPER_NAME + '"',
    )


def install(directory: str, name: str = "nodewarden-runc", **settings) -> str:
    """Write `<directory>/<name>` (the shell wrapper) and the helper beside it; return the wrapper's path.

    Both are written to a temporary name and renamed, so a runc call racing the install sees the old or
    the new file, never half of one."""
    wrapper = os.path.join(directory, name)
    runc = settings.get("runc", DEFAULT_RUNC)
    if os.path.realpath(runc) == os.path.realpath(wrapper):
        raise ValueError(f"the real runc ({runc}) would be the wrapper itself: give --runc explicitly")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.abspath(__file__), "rb") as f:
        helper_text = f.read()
    files = [(os.path.join(directory, HELPER_NAME), helper_text, 0o644)]
    files.append((wrapper, render_shell(**settings).encode(), 0o755))
    for path, data, mode in files:
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    return wrapper


def install_main(argv: list[str] | None = None) -> int:
    """`nodewarden-runc-install DIR [--name N] [--socket P] [--timeout S] [--fail open|closed] [--runc P]
    [--python P]`: write the wrapper and its helper into DIR."""
    import argparse

    p = argparse.ArgumentParser(prog="nodewarden-runc-install", description=install_main.__doc__)
    p.add_argument("directory", help="where to write nodewarden-runc and its helper (e.g. /usr/local/bin)")
    p.add_argument("--name", default="nodewarden-runc", help="the wrapper's file name ('runc' for a PATH install)")
    p.add_argument("--socket", default=DEFAULT_SOCKET, help="the agent's gate socket")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for a verdict")
    p.add_argument("--fail", choices=("open", "closed"), default="open", help="when the agent does not answer")
    p.add_argument("--runc", default="", help="the real runc (default: /usr/sbin/runc or runc on PATH)")
    p.add_argument("--python", default="/usr/bin/python3", help="the host's python3 that runs the helper")
    a = p.parse_args(argv)
    path = install(a.directory, a.name, socket_path=a.socket, timeout=a.timeout, fail=a.fail,
                   runc=a.runc or find_runc(), python=a.python)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
