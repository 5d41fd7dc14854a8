"""`nodewarden posture`: the node's posture report on request, from one listing of containerd.

The same checks the agent reports every `posture.interval` as a posture.report event (agent/imagegate/posture.py):
long-running containers, images whose base has a newer digest on the node, several digests of one image running,
containers without CPU or memory limits, containers running as root or privileged.
"""

from __future__ import annotations

import sys

NAME = "posture"
HELP = "the node's posture: long-running containers, stale bases, image sprawl, missing limits, root, privileged"


def add_arguments(p) -> None:
    from agent.commands.containers import add_listing_arguments

    p.add_argument("--json", action="store_true", help="the posture.report record as one JSON object")
    add_listing_arguments(p)
    p.add_argument("--max-age-days", type=float, default=30.0, metavar="DAYS",
                   help="report containers running longer than this (default 30)")


def _pod(c) -> str:
    return f"{c.pod_namespace}/{c.pod_name}" if c.pod_name else f"{c.namespace}/{c.name or c.id}"


def text(report) -> str:
    if not report.findings:
        return f"posture: {report.containers} running containers, nothing to report"
    lines = [f"posture: {report.containers} running containers, {len(report.findings)} finding(s)"]
    for f in report.findings:
        who = ", ".join(sorted({_pod(c) for c in f.containers}))
        lines.append(f"  {f.check:<13} {f.detail}  [{who}]")
    if report.unreadable:
        lines.append(f"  ({report.unreadable} containers or images could not be read: not judged)")
    return "\n".join(lines)


def main(args) -> int:
    import orjson

    from agent.commands.containers import listing
    from agent.config import PostureConfig
    from agent.enrich.containerd_client import ContainerdClient, ContainerdUnavailable
    from agent.imagegate.posture import PostureAssessor
    from agent.outputs.record import flatten

    try:
        containers = listing(args)
    except ContainerdUnavailable as e:
        print(f"nodewarden: {e}", file=sys.stderr)
        return 2
    assessor = PostureAssessor(lambda: ContainerdClient(args.containerd_socket, timeout=args.timeout),
                               PostureConfig(max_age_days=args.max_age_days), proc_root=args.proc_root)
    try:
        report = assessor.report(containers)
    finally:
        assessor.close()
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(flatten(report)) + b"\n")
        sys.stdout.flush()
    else:
        print(text(report))
    return 0
