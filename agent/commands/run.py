"""`nodewarden run`: load the probes and print events until SIGINT/SIGTERM or --duration."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time

from agent import diaglog

NAME = "run"
HELP = "run the agent: attach the probes and print live events (as root)"


def add_arguments(p) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML config file (see README)")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of readable lines")
    p.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    p.add_argument("--families", metavar="LIST", help="probe families, comma-separated (process,file,net)")
    p.add_argument("--ignore-prefix", action="append", metavar="PATH",
                   help="drop file events under this path prefix in the kernel (repeatable; replaces config)")
    p.add_argument("--file-readonly", action="store_true", help="also report opens that only read")
    p.add_argument("--metrics", metavar="HOST:PORT", help="serve /metrics, /healthz, /readyz here")
    p.add_argument("--show-fork", action="store_true", help="also print process.fork events")
    p.add_argument("--containerd-socket", metavar="PATH", help="containerd's socket (default "
                   "/run/containerd/containerd.sock); events from containers carry their container and pod")
    p.add_argument("--no-containers", action="store_true", help="do not watch containerd")
    p.add_argument("--policy", metavar="FILE", help="policy YAML: runtime exec rules (`runtime:`), image gate")
    p.add_argument("--collector", metavar="ADDR", help="stream events to this collector (host:port or "
                   "unix:/path); 'embedded' starts one in this process with a SQLite file in the state dir")
    p.add_argument("--record", metavar="FILE", help="also write every batch read from the kernel to FILE, "
                   "for replay in tests (agent/sensors/replay.py)")
    diaglog.add_arguments(p)


def _overrides(args) -> dict:
    o = {}
    if args.json:
        o["output.format"] = "json"
    if args.families:
        o["probes.families"] = args.families
    if args.ignore_prefix is not None:
        o["probes.ignore_prefixes"] = args.ignore_prefix
    if args.file_readonly:
        o["probes.file_readonly"] = True
    if args.metrics:
        o["agent.metrics_listen"] = args.metrics
    if args.show_fork:
        o["output.show_fork"] = True
    if args.containerd_socket:
        o["containers.containerd_socket"] = args.containerd_socket
    if args.no_containers:
        o["containers.enabled"] = False
    if args.collector:
        o["export.collector"] = args.collector
    if args.policy:
        o["agent.policy_file"] = args.policy
    if args.record:
        o["agent.record_file"] = args.record
    return o


def _progress(started: threading.Event, first: float = 3.0, every: float = 5.0) -> None:
    """While the agent starts (mostly compiling the BPF probes: 6-28 s on a cold cache), a line now and
    then, so a person at the terminal knows it is not stuck."""
    t0 = time.monotonic()
    wait = first
    while not started.wait(wait):
        logging.getLogger("nodewarden").info("starting: compiling and attaching the probes (%.0f s so far)",
                                             time.monotonic() - t0)
        wait = every


def main(args) -> int:
    from agent import config
    from agent.node import Agent
    from agent.outputs.log import JsonLog, TextLog

    log = logging.getLogger("nodewarden")
    # --json alone decides until the config is read (it may ask for JSON events itself)
    diaglog.setup(args.log_level, args.log_format or ("json" if args.json else "text"))
    try:
        cfg = config.load(args.config, overrides=_overrides(args))
    except config.ConfigError as e:
        log.error("%s", e)
        return 2
    if not args.log_format and cfg.output.format == "json" and not args.json:
        diaglog.setup(args.log_level, "json")
    out = sys.stdout.buffer
    try:
        agent = Agent(cfg, (JsonLog(out) if cfg.output.format == "json" else TextLog(out)).emit)
    except Exception as e:  # PolicyError (a policy that does not load), a bad gate setting: one line
        log.error("%s", e)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    started = threading.Event()
    threading.Thread(target=_progress, args=(started,), name="nw-progress", daemon=True).start()
    try:
        agent.start()
    except Exception as e:  # LoadError, OSError, a collector that cannot listen: one line, not a traceback
        started.set()  # no progress line after the reason it stops
        log.error("%s", e)
        agent.stop()
        return 1
    finally:
        started.set()
    try:
        agent.pipeline.wait(args.duration, stop)
    finally:
        ran = time.time() - agent.started  # from agent.ready to the stop request
        agent.stop()
        if cfg.output.format != "json":  # for the person at the terminal; JSON readers have agent.drops, /metrics
            print(agent.metrics.summary(ran), file=sys.stderr, flush=True)
    return 0
