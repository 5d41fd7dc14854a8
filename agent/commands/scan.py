"""`nodewarden scan`: check one image under the image policy, for CI pipelines and for operators.

Exit status: 0 when the policy allows the image (alerts included), 1 when it blocks, 2 on an error
(unreadable image or policy, bad arguments). Findings go to stdout; errors one line to stderr.
"""

from __future__ import annotations

import os
import sys
import time

NAME = "scan"
HELP = ("scan an image (containerd or registry ref, OCI layout dir or tar, docker-save archive, rootfs dir); "
        "print the verdict")

DEFAULT_DB = "/var/lib/nodewarden/advisories"
DEFAULT_IGNOREFILE = ".nodewardenignore"
FORMATS = ("table", "json", "sarif", "cyclonedx", "spdx")
IMAGE_SOURCES = ("containerd", "registry")


def add_arguments(p) -> None:
    from agent.enrich.containerd_client import DEFAULT_SOCKET

    p.add_argument("target", metavar="REF|OCI_DIR|OCI_TAR|DOCKER_TAR|ROOTFS_DIR",
                   help="an image in containerd or a registry (docker://REF: the registry only), an OCI layout dir "
                   "or tar, a docker-save archive, or a root filesystem directory")
    # Where a REF is looked for (Trivy's --image-src): this node's containerd first, then its registry.
    p.add_argument("--image-src", metavar="LIST", default="containerd,registry",
                   help="where a REF is looked for, in order: containerd (--namespace), registry (pulled over the "
                   "OCI distribution API, layers streamed) (default containerd,registry)")
    p.add_argument("--registry-auth-file", metavar="FILE", default=None,
                   help="docker-style config.json with registry credentials (default $DOCKER_CONFIG/config.json, "
                   "~/.docker/config.json, /var/lib/kubelet/config.json)")
    p.add_argument("--username", default=os.environ.get("NODEWARDEN_USERNAME", ""),
                   help="registry user for REF's registry (default $NODEWARDEN_USERNAME)")
    p.add_argument("--password", default=os.environ.get("NODEWARDEN_PASSWORD", ""),
                   help="its password or token (default $NODEWARDEN_PASSWORD; prefer the variable: a flag shows in ps)")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                   help="speak plain HTTP to this registry (loopback ones always are; repeatable)")
    p.add_argument("--registry-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="per registry request (default 30)")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", default="",
                   help="which image of a multi-platform registry image (default this machine's)")
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
    # Trivy's CI conventions (same names, same meaning).
    p.add_argument("--format", "-f", choices=FORMATS, default=None,
                   help="report format (default table; json with --json): table, json, sarif (SARIF 2.1.0), "
                   "cyclonedx (CycloneDX 1.6 JSON SBOM), spdx (SPDX 2.3 JSON SBOM)")
    p.add_argument("--output", "-o", metavar="FILE", default="", help="write the report to FILE instead of stdout")
    p.add_argument("--severity", "-s", metavar="LIST", default="",
                   help="only list findings of these severities (comma-separated: critical,high,medium,low,info); "
                   "they, not the policy's thresholds, then decide what is listed and --exit-code")
    p.add_argument("--exit-code", type=int, default=None, metavar="N",
                   help="exit N when any finding is listed (after --severity, ignores), else 0 "
                   "(default: the verdict's status, 1 on block)")
    p.add_argument("--ignorefile", metavar="FILE", default=None,
                   help="accepted findings: ids/aliases/rules, exp:YYYY-MM-DD, path:GLOB "
                   "(default ./.nodewardenignore when present)")
    p.add_argument("--ignore-unfixed", action="store_true", help="leave out vulnerabilities with no fixed version")


def _config(args):
    from agent.config import ImageGateConfig

    return ImageGateConfig(
        cache_path=args.cache,
        advisory_db=args.db if args.db is not None else DEFAULT_DB,
        rule_dirs=tuple(args.rules),
        hash_lists=tuple(args.hashes),
        registry_auth_file=args.registry_auth_file or "",
        registry_insecure=tuple(args.insecure_registry),
    )


def _image_sources(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in IMAGE_SOURCES]
    if bad or not kinds:
        raise ValueError(f"--image-src {text!r}: a comma-separated list of {', '.join(IMAGE_SOURCES)}")
    return kinds


def _platform(text: str) -> tuple[str, str, str] | None:
    if not text:
        return None
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"--platform {text!r}: want OS/ARCH or OS/ARCH/VARIANT, e.g. linux/arm64/v8")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else ""


def _registry(args, ref):
    """A registry client for REF: the docker-style config's credentials, --username/--password for REF's registry."""
    from agent.imagegate.registry import Credentials, DockerConfigAuth, RegistryClient

    explicit = None
    if args.username or args.password:
        explicit = {ref.registry: Credentials(args.username, args.password)}
    auth = DockerConfigAuth(args.registry_auth_file or DockerConfigAuth.default_path(), explicit=explicit)
    return RegistryClient(auth, timeout=args.registry_timeout, insecure=tuple(args.insecure_registry))


def _source(args):
    from agent.imagegate.source import open_path

    if os.path.isfile(args.target):
        from agent.imagegate.source_docker import DockerArchiveSource, is_docker_archive

        if is_docker_archive(args.target):  # legacy `docker save` (no index.json)
            return DockerArchiveSource(args.target, args.ref), None
    from agent.imagegate.source_rootfs import RootfsSource, is_rootfs

    if is_rootfs(args.target):  # a directory without index.json: an unpacked root filesystem
        return RootfsSource(args.target, args.ref), None
    if os.path.exists(args.target):
        return open_path(args.target, args.ref), None
    return _image_ref(args)


def _image_ref(args):
    """A REF from the first of --image-src that has it: (source, client to close)."""
    from agent.enrich.containerd_client import ContainerdClient
    from agent.imagegate.registry import Reference, RegistryError, RegistrySource
    from agent.imagegate.source import ContainerdSource, ImageError

    forced = args.target.startswith("docker://")
    target = args.target.removeprefix("docker://")
    kinds = ["registry"] if forced else _image_sources(args.image_src)
    platform = _platform(args.platform)
    tried = []
    for kind in kinds:
        if kind == "containerd":
            if not os.path.exists(args.containerd_socket):
                tried.append(f"containerd socket {args.containerd_socket} does not exist")
                continue
            client = ContainerdClient(args.containerd_socket)
            src = ContainerdSource(client, args.namespace, target)
            try:
                src.root()
            except ImageError as e:  # not in containerd: the next source may have it
                client.close()
                tried.append(str(e))
                continue
            return src, client
        ref = Reference.parse(target)  # RegistryError (a SourceError) for what is no reference
        client = _registry(args, ref)
        src = RegistrySource(client, ref, platform)
        try:
            src.root()
        except RegistryError as e:
            client.close()
            if forced or len(kinds) == 1:
                raise
            tried.append(f"registry: {e}")
            continue
        return src, client
    raise FileNotFoundError(f"{args.target}: not a file or directory; " + "; ".join(tried))


def _scan_with_timeout(scanner, src, spec, policy, timeout, prune, signer=None):
    """(verdict, report); report None when the scan timed out. `prune` drops ignored findings from
    the report before the policy decides, so an accepted finding neither blocks nor alerts. `signer`: the
    policy's signatures: entries checked as the gate checks them (agent/imagegate/signing.py)."""
    import concurrent.futures as cf

    from agent.imagegate.decide import decide, timeout_verdict

    def judged(report):
        sig = None
        if signer is not None and policy.signatures.rules and not report.error:
            sig = signer.check(policy, report.image or getattr(src, "name", ""),
                               (report.digest, report.manifest_digest))
        return decide(report, policy, sig)

    if timeout is None:
        report = prune(scanner.scan(src, spec))
        return judged(report), report
    pool = cf.ThreadPoolExecutor(max_workers=1)
    fut = pool.submit(scanner.scan, src, spec)
    try:
        report = prune(fut.result(timeout=timeout))
        return judged(report), report
    except cf.TimeoutError:
        return timeout_verdict(policy, getattr(src, "name", ""), "", timeout), None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _severities(text: str):
    from agent.vocab import Severity

    if not text:
        return None
    try:
        return {Severity.parse(w.strip()) for w in text.split(",") if w.strip()}
    except ValueError as e:
        raise ValueError(f"--severity: {e}") from None


def _ignores(args):
    from agent.imagegate import report_ignore

    path = args.ignorefile
    if path is None:
        if not os.path.isfile(DEFAULT_IGNOREFILE):
            return None
        path = DEFAULT_IGNOREFILE
    ign = report_ignore.load(path)
    for e in ign.expired:
        print(f"nodewarden scan: warning: {path}:{e.line}: {e.id} expired on {e.expires}, not ignored", file=sys.stderr)
    return ign


def _pruner(ign, ignore_unfixed: bool, counts: dict):
    def prune(report):
        keep = []
        for f in report.findings:
            if ign is not None and ign.matches(f) is not None:
                counts["ignored"] += 1
            elif ignore_unfixed and f.advisory and f.fixed in ("", "none"):
                counts["unfixed"] += 1
            else:
                keep.append(f)
        report.findings = keep
        return report

    return prune


def _select(v, show_all: bool, sevs):
    """The findings a report lists: with --severity those severities, else the acted-on ones
    (every one with --all). All of them: no cap (the log record has its own)."""
    from agent.imagegate.report_common import rows

    every = rows(v)
    if sevs is not None:
        return [d for d in every if d.finding.severity in sevs]
    return [d for d in every if show_all or d.action != "none"]


def _json_report(v, shown, namespace: str) -> bytes:
    import orjson

    from agent.events import VerdictEvent
    from agent.outputs.record import flatten

    rec = flatten(VerdictEvent(time.time_ns(), v, namespace=namespace))
    # The record caps its findings (a log line); the report lists every one it selected.
    rec["image.findings"] = [d.to_dict() for d in shown]
    rec.pop("image.findings_omitted", None)
    return orjson.dumps(rec) + b"\n"


def _render(fmt: str, v, report, shown, hidden: int, namespace: str) -> bytes:
    if fmt == "json":
        return _json_report(v, shown, namespace)
    if fmt == "sarif":
        import orjson

        from agent.imagegate import report_sarif

        return orjson.dumps(report_sarif.render(v, shown), option=orjson.OPT_INDENT_2) + b"\n"
    if fmt == "cyclonedx":
        from agent.imagegate import report_sbom

        return report_sbom.cyclonedx(v, report, shown).encode() + b"\n"
    if fmt == "spdx":
        from agent.imagegate import report_sbom

        return report_sbom.spdx(v, report, shown).encode()
    from agent.imagegate import report_table

    return report_table.render(v, shown, hidden, v.duration_ms).encode()


def _write(data: bytes, output: str) -> None:
    if not output or output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    from agent.durable import write_atomic

    write_atomic(output, data)


def main(args) -> int:
    import orjson

    from agent.imagegate.layer import SourceError
    from agent.imagegate.osv import OsvError
    from agent.imagegate.report_ignore import IgnoreError
    from agent.imagegate.scanner import ImageScanner
    from agent.imagegate.source import ImageError
    from agent.policy.loader import PolicyError, load

    client = None
    fmt = args.format or ("json" if args.json else "table")
    counts = {"ignored": 0, "unfixed": 0}
    try:
        if args.exit_code is not None and not 0 <= args.exit_code <= 255:
            raise ValueError(f"--exit-code {args.exit_code}: want 0..255")
        sevs = _severities(args.severity)
        ign = _ignores(args)
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
        signer = None
        if policy.signatures.rules:
            from agent.imagegate.registry import RegistryClient
            from agent.imagegate.signatures import SignatureVerifier
            from agent.imagegate.signing import SignatureGate

            # a registry scan asks the same registry (and credentials) for the signatures
            verifier = SignatureVerifier(client, timeout=args.registry_timeout) \
                if isinstance(client, RegistryClient) else None
            signer = SignatureGate(_config(args), verifier=verifier)
        v, report = _scan_with_timeout(scanner, src, spec, policy, args.timeout,
                                       _pruner(ign, args.ignore_unfixed, counts), signer)
        shown = _select(v, args.all, sevs)
        from agent.imagegate.source import ContainerdSource

        namespace = args.namespace if isinstance(src, ContainerdSource) else ""
        hidden = len(v.findings) - len(shown) + counts["ignored"] + counts["unfixed"]
        _write(_render(fmt, v, report, shown, hidden, namespace), args.output)
    except PolicyError as e:
        print(f"nodewarden scan: policy rejected: {e}", file=sys.stderr)
        return 2
    except (ImageError, SourceError, OsvError, IgnoreError, ValueError, OSError) as e:
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
    if counts["ignored"] or counts["unfixed"]:
        print(f"nodewarden scan: left out {counts['ignored']} ignored and {counts['unfixed']} unfixed finding(s)",
              file=sys.stderr)
    if v.error:
        return 2 if v.verdict != "block" else 1
    if args.exit_code is not None:
        return args.exit_code if shown else 0
    return 1 if v.verdict == "block" else 0
