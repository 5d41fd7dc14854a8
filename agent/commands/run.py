"""`nodewarden run`: load the probes and print events until SIGINT/SIGTERM or --duration."""

from __future__ import annotations

import logging
import signal
import sys
import threading

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
    return o


def main(args) -> int:
    from agent import config
    from agent.outputs.log import JsonLog, TextLog
    from agent.outputs.metrics import Metrics
    from agent.pipeline import Pipeline
    from agent.sensors.loader import LoadError

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="nodewarden: %(levelname)s %(message)s")
    try:
        cfg = config.load(args.config, overrides=_overrides(args))
    except config.ConfigError as e:
        print(f"nodewarden: {e}", file=sys.stderr)
        return 2
    out = sys.stdout.buffer
    log_out = JsonLog(out) if cfg.output.format == "json" else TextLog(out)
    metrics = Metrics()
    watcher = resolver = None
    if cfg.containers.enabled:
        from agent.enrich.containerd import ContainerdConfig, ContainerTable, ContainerWatcher
        from agent.enrich.enricher import ContainerResolver

        table = ContainerTable()
        watcher = ContainerWatcher(ContainerdConfig(socket=cfg.containers.containerd_socket,
                                                    proc_root=cfg.containers.proc_root), table)
        resolver = ContainerResolver(table)
    pipe = Pipeline(cfg, [log_out.emit], metrics=metrics, containers=resolver)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        if cfg.agent.metrics_listen:
            metrics.serve(cfg.agent.metrics_listen)
        if watcher is not None:
            watcher.start()  # never raises: retries in the background while containerd is absent
        pipe.start()
    except (LoadError, OSError) as e:
        print(f"nodewarden: {e}", file=sys.stderr)
        return 1
    try:
        pipe.wait(args.duration, stop)
    finally:
        pipe.stop()
        if watcher is not None:
            watcher.stop()
        metrics.stop()
    return 0
