"""The compiled pre-condition of the rules (agent/detect/_prefilter.c): built by `make setup`
(scripts/setup.sh runs `python -m agent.detect.native_build`), used when present, else the Python
code agent/detect/index.py generates from the same spec (the reference: both keep the same events,
tests/unit/test_detect_prefilter.py).

The shared object goes under build/native/ (gitignored), named with this interpreter's extension
suffix, so a venv of another Python version never loads it. `NODEWARDEN_NATIVE=0` turns it off with
the other compiled code (agent/sensors/native.py); `STATUS` says which is in use and why.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import subprocess
import sysconfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_prefilter.c")
NAME = "_nwrules"
OUT_DIR = os.path.join(ROOT, "build", "native")


def path(out_dir: str = OUT_DIR) -> str:
    return os.path.join(out_dir, NAME + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))


# A sanitizer build (for tests/unit/test_detect_prefilter.py's run under ASan) never goes where the agent looks.
SANITIZE_FLAGS = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                  "-fno-sanitize-recover=undefined"]


def build(cc: str = "gcc", out_dir: str = OUT_DIR, sanitize: bool = False) -> str:
    """Compile _prefilter.c for this interpreter; returns the shared object's path. RuntimeError
    (one line: the compiler's first error) when it does not compile. `sanitize`: with AddressSanitizer
    and UBSan (its object needs libasan preloaded; give it an out_dir of its own)."""
    os.makedirs(out_dir, exist_ok=True)
    out = path(out_dir)
    tmp = f"{out}.{os.getpid()}.tmp"
    cmd = [cc, *(SANITIZE_FLAGS if sanitize else ["-O2"]), "-shared", "-fPIC", "-Wall", "-Werror",
           "-fno-strict-aliasing", f"-I{sysconfig.get_paths()['include']}", SOURCE, "-o", tmp]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise RuntimeError(f"cannot run {cc}: {e.strerror}") from None
    if done.returncode != 0:
        first = next((ln for ln in done.stderr.splitlines() if "error" in ln), done.stderr.strip()[:300])
        raise RuntimeError(f"{os.path.basename(SOURCE)} does not compile: {first}")
    os.replace(tmp, out)  # a running agent keeps the object it mapped; the next start takes the new one
    return out


def load(so: str):
    """The module in `so`, or ImportError."""
    loader = importlib.machinery.ExtensionFileLoader(NAME, so)
    spec = importlib.util.spec_from_file_location(NAME, so, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def _load():
    global STATUS
    if os.environ.get("NODEWARDEN_NATIVE", "1") == "0":
        STATUS = "python (NODEWARDEN_NATIVE=0)"
        return None
    so = path()
    if not os.path.exists(so):
        STATUS = f"python ({so} not built: make setup)"
        return None
    if os.path.getmtime(so) < os.path.getmtime(SOURCE):
        STATUS = f"python ({so} is older than {os.path.basename(SOURCE)}: make setup)"
        return None
    try:
        mod = load(so)
    except ImportError as e:
        STATUS = f"python (cannot load {so}: {e})"
        return None
    STATUS = "compiled"
    return mod


STATUS = ""
MODULE = _load()
