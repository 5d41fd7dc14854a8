"""Diagnostics (the `logging` lines on stderr) as text or as JSON, at a chosen level.

Events go to stdout; diagnostics (start-up progress, a stage's rate-limited error, the one-line reason the agent
stops) go to stderr. A DaemonSet's log shipper reads both streams of the container into one index, so with
`--json` events the diagnostics are JSON too (`--log-format` overrides), one object per line, under keys that no
event uses (`log.level`, `log.logger`, `message`, `error.*`), so they map beside the events without a collision.

    setup("info", "json")                                     # once, in a command's main
    logging.getLogger("nodewarden").warning("spool %s is full", path)
    -> {"timestamp":"2026-12-03T13:50:01.123456789Z","log.level":"warning","log.logger":"nodewarden",
        "message":"spool /var/lib/nodewarden/spool is full"}

Repeats are limited where they arise (agent/ratelog.py): a condition that recurs per event logs once per interval
with the count it held back, in either format.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
TEXT_FORMAT = "nodewarden: %(levelname)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record; a traceback goes in `error.stack_trace`, not across lines."""

    def format(self, record: logging.LogRecord) -> str:
        # the events' timestamp form (agent/outputs/record.py rfc3339), at the microseconds logging keeps
        sec, frac = divmod(record.created, 1.0)
        ts = f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(sec))}.{int(frac * 1e6):06d}000Z"
        out = {"timestamp": ts, "log.level": record.levelname.lower(),
               "log.logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            exc = record.exc_info[1]
            if exc is not None:
                out["error.type"] = type(exc).__name__
                out["error.message"] = str(exc)
            out["error.stack_trace"] = self.formatException(record.exc_info)
        # default=str: a message argument that orjson cannot encode still makes a line, never an error in logging
        return orjson.dumps(out, default=str).decode()


def add_arguments(p, default_level: str = "info") -> None:
    p.add_argument("--log-level", default=default_level, choices=LEVELS,
                   help="diagnostics on stderr from this level up")
    p.add_argument("--log-format", choices=FORMATS,
                   help="diagnostics as readable lines or JSON objects (default: json when events are JSON)")


def setup(level: str = "info", fmt: str = "text", stream=None, text_format: str = TEXT_FORMAT) -> logging.Handler:
    """Route every logger through one stderr handler in `fmt` at `level`; replaces earlier handlers (a command
    sets this up once; tests call it again)."""
    if level not in LEVELS:
        raise ValueError(f"log level {level!r}: one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(text_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
