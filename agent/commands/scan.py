"""`nodewarden scan`: check one image under the image policy, for CI pipelines and for operators.

Exit status: 0 when the policy allows the image (alerts included), 1 when it blocks, 2 on an error
(unreadable image or policy, bad arguments). Findings go to stdout; errors one line to stderr.
"""

from __future__ import annotations

import os
import sys
import time

NAME = "scan"
HELP = "scan an image (containerd reference, OCI layout directory or OCI tarball) and print the verdict"

DEFAULT_DB = "/var/lib/nodewarden/advisories"


def add_arguments(p) -> None:
    from agent.enrich.containerd_client import DEFAULT_SOCKET

    p.add_argument("target", metavar="REF|OCI_DIR|OCI_TAR", help="an image in containerd, or an OCI layout dir or tar")
    p.add_argument("--policy", metavar="FILE", help="image policy YAML (default: the built-in policy)")
    p.add_argument("--json", action="store_true", help="print the verdict as one JSON object")
    p.add_argument("--containerd-socket", metavar="PATH", default=DEFAULT_SOCKET, help=f"default {DEFAULT_SOCKET}")
    p.add_argument(
        "--namespace",
        "-n",
        metavar="NS",
        default=os.environ.get("CONTAINERD_NAMESPACE", "default"),
        help="containerd namespace of REF (default $CONTAINERD_NAMESPACE or 'default'; Kubernetes uses k8s.io)",
    )
    p.add_argument("--ref", metavar="NAME", default="", help="which image of a layout holding several")
    p.add_argument("--spec", metavar="FILE", help="an OCI runtime spec (config.json) to run the baseline checks on")
    p.add_argument(
        "--db", metavar="PATH", default=None, help=f"OSV advisory database dir or zip (default {DEFAULT_DB})"
    )
    p.add_argument("--rules", metavar="DIR", action="append", default=[], help="extra YARA rule directory (repeatable)")
    p.add_argument("--hashes", metavar="FILE", action="append", default=[], help="known-bad sha256 list (repeatable)")
    p.add_argument("--cache", metavar="FILE", default="", help="persist layer results in this SQLite file")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="give the policy's on_timeout verdict after this long (default: wait for the scan)",
    )
    p.add_argument("--all", action="store_true", help="list findings below the alert threshold too")


def _config(args):
    from agent.config import ImageGateConfig

    return ImageGateConfig(
        cache_path=args.cache,
        advisory_db=args.db if args.db is not None else DEFAULT_DB,
        rule_dirs=tuple(args.rules),
        hash_lists=tuple(args.hashes),
    )


def _source(args):
    from agent.imagegate.source import ContainerdSource, open_path

    if os.path.exists(args.target):
        return open_path(args.target, args.ref), None
    from agent.enrich.containerd_client import ContainerdClient

    if not os.path.exists(args.containerd_socket):
        raise FileNotFoundError(
            f"{args.target}: not a file or directory, and containerd socket {args.containerd_socket} does not exist"
        )
    client = ContainerdClient(args.containerd_socket)
    return ContainerdSource(client, args.namespace, args.target), client


def _scan_with_timeout(scanner, src, spec, policy, timeout):
    import concurrent.futures as cf

    from agent.imagegate.decide import decide, timeout_verdict

    if timeout is None:
        return decide(scanner.scan(src, spec), policy)
    pool = cf.ThreadPoolExecutor(max_workers=1)
    fut = pool.submit(scanner.scan, src, spec)
    try:
        return decide(fut.result(timeout=timeout), policy)
    except cf.TimeoutError:
        return timeout_verdict(policy, getattr(src, "name", ""), "", timeout)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _print_text(v, show_all: bool) -> None:
    print(f"{v.image or '-'} {v.digest or ''}".rstrip())
    print(f"verdict: {v.verdict.upper()}: {v.reason}")
    rows = [d for d in v.findings if show_all or d.action != "none"]
    for d in rows:
        f = d.finding
        extra = f" [{f.cis}]" if f.cis else (f" [{f.advisory} fixed: {f.fixed}]" if f.advisory else "")
        print(f"  {d.action:5} {f.severity.label:8} {f.category:13} {f.rule:28} {f.path or '-'}  {f.detail}{extra}")
    hidden = len(v.findings) - len(rows)
    if hidden:
        print(f"  ({hidden} more below the alert thresholds; --all lists them)")
    print(f"scan: {v.duration_ms:.0f} ms, cache: {v.cache_hit}")


def main(args) -> int:
    import orjson

    from agent.events import VerdictEvent
    from agent.imagegate.layer import SourceError
    from agent.imagegate.osv import OsvError
    from agent.imagegate.scanner import ImageScanner
    from agent.imagegate.source import ImageError
    from agent.outputs.record import flatten
    from agent.policy.loader import PolicyError, load

    client = None
    try:
        policy = load(args.policy) if args.policy else None
        if policy is None:
            from agent.policy.model import ImagePolicy

            policy = ImagePolicy()
        spec = None
        if args.spec:
            with open(args.spec, "rb") as f:
                spec = orjson.loads(f.read(8 << 20))
            if not isinstance(spec, dict):
                raise ValueError(f"{args.spec}: not a JSON object")
        scanner = ImageScanner(_config(args))
        for e in scanner.rule_errors:
            print(f"nodewarden scan: warning: rule skipped: {e}", file=sys.stderr)
        src, client = _source(args)
        v = _scan_with_timeout(scanner, src, spec, policy, args.timeout)
    except PolicyError as e:
        print(f"nodewarden scan: policy rejected: {e}", file=sys.stderr)
        return 2
    except (ImageError, SourceError, OsvError, ValueError, OSError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"nodewarden scan: {msg}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug of ours: still one line and the error status, never 1 (block)
        msg = str(e).splitlines()[0] if str(e) else ""
        print(f"nodewarden scan: internal error: {type(e).__name__}: {msg}", file=sys.stderr)
        return 2
    finally:
        if client is not None:
            client.close()
    if v.error:
        print(f"nodewarden scan: {v.error}", file=sys.stderr)
    if args.json:
        rec = flatten(VerdictEvent(time.time_ns(), v, namespace="" if os.path.exists(args.target) else args.namespace))
        if not args.all:
            rec["image.findings"] = [f for f in rec["image.findings"] if f.get("action") != "none"]
        sys.stdout.buffer.write(orjson.dumps(rec) + b"\n")
        sys.stdout.flush()
    else:
        _print_text(v, args.all)
    if v.error:
        return 2 if v.verdict != "block" else 1
    return 1 if v.verdict == "block" else 0
