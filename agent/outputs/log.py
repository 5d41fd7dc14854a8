"""Event lines on a stream: JSON (one orjson object per line, for SREs' log pipelines) or text
(one readable line per event, for a person at a terminal)."""

from __future__ import annotations

import threading

import orjson

from agent.outputs.record import ENCODE_JSON


class JsonLog:
    def __init__(self, stream):
        self._out = stream
        self._lock = threading.Lock()

    def emit(self, records: list[dict]) -> None:
        # One write per batch, each record's line copied into it at once: orjson's bytes object holds a
        # 4 KB buffer whatever its length (orjson 3.13), so a batch's lines kept for a join held 16 MB per
        # 4,096 records, which glibc gave back and faulted in again every batch (~2 page faults a record:
        # bench/pipeline.py's python-kind line went 100k -> 86k events/s). orjson appends the newline.
        dumps, nl = orjson.dumps, orjson.OPT_APPEND_NEWLINE
        data = bytearray()
        for r in records:
            data += dumps(r, option=nl)
        with self._lock:
            self._out.write(data)
            self._out.flush()

    def emit_lines(self, records: list) -> None:
        """emit() for a batch whose kernel events came as their JSON lines already (bytes, made by the
        pipeline's compiled line maker: agent/pipeline.py _line_maker); the dicts among them as emit()."""
        dumps = orjson.dumps
        # a dict's line copied with its newline at once (the compiled lines are of their own size): no
        # orjson buffer is kept for the join (emit says why)
        data = b"".join([r if type(r) is bytes else dumps(r) + b"\n" for r in records])
        with self._lock:
            self._out.write(data)
            self._out.flush()


# The pipeline's compiled loop hands JsonLog.emit's records to emit_lines as their JSON lines (agent/pipeline.py
# _encodings); a subclass that overrides emit is not in this table, so it gets dicts.
JsonLog.ENCODED = {JsonLog.emit: (ENCODE_JSON, JsonLog.emit_lines)}


def _pick(rec: dict, *keys: str) -> str:
    return " ".join(f"{k.rsplit('.', 1)[-1]}={rec[k]}" for k in keys if k in rec and rec[k] != "")


def _where(rec: dict, image: bool = True) -> str:
    """The container (short id and image) and pod an event happened in, or ""."""
    parts = []
    if rec.get("container.id"):
        parts.append(str(rec["container.id"])[:12])
    if image and rec.get("container.image.name"):
        parts.append(str(rec["container.image.name"]))
    pod = "/".join(str(rec[k]) for k in ("k8s.namespace.name", "k8s.pod.name") if rec.get(k))
    if pod:
        parts.append(f"pod={pod}")
    return f" [{' '.join(parts)}]" if parts else ""


def _subject(rec: dict) -> str:
    """The process (and file or peer) a verdict-free alert or block is about."""
    parts = []
    if "process.pid" in rec:
        parts.append(f"pid={rec['process.pid']}")
    cmd = rec.get("process.command_line") or rec.get("process.executable.path")
    if cmd:
        parts.append(str(cmd))
    for key in ("file.path", "network.peer.address"):
        if rec.get(key):
            port = rec.get("network.peer.port")
            parts.append(f"{rec[key]}:{port}" if key.startswith("network.") and port is not None else str(rec[key]))
    return " ".join(parts)


def _alert(rec: dict) -> str:
    # severity, rule, what (its output line, else the triggering process), where
    what = rec.get("alert.output") or f"{rec.get('trigger.name', '')} {_subject(rec)}".strip()
    count = f" (x{rec['alert.count']})" if rec.get("alert.count", 1) != 1 else ""
    action = " action=kill" if rec.get("alert.action") == "kill" else ""
    return (f"{rec.get('event.severity', '').upper()} [{rec.get('rule.id', '')}] {rec.get('rule.name', '')}: "
            f"{what}{count}{action}{_where(rec)}")


def _verdict(rec: dict) -> str:
    n = rec.get("image.findings_count", 0)
    extra = " timed out" if rec.get("image.scan.timed_out") else ""
    if rec.get("image.scan.error"):
        extra += f" error={rec['image.scan.error']}"
    image = rec.get("container.image.name", "") or rec.get("container.image.digest", "")
    # the record lists at most MAX_FINDINGS of them (agent/outputs/record.py): the line says so
    left = f", {rec['image.findings_omitted']} not in the record" if rec.get("image.findings_omitted") else ""
    return (f"{str(rec.get('image.verdict', '')).upper()} {image}: {rec.get('image.reason', '')} "
            f"({n} finding{'' if n == 1 else 's'}{left}){extra}{_where(rec, image=False)}")


def _enforcement(rec: dict) -> str:
    outcome = f" -> {rec['enforcement.outcome']}" if rec.get("enforcement.outcome") else ""
    subject = _subject(rec)
    # an image's block (NRI, nodewarden-runc, post-start kill) says its verdict; a runtime rule's has none
    verdict = f" verdict={rec['image.verdict']}" if rec.get("image.verdict") else ""
    return (f"{rec.get('enforcement.action', '')} at {rec.get('enforcement.point', '')}{verdict}: "
            f"{rec.get('enforcement.reason', '')}{outcome}{' ' + subject if subject else ''}{_where(rec)}")


def _device(rec: dict) -> str:
    """Which device: nvidia0 GPU-8a3c... (its model on device.info)."""
    minor = rec.get("device.minor")
    name = f"{'xpu' if rec.get('device.vendor') == 'kunlun' else 'nvidia'}{minor}" if minor is not None else \
        f"{rec.get('device.vendor', '')}#{rec.get('device.index', '')}"
    mig = f" mig={rec['device.mig.uuid']}" if rec.get("device.mig.uuid") else ""
    return f"{name} {rec.get('device.uuid', '')}{mig}"


def _mib(v) -> str:
    return f"{v / 1048576:.0f}MiB" if isinstance(v, int | float) else "?"


def _device_info(rec: dict) -> str:
    extra = " ".join(f"{k}={rec[f'device.{k}']}" for k in ("driver_version", "cuda_version", "ecc_mode", "mig_mode")
                     if rec.get(f"device.{k}"))
    mem = f" mem={_mib(rec['device.memory.total'])}" if "device.memory.total" in rec else ""
    power = f" power_limit={rec['device.power_limit_w']:g}W" if "device.power_limit_w" in rec else ""
    migs = len(rec.get("device.mig_devices") or ())
    return (f"{_device(rec)} {rec.get('device.model', '')} ({rec.get('device.pci_bus_id', '')}){mem}{power} "
            f"{extra}{f' mig_devices={migs}' if migs else ''}").rstrip()


# device.sample: the readings a person looks at first (the record has them all)
_SAMPLE_SHOWN = (("gpu_util", "util", "%"), ("mem_util", "mem_util", "%"), ("temperature", "temp", "C"),
                 ("power_w", "power", "W"), ("sm_clock", "sm", "MHz"), ("mem_clock", "memclk", "MHz"))


def _device_sample(rec: dict) -> str:
    parts = [_device(rec)]
    for key, label, unit in _SAMPLE_SHOWN:
        v = rec.get(f"device.{key}")
        if v is not None:
            parts.append(f"{label}={v:g}{unit}" if isinstance(v, float) else f"{label}={v}{unit}")
    if "device.mem_used" in rec:
        total = rec.get("device.mem_total")
        parts.append(f"mem={_mib(rec['device.mem_used'])}" + (f"/{_mib(total)}" if total is not None else ""))
    if rec.get("device.throttle"):
        parts.append("throttle=" + ",".join(rec["device.throttle"]))
    procs = rec.get("device.processes") or []
    if procs:
        parts.append("procs=" + ",".join(
            f"{p.get('pid')}" + (f"@{str(p['container.id'])[:12]}" if p.get("container.id") else "") for p in procs))
    if rec.get("device.errors"):
        parts.append(f"errors={len(rec['device.errors'])}")
    return " ".join(parts)


def _device_health(rec: dict) -> str:
    kind = rec.get("device.health.kind", "")
    xid = f" {rec['device.xid']} {rec.get('device.xid_mnemonic', '')}".rstrip() if "device.xid" in rec else ""
    action = f" action={rec['device.health.action']}" if rec.get("device.health.action") else ""
    detail = f": {rec['device.health.detail']}" if rec.get("device.health.detail") else ""
    return f"{rec.get('event.severity', '').upper()} {_device(rec)} {kind}{xid}{action}{detail}"


def _device_process(rec: dict) -> str:
    mem = f" mem={_mib(rec['device.process.used_memory'])}" if "device.process.used_memory" in rec else ""
    return (f"{rec.get('device.process.change', '')} pid={rec.get('process.pid')} {rec.get('process.name', '')} "
            f"on {_device(rec)}{mem}{_where(rec)}")


def _profile_change(rec: dict) -> str:
    """shop/Deployment/web/app@sha256:...: learning -> protecting (locked by user); exec 12 edge 20 ..."""
    items = " ".join(f"{k.rsplit('.', 1)[1]} {v}" for k, v in rec.items() if k.startswith("profile.items."))
    return (f"{rec.get('profile.key', '?')}: {rec.get('profile.previous_mode', '?')} -> {rec.get('profile.mode', '?')}"
            f" ({rec.get('profile.reason', '')}){'; ' + items if items else ''}")


def _container_resources(rec: dict) -> str:
    """cpu, memory against its limit, pids: what a person looks at first (the record has every counter)."""
    parts = []
    if "container.cpu.percent" in rec:
        parts.append(f"cpu={rec['container.cpu.percent']:g}%")
    if "container.memory.working_set" in rec:
        limit = f"/{_mib(rec['container.memory.limit'])}" if "container.memory.limit" in rec else ""
        pct = f" ({rec['container.memory.percent']:g}%)" if "container.memory.percent" in rec else ""
        parts.append(f"mem={_mib(rec['container.memory.working_set'])}{limit}{pct}")
    if "container.pids.current" in rec:
        limit = f"/{rec['container.pids.limit']}" if "container.pids.limit" in rec else ""
        parts.append(f"pids={rec['container.pids.current']}{limit}")
    return (" ".join(parts) or "-") + _where(rec)


def _host_resources(rec: dict) -> str:
    cpu = f"cpu={rec['host.cpu.percent']:g}% " if "host.cpu.percent" in rec else ""
    mem = f"mem={_mib(rec.get('host.memory.used', 0))}/{_mib(rec.get('host.memory.total', 0))}"
    fs = "".join(f" {f['path']}={f['percent']:g}%" for f in rec.get("host.filesystems") or ())
    return f"{cpu}{mem} load={rec.get('host.load.1m', 0):.2f}{fs}"


def _lifecycle(rec: dict) -> str:
    """container.exited: code=137 signal=9 oom_killed pid=4242 [c0ffee... busybox pod=shop/web]; an exec says its id,
    path and command; an image record its name and digest."""
    name = rec.get("event.name", "")
    if name.startswith("image."):
        was = f" (was {rec['image.previous_digest']})" if rec.get("image.previous_digest") else ""
        ns = f" ns={rec['containerd.namespace']}" if rec.get("containerd.namespace") else ""
        return f"{rec.get('container.image.name', '')} {rec.get('container.image.digest', '')}{was}{ns}".rstrip()
    parts = [f"{k.rsplit('.', 1)[-1]}={rec[k]}" for k in ("container.exit.code", "container.exit.signal",
                                                          "container.exec.id", "container.exec.via") if k in rec]
    if rec.get("container.exit.oom_killed"):
        parts.append("oom_killed")
    if "process.pid" in rec:
        parts.append(f"pid={rec['process.pid']}")
    if rec.get("process.command_line"):
        parts.append(str(rec["process.command_line"]))
    name_part = f" {rec['container.name']}" if rec.get("container.name") else ""
    return f"{' '.join(parts)}{name_part}{_where(rec)}".lstrip()


_KIND_LINES = {"alert": _alert, "image.verdict": _verdict, "enforcement.block": _enforcement,
               "device.info": _device_info, "device.sample": _device_sample, "device.health": _device_health,
               "device.process": _device_process, "profile.change": _profile_change,
               "container.resources": _container_resources, "host.resources": _host_resources}
_KIND_LINES.update(dict.fromkeys(
    ("container.created", "container.started", "container.exited", "container.oom", "container.deleted",
     "container.exec", "image.pulled", "image.deleted"), _lifecycle))  # issue 16 (docs/lifecycle.md)


def decision_line(rec: dict) -> str | None:
    """What an alert, verdict, block or device record says, in one line (without time and name); None for
    other kinds.
    TextLog and `nodewarden events` both print it."""
    line = _KIND_LINES.get(rec.get("event.name", ""))
    return line(rec) if line is not None else None


class TextLog:
    """A line a person can read: time, event, pid/ppid/uid, process name, then what happened.
    Alerts, verdicts and blocks get a line of their own: what was decided, about what, where."""

    def __init__(self, stream):
        self._out = stream
        self._lock = threading.Lock()

    @staticmethod
    def format(rec: dict) -> str:
        name = rec.get("event.name", "?")
        ts = rec.get("timestamp", "")[11:23]
        line = decision_line(rec)
        if line is not None:
            return f"{ts} {name:<16} {line}"
        if name.startswith("agent."):
            rest = " ".join(f"{k}={v}" for k, v in rec.items() if k not in ("event.name", "timestamp"))
            return f"{ts} {name:<16} {rest}"
        who = f"pid={rec.get('process.pid')} ppid={rec.get('process.parent_pid')} uid={rec.get('user.id')}"
        comm = rec.get("process.name", "")
        if name == "process.exec":
            what = rec.get("process.command_line", "") or rec.get("process.executable.path", "")
        elif name == "process.exit":
            what = _pick(rec, "process.exit.code", "process.exit.signal")
        elif name == "process.fork":
            what = _pick(rec, "process.child.pid")
        elif name.startswith("file."):
            what = rec.get("file.path", "")
            if "file.target.path" in rec:
                what += " -> " + rec["file.target.path"]
            what += f" ret={rec.get('syscall.return')}"
        elif name.startswith("network."):
            addr = rec.get("network.peer.address", rec.get("network.local.address", ""))
            port = rec.get("network.peer.port", rec.get("network.local.port", 0))
            where = addr if rec.get("network.type") == "unix" else f"{addr}:{port}"
            what = f"{rec.get('network.transport', '')} {where} ret={rec.get('syscall.return')}"
        else:
            what = ""
        where = f" [{rec['container.id'][:12]} {rec.get('container.image.name', '')}]" if "container.id" in rec else ""
        return f"{ts} {name:<16} {who} {comm}{where}: {what}"

    def emit(self, records: list[dict]) -> None:
        # one line per record: a newline inside a value (a `sh -c` script's command line) is shown as \n
        data = "".join(self.format(r).replace("\n", "\\n") + "\n" for r in records).encode("utf-8",
                                                                                          "backslashreplace")
        with self._lock:
            self._out.write(data)
            self._out.flush()
