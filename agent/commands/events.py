"""`nodewarden events`: read events from a collector: stored ones (Query, paged) or live (--follow)."""

from __future__ import annotations

import argparse
import os
import sys

import orjson

NAME = "events"
HELP = "Query or follow events stored by a collector."

_DEFAULT_ADDR = "127.0.0.1:7470"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collector", metavar="ADDR", default=os.environ.get("NODEWARDEN_COLLECTOR", _DEFAULT_ADDR),
                   help=f"host:port or unix:/path (default $NODEWARDEN_COLLECTOR or {_DEFAULT_ADDR})")
    p.add_argument("--since", metavar="TIME", help="RFC 3339 time, or a duration ago: 10m, 2h, 7d")
    p.add_argument("--until", metavar="TIME", help="RFC 3339 time, or a duration ago")
    p.add_argument("--kind", action="append", default=[], metavar="KIND",
                   help="event.name (process.exec, alert), a family (file) or a kind (verdict, enforcement, "
                        "exec); repeat for several")
    p.add_argument("--name", action="append", default=[], metavar="NAME",
                   help="exactly this event.name; repeat for several")
    p.add_argument("--rule", action="append", default=[], metavar="ID", help="alerts of this rule.id; repeat")
    p.add_argument("--verdict", action="append", default=[], choices=["allow", "alert", "block"],
                   help="verdicts and blocks with this image.verdict; repeat")
    p.add_argument("--node", action="append", default=[], metavar="NODE", help="repeat for several")
    p.add_argument("--agent", metavar="ID", help="agent id")
    p.add_argument("--container", metavar="ID", help="container id or a prefix of it")
    p.add_argument("--pod", metavar="NAME")
    p.add_argument("--namespace", metavar="NS")
    p.add_argument("--severity", metavar="LEVEL", help="at least: debug, info, low, medium, high, critical")
    p.add_argument("--text", metavar="TEXT", help="substring of the executable, command line, file path or peer")
    p.add_argument("--limit", type=int, default=1000, metavar="N", help="events to print, 0: all (default 1000)")
    p.add_argument("--follow", "-f", action="store_true",
                   help="stream live events (with --since: stored ones from then first)")
    p.add_argument("--json", action="store_true", help="one JSON object per line (the flat record)")
    p.add_argument("--tls", action="store_true", help="TLS with the system's CA roots")
    p.add_argument("--tls-ca", metavar="PEM", help="CA that signed the collector's certificate (turns TLS on)")
    p.add_argument("--tls-cert", metavar="PEM", help="client certificate (mutual TLS)")
    p.add_argument("--tls-key", metavar="PEM", help="client key (mutual TLS)")
    p.add_argument("--server-name", metavar="NAME", help="name to expect in the collector's certificate")
    p.add_argument("--token-file", metavar="FILE", help="bearer token file (or set NODEWARDEN_TOKEN)")


def build_filter(args: argparse.Namespace, cpb):
    from collector.units import parse_time
    from nwwire.schema import SEVERITY

    for name in args.name:
        if "." not in name and name not in ("alert",):
            raise ValueError(f"--name takes a whole event.name such as process.exec, not {name!r} (see --kind)")
    f = cpb.Filter(kinds=args.kind + args.name, nodes=args.node, container=args.container or "", pod=args.pod or "",
                   namespace=args.namespace or "", text=args.text or "", agent_id=args.agent or "",
                   rules=args.rule, verdicts=args.verdict)
    if args.since:
        f.since_unix_nano = parse_time(args.since)
    if args.until:
        f.until_unix_nano = parse_time(args.until)
    if args.severity:
        sev = SEVERITY.get(args.severity.lower())
        if sev is None:
            raise ValueError(f"unknown severity {args.severity!r}")
        f.min_severity = sev
    return f


def format_line(rec: dict) -> str:
    """One human line: time, node, severity, kind, process, what it did, where."""
    from agent.outputs.log import decision_line

    parts = [rec.get("timestamp", ""), rec.get("host.name", ""), f"{rec.get('event.severity', ''):<6}",
             f"{rec.get('event.name', ''):<15}"]
    decided = decision_line(rec)  # alerts, verdicts, blocks: what was decided, about what, where
    if decided is not None:
        return " ".join(p for p in [*parts, decided] if p)
    if "process.pid" in rec:
        parts.append(f"pid={rec['process.pid']}")
    cmd = rec.get("process.command_line") or rec.get("process.executable.path")
    if cmd:
        parts.append(repr(cmd) if any(c.isspace() for c in cmd) else cmd)
    for key in ("file.path", "file.target.path", "network.peer.address", "network.local.address"):
        if key in rec:
            val = str(rec[key])
            port = rec.get(key.replace(".address", ".port"))
            parts.append(f"{key}={val}:{port}" if port is not None and key.startswith("network.") else f"{key}={val}")
    if "process.exit.code" in rec:
        parts.append(f"exit={rec['process.exit.code']}")
    if rec.get("event.name") == "agent.drops":
        new = rec.get("nodewarden.drops.new")
        text = ", ".join(f"{k}={v}" for k, v in new.items()) if isinstance(new, dict) else str(new)
        parts.append(f"dropped {text}")
    where = "/".join(str(rec[k]) for k in ("k8s.namespace.name", "k8s.pod.name") if rec.get(k))
    if rec.get("container.id"):
        where += ("@" if where else "container=") + str(rec["container.id"])[:12]
    if where:
        parts.append(where)
    return " ".join(p for p in parts if p)


def main(args: argparse.Namespace) -> int:
    import grpc

    from agent.outputs.grpc_channel import ClientSecurity, make_channel, metadata
    from nwwire.codec import to_record
    from nwwire.genproto import load

    cpb = load("nodewarden.v1.collector_pb2")
    gpb = load("nodewarden.v1.collector_pb2_grpc")
    token = "" if args.token_file else os.environ.get("NODEWARDEN_TOKEN", "")
    sec = ClientSecurity(tls=args.tls, tls_ca=args.tls_ca or "", tls_cert=args.tls_cert or "",
                         tls_key=args.tls_key or "", server_name=args.server_name or "",
                         token=token, token_file=args.token_file or "")
    try:
        flt = build_filter(args, cpb)
        channel = make_channel(args.collector, sec)
        md = metadata(sec)
    except (ValueError, OSError) as e:
        print(f"events: {e}", file=sys.stderr)
        return 2
    stub = gpb.CollectorStub(channel)
    out = sys.stdout.buffer
    printed = 0

    def emit(ev) -> None:
        rec = to_record(ev)
        line = orjson.dumps(rec) if args.json else format_line(rec).encode("utf-8", "backslashreplace")
        out.write(line + b"\n")

    try:
        if args.follow:
            dropped = 0
            call = stub.Subscribe(cpb.SubscribeRequest(filter=flt, replay=bool(args.since)), metadata=md)
            for resp in call:
                for ev in resp.events:
                    emit(ev)
                out.flush()
                if resp.dropped > dropped:
                    print(f"events: the collector dropped {resp.dropped - dropped} events for this slow reader "
                          f"({resp.dropped} in all)", file=sys.stderr)
                    dropped = resp.dropped
            return 0
        token_ = ""
        while True:
            want = 10000 if args.limit == 0 else min(10000, args.limit - printed)
            token_next = ""
            for resp in stub.Query(cpb.QueryRequest(filter=flt, limit=want, page_token=token_), metadata=md):
                for ev in resp.events:
                    emit(ev)
                    printed += 1
                token_next = resp.next_page_token or token_next
            if not token_next or (args.limit and printed >= args.limit):
                break
            token_ = token_next
        out.flush()
        return 0
    except grpc.RpcError as e:
        print(f"events: {args.collector}: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `nodewarden events | head`
        return 0
    finally:
        channel.close()
