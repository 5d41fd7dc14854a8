"""The short-lived child that compiles, loads and attaches the probes with bcc, then hands over the fds.

Why a child: bcc compiles with LLVM inside the calling process, and libbcc and libLLVM stay mapped for
good (importing bcc adds 61 MB, one compile makes a process 150 MB; issue 17). Here they live only as
long as the load. The agent (agent/sensors/loader.py) spawns `python -m agent.sensors.childload FD`,
with FD one end of an AF_UNIX SOCK_SEQPACKET socketpair, and writes one JSON request on stdin:

  {"mode": "probes", "families": [...], "probes_dir": ..., "ringbuf_pages": N, "cache_dir": ...,
   "agent_tgid": PID}                      -> the program of those families, loaded and attached
  {"mode": "points", "cache_dir": ..., "programs": {point: text}}
                                           -> which enforcement-point test programs load here

The answer is one JSON line on stdout ({"error": "..."} when anything failed) and, for "probes", every
map, program and attachment fd over the socket with SCM_RIGHTS, in the order the manifest lists them.
Then the child leaves with os._exit: bcc's own cleanup at exit would PERF_EVENT_IOC_DISABLE the perf
events the agent now shares, and detach every probe. What libbcc and clang print goes to stderr, which
the agent reads and logs through its own logger.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys

log = logging.getLogger("nodewarden")

# SCM_MAX_FD is 253 per message; the full program has ~250 fds (a map, program and perf event each).
FDS_PER_MESSAGE = 200
# One compile of every family takes 5-15 s of one core; a busy 2-core node may take several times that.
TIMEOUT_S = 300.0
NOBODY = 1 << 31  # a target tgid no process has
STDERR_LINES = 40  # of a failed load's stderr (the verifier's log can be thousands), logged as warnings


class ChildError(Exception):
    """One line for the agent's LoadError."""


def run(request: dict, timeout: float = TIMEOUT_S) -> tuple[dict, list[int]]:
    """Agent side: spawn the child with `request`, wait for it, and return (its reply, the fds it sent,
    close-on-exec, in the reply's order). ChildError (one line) when it failed, timed out or was killed;
    then no fd is left open. Spawned, not forked: the agent has threads by then."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    fds: list[int] = []
    proc = None
    try:
        try:
            proc = subprocess.Popen([sys.executable, "-m", "agent.sensors.childload", str(child.fileno())],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    pass_fds=(child.fileno(),), env=env, cwd="/")
        except OSError as e:
            raise ChildError(f"cannot start the probe loader ({sys.executable}): {e.strerror}") from None
        finally:
            child.close()
        try:
            out, err = proc.communicate(json.dumps(request).encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            _log_stderr(err, failed=True)
            raise ChildError(f"the probe loader took more than {timeout:g} s and was killed") from None
        fds = _receive(parent)
        lines = out.decode(errors="replace").strip().splitlines()
        try:
            reply = json.loads(lines[-1]) if lines else None
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            _log_stderr(err, failed=True)
            how = f"was killed by signal {-proc.returncode}" if proc.returncode < 0 else \
                f"exited with status {proc.returncode}"
            raise ChildError(f"the probe loader {how} without an answer")
        _log_stderr(err, failed="error" in reply)
        if "error" in reply:
            raise ChildError(str(reply["error"]))
        if len(fds) != reply.get("nfds", 0):
            raise ChildError(f"the probe loader sent {len(fds)} fds, its manifest lists {reply.get('nfds')}")
        return reply, fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        if proc is not None and proc.poll() is None:  # interrupted (a signal, SystemExit): no child left
            proc.kill()
            proc.wait()
        raise
    finally:
        parent.close()


def _receive(sock: socket.socket) -> list[int]:
    """Every fd queued on the socket (the child has exited: nothing more comes)."""
    sock.setblocking(False)
    fds: list[int] = []
    while True:
        try:
            _, got, flags, _ = socket.recv_fds(sock, 16, FDS_PER_MESSAGE + 1, socket.MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return fds
        fds += got
        if flags & socket.MSG_CTRUNC:  # cannot happen with our chunk size: a failed load
            for fd in fds:
                os.close(fd)
            raise ChildError("the probe loader's fds arrived truncated (MSG_CTRUNC)")
        if not got:
            return fds


def _log_stderr(err: bytes, failed: bool) -> None:
    """libbcc's and clang's plain lines, through the agent's logger (so a JSON log stays JSON)."""
    lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
    if failed:
        for ln in lines[-STDERR_LINES:]:
            log.warning("probe loader: %s", ln)
    else:
        for ln in lines:
            log.debug("probe loader: %s", ln)


def _program(families: list[str], probes_dir: str):
    from agent.sensors import REGISTRY

    sensors = [REGISTRY[f] for f in families]
    # common.h and the family files are pasted in, not #included: bcc rewrites map calls
    # (map.lookup(), ringbuf_reserve()) and makes TRACEPOINT_PROBE argument structs only in
    # the main file. #line keeps the compiler's messages pointing at the real file.
    parts = []
    for source in ["common.h"] + [s.source for s in sensors]:
        path = os.path.join(probes_dir, source)
        try:
            with open(path) as f:
                parts.append(f'#line 1 "{path}"\n{f.read()}\n')
        except OSError as e:
            raise ChildError(f"probe source {path}: {e.strerror}") from None
    return sensors, "".join(parts)


def _cflags(sensors, req: dict, tracefs: str, missing: list[str]) -> list[str]:
    from agent.kernel import headers
    from agent.kernel.btf import BTF
    from agent.kernel.offsets import cflags as offset_cflags
    from agent.kernel.offsets import kernel_offsets, optional_offsets, task_storage_available

    try:
        btf = BTF.load()
        offsets = kernel_offsets(btf) | optional_offsets(btf)
        task_storage = task_storage_available(btf)
    except Exception as e:
        raise ChildError(f"kernel BTF: {e}") from None
    flags = [f"-I{req['probes_dir']}", f"-DNW_RINGBUF_PAGES={int(req['ringbuf_pages'])}"]
    # The AGENT's pid, not this child's: system.bpf.c skips its loads before ignore_tgid has it; this
    # child's own are skipped through ignore_tgid (filled before the first attach, see _load).
    flags.append(f"-DNW_AGENT_TGID={int(req['agent_tgid'])}")
    flags += offset_cflags(offsets)
    if task_storage:
        flags.append("-DNW_HAVE_TASK_STORAGE")
    for s in sensors:
        for cat, name in s.optional_tracepoints:
            if headers.tracepoint_exists(tracefs, cat, f"sys_enter_{name}") and headers.tracepoint_exists(
                tracefs, cat, f"sys_exit_{name}"
            ):
                flags.append(f"-DNW_HAVE_{name}")
            else:
                missing.append(f"{cat}:{name}")
    return flags


def _environment(cache_dir: str) -> str:
    """tracefs mounted and BCC_KERNEL_SOURCE set; the tracefs path."""
    from agent.kernel import headers

    try:
        tracefs = headers.ensure_tracefs()
        src = headers.kernel_source(cache_dir)
    except headers.HeadersError as e:
        raise ChildError(str(e)) from None
    if src:
        os.environ["BCC_KERNEL_SOURCE"] = src
    return tracefs


def _bcc():
    try:
        import bcc
    except ImportError:
        raise ChildError("the bcc Python module is missing (apt-get install python3-bpfcc)") from None
    return bcc


def _fd_kind(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def _load(req: dict) -> tuple[dict, list[int]]:
    import ctypes

    from agent.sensors.common import CFG_TARGET_TGID

    missing: list[str] = []
    tracefs = _environment(req["cache_dir"])
    sensors, text = _program(req["families"], req["probes_dir"])
    flags = _cflags(sensors, req, tracefs, missing)
    bcc = _bcc()
    from agent.kernel import headers

    class Deferred(bcc.BPF):
        """bcc attaches every TRACEPOINT_PROBE inside its constructor; deferred here so that this child's
        pid is in ignore_tgid before the first probe runs (its own opens and loads are not events)."""

        def _trace_autoload(self):
            pass

    try:
        b = Deferred(text=text.encode(), cflags=flags)
    except Exception as e:  # bcc raises bare Exception with the compiler's or verifier's text
        raise ChildError(f"loading probes failed: {str(e).strip().splitlines()[-1:]}") from None
    ignore = b[b"ignore_tgid"]
    for tgid in (os.getpid(), int(req["agent_tgid"])):
        ignore[ctypes.c_uint32(tgid)] = ctypes.c_uint8(1)
    # Nothing is sent until the agent has set its filters (ignored prefixes, watch lists) and then the
    # real target (ProbeSet.start, last): else every process's opens under /proc and /sys would fill the
    # ring buffer meanwhile. No tgid is this large (pid_max <= 2^22).
    b[b"nw_config"][ctypes.c_int(CFG_TARGET_TGID)] = ctypes.c_uint64(NOBODY)
    try:
        bcc.BPF._trace_autoload(b)
    except Exception as e:
        raise ChildError(f"attaching probes failed: {str(e).strip()[-300:]}") from None
    for s in sensors:
        for cat, event, fn in s.attach:
            if not headers.tracepoint_exists(tracefs, cat, event):
                missing.append(f"{cat}:{event}")
                continue
            try:
                b.attach_tracepoint(tp=f"{cat}:{event}".encode(), fn_name=fn.encode())
            except Exception as e:  # bcc: bare Exception with the verifier's or perf's text
                raise ChildError(f"attaching {fn} to {cat}:{event} failed: {str(e).strip()[-300:]}") from None
    return _manifest(b, bcc, missing)


def _manifest(b, bcc, missing: list[str]) -> tuple[dict, list[int]]:
    """What the agent needs to use the maps and to detach: names, layouts and the fds in that order."""
    import ctypes

    lib = bcc.libbcc.lib
    # Not declared by bcc's Python binding (it looks tables up by name); the C API has them.
    lib.bpf_num_tables.restype, lib.bpf_num_tables.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
    lib.bpf_table_name.restype, lib.bpf_table_name.argtypes = ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_size_t]
    for f in ("bpf_table_key_size_id", "bpf_table_leaf_size_id"):
        getattr(lib, f).restype, getattr(lib, f).argtypes = ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_size_t]
    maps, fds = [], []
    for i in range(lib.bpf_num_tables(b.module)):
        name = lib.bpf_table_name(b.module, i)
        mid = lib.bpf_table_id(b.module, name)
        fd = lib.bpf_table_fd(b.module, name)
        if fd < 0:
            continue
        maps.append({"name": name.decode(), "type": lib.bpf_table_type_id(b.module, mid),
                     "key_size": lib.bpf_table_key_size_id(b.module, mid),
                     "value_size": lib.bpf_table_leaf_size_id(b.module, mid),
                     "max_entries": lib.bpf_table_max_entries_id(b.module, mid),
                     "flags": lib.bpf_table_flags_id(b.module, mid),
                     "key": json.loads(lib.bpf_table_key_desc(b.module, name) or b'"int"'),
                     "leaf": json.loads(lib.bpf_table_leaf_desc(b.module, name) or b'"int"')})
        fds.append(fd)
    progs = []
    for name, fn in b.funcs.items():
        progs.append(name.decode())
        fds.append(fn.fd)
    # The attachments from this process's fd table, not bcc's dicts: bcc keys tracepoint_fds by tracepoint,
    # so a second program on one tracepoint (file.py's dup2/dup3) leaves no entry there.
    known = set(fds)
    links = []
    for fd in sorted(int(n) for n in os.listdir("/proc/self/fd")):
        kind = _fd_kind(fd)
        if fd in known or kind not in ("anon_inode:[perf_event]", "anon_inode:bpf_link", "anon_inode:bpf-link"):
            continue
        links.append("perf_event" if "perf" in kind else "bpf_link")
        fds.append(fd)
    return {"maps": maps, "progs": progs, "links": links, "nfds": len(fds), "missing": missing,
            "child_tgid": os.getpid()}, fds


def _points(req: dict) -> dict:
    programs = req["programs"]  # {point: program text}, from agent/enforce/points.py
    try:
        _environment(req["cache_dir"])
        bcc = _bcc()
    except ChildError as e:  # no bcc, no headers: every BPF point is out, for the same reason
        return {"points": {name: {"available": False, "detail": f"cannot compile BPF here: {e}"}
                           for name in programs}}
    out = {}
    for name, text in programs.items():
        try:
            b = bcc.BPF(text=text)
            b.cleanup()
            out[name] = {"available": True, "detail": "a test program loaded and attached"}
        except Exception as e:
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            if "super-user" in msg or "Permission" in msg or "EPERM" in msg:
                msg = "the kernel refused the program (EPERM)"
            out[name] = {"available": False, "detail": msg}
    return {"points": out}


def _send(sock: socket.socket, fds: list[int]) -> None:
    for i in range(0, len(fds), FDS_PER_MESSAGE):
        socket.send_fds(sock, [b"F"], fds[i:i + FDS_PER_MESSAGE])


def main() -> None:
    # The answer goes to the real stdout only; anything else printed (bcc's Python side prints some
    # warnings to stdout) is sent to stderr with libbcc's lines.
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sock = None
    try:
        if len(sys.argv) != 2:
            raise ChildError("usage: python -m agent.sensors.childload SOCKET_FD")
        sock = socket.socket(fileno=int(sys.argv[1]))
        req = json.loads(sys.stdin.read())
        if req.get("mode") == "points":
            reply, fds = _points(req), []
        elif req.get("mode") == "probes":
            reply, fds = _load(req)
        else:
            raise ChildError(f"unknown request mode {req.get('mode')!r}")
        _send(sock, fds)
        line = json.dumps(reply)
    except ChildError as e:
        line = json.dumps({"error": str(e)})
    except Exception as e:  # a bug here must still come back as one line, not a traceback the agent drops
        line = json.dumps({"error": f"probe loader: {type(e).__name__}: {e}"[:500]})
    answer.write(line + "\n")
    answer.flush()
    sys.stderr.flush()
    os._exit(0)  # no bcc cleanup: it would disable the perf events the agent now holds


if __name__ == "__main__":
    main()
