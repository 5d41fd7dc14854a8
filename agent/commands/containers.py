"""`nodewarden containers`: the container table as the agent sees it, from one listing of containerd."""

from __future__ import annotations

import dataclasses
import sys

NAME = "containers"
HELP = "list containerd's containers with the cgroup ids, images and pods the agent attributes events to"


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object per container per line")
    add_listing_arguments(p)


def add_listing_arguments(p) -> None:
    """The flags of one listing of containerd (this command's and `nodewarden posture`'s)."""
    from agent.enrich.containerd_client import DEFAULT_SOCKET

    p.add_argument(
        "--containerd-socket", metavar="PATH", default=DEFAULT_SOCKET, help=f"default {DEFAULT_SOCKET}"
    )
    p.add_argument(
        "--namespace", "-n", action="append", metavar="NS", help="only this containerd namespace (repeatable)"
    )
    p.add_argument("--proc-root", metavar="DIR", default="/proc", help="procfs of the host (default /proc)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS", help="per call (default 5)")


def listing(args) -> list:
    """The container table from one listing of containerd (ContainerdUnavailable when it cannot be asked)."""
    from agent.enrich.containerd import ContainerdConfig, ContainerTable, ContainerWatcher

    cfg = ContainerdConfig(
        socket=args.containerd_socket,
        namespaces=tuple(args.namespace or ()),
        proc_root=args.proc_root,
        rpc_timeout=args.timeout,
    )
    table = ContainerTable()
    ContainerWatcher(cfg, table).sync_once()
    return table.snapshot()


def _row(info) -> dict:
    d = dataclasses.asdict(info)
    d["labels"] = dict(info.labels)
    return d


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12] if digest else "-"


def _text(infos) -> str:
    head = ("NAMESPACE", "CONTAINER", "IMAGE", "DIGEST", "STATE", "PID", "CGROUP_ID", "POD")
    rows = [head]
    for i in infos:
        pod = f"{i.pod_namespace}/{i.pod_name}" if i.pod_name else "-"
        rows.append(
            (i.namespace, i.id, i.image or "-", _short(i.image_digest), i.state or "-",
             str(i.pid or "-"), str(i.cgroup_id or "-"), pod)
        )  # fmt: skip
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def main(args) -> int:
    import orjson

    from agent.enrich.containerd_client import ContainerdUnavailable

    try:
        infos = listing(args)
    except ContainerdUnavailable as e:
        print(f"nodewarden: {e}", file=sys.stderr)
        return 1
    if args.json:
        out = sys.stdout.buffer
        for info in infos:
            out.write(orjson.dumps(_row(info)) + b"\n")
        out.flush()
    else:
        print(_text(infos))
    return 0
