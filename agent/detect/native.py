"""The compiled pre-condition of the rules (agent/detect/_prefilter.c): built by `make setup`
(scripts/setup.sh runs `python -m agent.detect.native_build`), used when present, else the Python
code agent/detect/index.py generates from the same spec (the reference: both keep the same events,
tests/unit/test_detect_prefilter.py).

The shared object goes under build/native/ (gitignored), named with this interpreter's extension
suffix, so a venv of another Python version never loads it. `NODEWARDEN_NATIVE=0` turns it off with
the other compiled code (agent/sensors/native.py); `STATUS` says which is in use and why.
"""

from __future__ import annotations

import os

from agent import cext

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_prefilter.c")
NAME = "_nwrules"
OUT_DIR = cext.OUT_DIR


def path(out_dir: str = OUT_DIR) -> str:
    return cext.ext_path(NAME, out_dir)


def build(cc: str = "gcc", out_dir: str = OUT_DIR, sanitize: bool = False) -> str:
    """Compile _prefilter.c for this interpreter; returns the shared object's path. RuntimeError
    (one line: the compiler's first error) when it does not compile. `sanitize`: with AddressSanitizer
    and UBSan (for tests/unit/test_detect_prefilter.py's run under ASan; give it an out_dir of its own)."""
    return cext.build(SOURCE, NAME, out_dir, cc=cc, sanitize=sanitize)


def load(so: str):
    """The module in `so`, or ImportError."""
    return cext.load(NAME, so)


def _load():
    global STATUS
    if os.environ.get("NODEWARDEN_NATIVE", "1") == "0":
        STATUS = "python (NODEWARDEN_NATIVE=0)"
        return None
    so = path()
    why = cext.unusable(so, SOURCE)
    if why:
        STATUS = f"python ({why})"
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
