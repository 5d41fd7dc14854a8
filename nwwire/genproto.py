"""Generated protobuf/gRPC code: made from proto/ at build time, loaded from nwwire/gen/.

`scripts/setup.sh` runs `python -m nwwire.genproto` after installing the project; a clean
clone that skipped it still works because `load()` generates on first use. The code is
never committed (nwwire/gen/ is gitignored): the .proto files are the only source.

Each top-level directory of proto/ (`nodewarden/`, `containerd/`, ...) is one group, made
by one protoc run into nwwire/gen/<group>/, so a broken file in one group never stops the
others. protoc writes absolute imports (`from nodewarden.v1 import event_pb2`); they are
rewritten to `nwwire.gen.nodewarden.v1` so that nothing has to go on sys.path.
"""

from __future__ import annotations

import fcntl
import importlib
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = _ROOT / "proto"
GEN_DIR = Path(__file__).resolve().parent / "gen"
_PACKAGE = "nwwire.gen"


class GenerateError(RuntimeError):
    """protoc failed, or the generated code is missing and cannot be made."""


def _protos(group: str) -> list[Path]:
    return sorted((PROTO_DIR / group).rglob("*.proto"))


def _stale(group: str) -> bool:
    stamp = GEN_DIR / group / ".stamp"
    if not PROTO_DIR.is_dir():  # installed without sources: use what was shipped
        return not stamp.exists()
    protos = _protos(group)
    if not protos:
        return False
    if not stamp.exists():
        return True
    newest = max(p.stat().st_mtime_ns for p in protos)
    return newest > stamp.stat().st_mtime_ns


def _rewrite_imports(path: Path, groups: set[str]) -> None:
    pattern = re.compile(r"^(from|import) (" + "|".join(map(re.escape, groups)) + r")([.\s])", re.M)
    text = path.read_text()
    new = pattern.sub(lambda m: f"{m.group(1)} {_PACKAGE}.{m.group(2)}{m.group(3)}", text)
    if new != text:
        path.write_text(new)


def _run_protoc(group: str, out: Path) -> None:
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError as e:  # grpcio-tools is a build dependency only
        raise GenerateError(f"grpcio-tools is needed to generate {group}: {e}") from e
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    files = [str(p.relative_to(PROTO_DIR)) for p in _protos(group)]
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}"]
    rc = protoc.main(args + files)
    if rc != 0:
        raise GenerateError(f"protoc failed ({rc}) on {group}: {' '.join(files)}")


def generate(group: str, force: bool = False) -> None:
    """Generate nwwire/gen/<group>/ from proto/<group>/ unless it is up to date."""
    GEN_DIR.mkdir(exist_ok=True)
    (GEN_DIR / "__init__.py").touch()
    # A lock, because parallel test processes may all find the code missing at once.
    with open(GEN_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and not _stale(group):
            return
        if not PROTO_DIR.is_dir():
            raise GenerateError(f"{GEN_DIR / group} is missing and there is no {PROTO_DIR} to make it from")
        groups = {p.name for p in PROTO_DIR.iterdir() if p.is_dir()}
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=GEN_DIR))
        try:
            _run_protoc(group, tmp)
            for d in [tmp / group, *(p for p in (tmp / group).rglob("*") if p.is_dir())]:
                (d / "__init__.py").touch()
            for py in (tmp / group).rglob("*.py"):
                _rewrite_imports(py, groups)
            (tmp / group / ".stamp").touch()
            old = GEN_DIR / group
            if old.exists():
                shutil.rmtree(old)
            os.rename(tmp / group, old)  # atomic: readers see the old tree or the new one
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        importlib.invalidate_caches()


def load(module: str):
    """Import `nwwire.gen.<module>` (e.g. "nodewarden.v1.event_pb2"), generating it if needed."""
    group = module.split(".", 1)[0]
    if _stale(group):
        generate(group)
    return importlib.import_module(f"{_PACKAGE}.{module}")


def main(argv: list[str] | None = None) -> int:
    force = "--force" in (sys.argv[1:] if argv is None else argv)
    if not PROTO_DIR.is_dir():
        print(f"genproto: no {PROTO_DIR}", file=sys.stderr)
        return 1
    rc = 0
    for group in sorted(p.name for p in PROTO_DIR.iterdir() if p.is_dir()):
        try:
            generate(group, force=force)
        except GenerateError as e:
            print(f"genproto: {e}", file=sys.stderr)
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
