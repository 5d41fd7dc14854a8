"""Building and loading the agent's C extensions (agent/sensors/_native.c, agent/detect/_prefilter.c).

One place for what both do alike: the compiler's command, where objects go and how they are named, a
sanitizer build, and loading an object by path. What each checks before use (layouts, staleness,
`NODEWARDEN_NATIVE`) stays in its own module, since it differs.

Objects go under build/native/ (gitignored, like every build output), named with this interpreter's
extension suffix, so a venv of another Python version never loads one.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import subprocess
import sysconfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "build", "native")
# A sanitizer build never goes where the agent looks: its objects need libasan preloaded and are several
# times slower.
SANITIZE_DIR = os.path.join(ROOT, "build", "native-asan")
SANITIZE_FLAGS = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                  "-fno-sanitize-recover=undefined"]


def ext_path(name: str, out_dir: str = OUT_DIR) -> str:
    return os.path.join(out_dir, name + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))


def build(source: str, name: str, out_dir: str, cc: str = "gcc", sanitize: bool = False) -> str:
    """Compile `source` for this interpreter into out_dir; returns the shared object's path. RuntimeError
    (one line: the compiler's first error) when it does not compile. `sanitize`: with AddressSanitizer and
    UBSan (its object needs libasan preloaded)."""
    os.makedirs(out_dir, exist_ok=True)
    out = ext_path(name, out_dir)
    tmp = f"{out}.{os.getpid()}.tmp"
    cmd = [cc, *(SANITIZE_FLAGS if sanitize else ["-O2"]), "-shared", "-fPIC", "-Wall", "-Werror",
           "-fno-strict-aliasing", f"-I{sysconfig.get_paths()['include']}", source, "-o", tmp]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise RuntimeError(f"cannot run {cc}: {e.strerror}") from None
    if done.returncode != 0:
        first = next((ln for ln in done.stderr.splitlines() if "error" in ln), done.stderr.strip()[:300])
        raise RuntimeError(f"{os.path.basename(source)} does not compile: {first}")
    os.replace(tmp, out)  # a running agent keeps the object it mapped; the next start takes the new one
    return out


def load(name: str, so: str):
    """The extension module `name` in `so`, or ImportError."""
    loader = importlib.machinery.ExtensionFileLoader(name, so)
    spec = importlib.util.spec_from_file_location(name, so, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def unusable(so: str, source: str) -> str | None:
    """Why `so` cannot serve for `source` (not built, older than the source), or None."""
    if not os.path.exists(so):
        return f"{so} not built: make setup"
    if os.path.getmtime(so) < os.path.getmtime(source):
        return f"{so} is older than {os.path.basename(source)}: make setup"
    return None
