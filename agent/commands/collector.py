"""`nodewarden collector`: run the collector (gRPC ingest, SQLite store, query, live tail).

Settings come from, lowest first: defaults, the `collector:` section of --config (YAML; keys
are CollectorConfig's field names), NODEWARDEN_COLLECTOR_TOKEN, then flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import threading

import yaml

from agent import diaglog

NAME = "collector"
HELP = "Run the collector: gRPC ingest from agents into SQLite, Query and live Subscribe."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML file; its `collector:` section sets the keys below")
    p.add_argument("--listen", action="append", metavar="ADDR",
                   help="host:port or unix:/path; repeat for several (default 127.0.0.1:7470)")
    p.add_argument("--db", metavar="PATH", help="SQLite file (default /var/lib/nodewarden/events.db)")
    p.add_argument("--store", metavar="URL",
                   help="PostgreSQL shared by collector replicas, postgresql://user@host:port/db (instead of --db)")
    p.add_argument("--store-partition", metavar="DUR",
                   help="PostgreSQL: time span of one events partition, what retention drops at once (default 1d)")
    p.add_argument("--tls-cert", metavar="PEM", help="server certificate: turns TLS on")
    p.add_argument("--tls-key", metavar="PEM", help="server key")
    p.add_argument("--tls-client-ca", metavar="PEM", help="require client certificates signed by this CA (mTLS)")
    p.add_argument("--token-file", metavar="FILE",
                   help="require `authorization: Bearer <token>` (or set NODEWARDEN_COLLECTOR_TOKEN)")
    p.add_argument("--retention-age", metavar="DUR", help="delete events older than this (default 7d; 0: never)")
    p.add_argument("--retention-size", metavar="SIZE", help="keep the store under this (default 1GiB; 0: no limit)")
    p.add_argument("--max-message-bytes", metavar="SIZE", help="largest message accepted (default 16MiB)")
    p.add_argument("--subscriber-queue", type=int, metavar="N", help="events a live tail may lag (default 10000)")
    p.add_argument("--max-workers", type=int, metavar="N", help="concurrent calls, one per agent (default 256)")
    p.add_argument("--metrics", metavar="ADDR", help="serve Prometheus metrics on host:port")
    p.add_argument("--http", metavar="HOST:PORT",
                   help="serve the console and its /api/ here, e.g. 127.0.0.1:7480 (config key http_listen)")
    p.add_argument("--nats", metavar="URLS",
                   help="publish stored events to NATS JetStream: nats://host:port[,nats://host:port...]")
    p.add_argument("--nats-stream", metavar="NAME", help="JetStream stream (default NODEWARDEN; made if missing)")
    p.add_argument("--nats-min-severity", metavar="SEV", help="publish only events at or above it (e.g. high)")
    p.add_argument("--nats-kinds", metavar="KINDS",
                   help="publish only these kinds, comma-separated, as `events --kind` (alert,image.verdict,file.*)")
    p.add_argument("--nats-async", action="store_true",
                   help="publish after each commit without holding agents' acks (faster; a crash may miss some)")
    p.add_argument("--output", action="append", metavar="TYPE=WHERE",
                   help="send alerts, blocks and verdicts (low and up) to webhook=URL, slack=URL, alertmanager=URL, "
                        "syslog=udp://HOST:PORT or tcp://..., otlp=HOST:PORT; repeat; the config's `outputs:` "
                        "takes filters and options (docs/outputs.md)")
    diaglog.add_arguments(p)


_OUTPUT_WHERE = {"syslog": "address", "otlp": "endpoint"}  # the others take a url


def _output_flag(text: str) -> dict:
    kind, sep, where = text.partition("=")
    if not sep or not where:
        raise ValueError(f"--output {text!r}: expected TYPE=WHERE, e.g. webhook=http://127.0.0.1:8080/hook")
    return {"type": kind, _OUTPUT_WHERE.get(kind, "url"): where}


def build_config(args: argparse.Namespace):
    from collector.server import CollectorConfig
    from collector.units import parse_duration, parse_size

    cfg = CollectorConfig()
    if args.config:
        with open(args.config) as f:
            doc = yaml.safe_load(f) or {}
        section = doc.get("collector", doc) if isinstance(doc, dict) else None
        if not isinstance(section, dict):
            raise ValueError(f"{args.config}: expected a mapping (optionally under `collector:`)")
        known = {f.name for f in dataclasses.fields(CollectorConfig)}
        unknown = set(section) - known
        if unknown:
            raise ValueError(f"{args.config}: unknown collector keys: {', '.join(sorted(unknown))}")
        for key, val in section.items():
            if key == "listen" and isinstance(val, str):
                val = [val]
            elif key == "retention_age_s":
                val = parse_duration(val)
            elif key == "store_partition_s":
                val = int(parse_duration(val))
            elif key in ("retention_bytes", "max_message_bytes"):
                val = parse_size(val)
            elif key == "nats_kinds" and isinstance(val, str):
                val = [k for k in val.split(",") if k.strip()]
            setattr(cfg, key, val)
    if os.environ.get("NODEWARDEN_COLLECTOR_TOKEN"):
        cfg.token = os.environ["NODEWARDEN_COLLECTOR_TOKEN"]
    flags = {
        "listen": args.listen, "db": args.db, "store": args.store,
        "store_partition_s": int(parse_duration(args.store_partition)) if args.store_partition else None,
        "tls_cert": args.tls_cert, "tls_key": args.tls_key,
        "tls_client_ca": args.tls_client_ca, "token_file": args.token_file,
        "retention_age_s": parse_duration(args.retention_age) if args.retention_age else None,
        "retention_bytes": parse_size(args.retention_size) if args.retention_size else None,
        "max_message_bytes": parse_size(args.max_message_bytes) if args.max_message_bytes else None,
        "subscriber_queue": args.subscriber_queue, "max_workers": args.max_workers,
        "metrics_listen": args.metrics, "http_listen": getattr(args, "http", None),
        "nats": getattr(args, "nats", None), "nats_stream": getattr(args, "nats_stream", None),
        "nats_min_severity": getattr(args, "nats_min_severity", None),
        "nats_kinds": [k for k in args.nats_kinds.split(",") if k.strip()] if getattr(args, "nats_kinds", None)
        else None,
        "nats_confirm": False if getattr(args, "nats_async", False) else None,
    }
    for key, val in flags.items():
        if val is not None:
            setattr(cfg, key, val)
    if getattr(args, "output", None):  # beside the config's outputs; serve() checks them all
        cfg.outputs = [*(cfg.outputs or []), *(_output_flag(o) for o in args.output)]
    if args.token_file:
        cfg.token = ""  # an explicit file wins over the environment
    return cfg


def main(args: argparse.Namespace) -> int:
    diaglog.setup(args.log_level, args.log_format or "text",
                  text_format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from collector.server import serve, store_name

    try:
        cfg = build_config(args)
        handle = serve(cfg)
    except (OSError, ValueError, RuntimeError) as e:
        logging.getLogger("nodewarden.collector").error("cannot start: %s", e)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"collector: listening on {', '.join(handle.addresses)}; store {store_name(cfg)}", flush=True)
    if handle.console is not None:
        print(f"collector: console on {handle.console.url}", flush=True)
    from agent import sdnotify

    sdnotify.ready(f"listening on {', '.join(handle.addresses)}")  # Type=notify under systemd; else nothing
    while not stop.wait(1.0):  # a timeout, so signal handlers run promptly
        pass
    sdnotify.stopping()
    handle.stop()
    return 0
