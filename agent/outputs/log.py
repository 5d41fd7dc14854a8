"""Event lines on a stream: JSON (one orjson object per line, for SREs' log pipelines) or text
(one readable line per event, for a person at a terminal)."""

from __future__ import annotations

import threading

import orjson


class JsonLog:
    def __init__(self, stream):
        self._out = stream
        self._lock = threading.Lock()

    def emit(self, records: list[dict]) -> None:
        data = b"".join(orjson.dumps(r) + b"\n" for r in records)
        with self._lock:
            self._out.write(data)
            self._out.flush()


def _pick(rec: dict, *keys: str) -> str:
    return " ".join(f"{k.rsplit('.', 1)[-1]}={rec[k]}" for k in keys if k in rec and rec[k] != "")


class TextLog:
    """A line a person can read: time, event, pid/ppid/uid, process name, then what happened."""

    def __init__(self, stream):
        self._out = stream
        self._lock = threading.Lock()

    @staticmethod
    def format(rec: dict) -> str:
        name = rec.get("event.name", "?")
        ts = rec.get("timestamp", "")[11:23]
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
        data = "".join(self.format(r) + "\n" for r in records).encode("utf-8", "backslashreplace")
        with self._lock:
            self._out.write(data)
            self._out.flush()
