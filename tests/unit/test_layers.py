"""Imports run one way: down the stage list of DESIGN.md, never back up (issue 9).

Every module of agent/, collector/ and nwwire/ is parsed with `ast`; every import in it (module level, in
functions, under `if TYPE_CHECKING:`, `import x` and `from x import y`, relative ones resolved) is
mapped to its layer, and an import of a higher layer, of a sibling stage (detect <-> devices)
or, from the collector, of anything of the agent's, fails with file:line and both layers. The two
share only the wire package (nwwire: generated protobuf code, key tables, codec), which imports
neither. Dynamic imports (importlib) are not seen: only nwwire.genproto uses them, for the
generated code.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The code the agent and the collector share: generated protobuf code and its wire views (issue 9).
WIRE = "nwwire"
GENERATED = ("agent/gen", "nwwire/gen")  # made at build time from proto/, gitignored

# Module prefix -> rank; the longest prefix wins. A module may import a lower rank, its own
# package (the same stage), or nothing else. Equal ranks are sibling stages (detect, devices): neither
# imports the other.
LAYERS: dict[str, int] = {
    "agent": 0,  # the package itself: __version__ only
    "agent.vocab": 0,  # shared vocabulary: imports nothing of ours
    "agent.ratelog": 0,  # the one rate-limited logging helper: imports nothing of ours
    "agent.durable": 0,  # crash-safe file writes (profiles, the OSV index): imports nothing of ours
    "agent.sdnotify": 0,  # systemd readiness (sd_notify over a datagram socket): imports nothing of ours
    "agent.diaglog": 0,  # diagnostics' text/JSON formatter (orjson only): imports nothing of ours
    "agent.ledger": 0,  # the crash ledger (counters in a mapped file): imports nothing of ours
    "agent.cext": 0,  # building and loading the C extensions: imports nothing of ours
    WIRE: 0,  # the shared wire package: imports nothing of the agent's or the collector's
    "agent.events": 1,  # typed records; imports agent.vocab
    "agent.genproto": 1,  # the agent's old name for nwwire.genproto
    "agent.config": 1,  # the Config tree; imports agent.vocab at most
    "agent.kernel": 10,
    "agent.sensors": 20,
    "agent.enrich": 30,
    "agent.policy": 40,
    "agent.imagegate": 50,
    "agent.enforce": 55,  # acts on the image gate's verdicts (DESIGN.md's stage order): may import it
    "agent.detect": 60,
    # Kills on detection rules' matches and compiles their conditions into in-kernel exec entries: above
    # detect, though it lives with the other kill paths in agent/enforce.
    "agent.enforce.detectkill": 65,
    "agent.devices": 60,
    "agent.resources": 60,  # container and host resource samples (issue 16): a sibling of devices
    "agent.outputs": 70,  # may import every stage's record types; no stage imports it
    "agent.pipeline": 80,
    "agent.node": 81,
    "agent.commands": 82,
    "agent.cli": 83,
}
COLLECTOR = "collector"
COLLECTOR_USERS = 81  # the agent runs an embedded collector: node and above may import it

# Known violations in files other parts of issue 9 own, allowed until those parts land:
# (importing file, imported module) -> the owner. The lead removes each entry as its fix lands;
# an entry that no longer matches an import fails test_allow_list_is_current.
ALLOWED: dict[tuple[str, str], str] = {}  # none today: the wire and image-gate parts landed theirs


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str, root: Path) -> bool:
    base = root.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _targets(node: ast.AST, module: str, is_pkg: bool, root: Path) -> list[str]:
    """The modules of ours that one import statement loads (names it pulls from a package resolve
    to the submodule when there is one: `from agent import genproto` is agent.genproto)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        pkg = module.split(".") if is_pkg else module.split(".")[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([base] if base else []))
    out = []
    for a in node.names:
        sub = f"{base}.{a.name}"
        out.append(sub if _is_module(sub, root) else base)
    return list(dict.fromkeys(out))  # one report per module a statement loads


def _ours(name: str) -> bool:
    return name.split(".")[0] in ("agent", COLLECTOR, WIRE)


def _layer(name: str) -> str | None:
    """The longest LAYERS prefix of a module name (or 'collector'), None when unmapped."""
    if name == COLLECTOR or name.startswith(f"{COLLECTOR}."):
        return COLLECTOR
    best = None
    for prefix in LAYERS:
        # "agent" itself names only the package's __init__, not everything under it
        under = name.startswith(prefix + ".") and prefix != "agent"
        if (name == prefix or under) and (best is None or len(prefix) > len(best)):
            best = prefix
    return best


def _wrong_way(src: str, dst: str) -> str:
    """Why the import src-layer -> dst-layer runs the wrong way, or '' when it is fine."""
    if src == dst:
        return ""
    if src == COLLECTOR:
        return "" if dst == WIRE else "the collector shares only the wire package (nwwire) with the agent"
    if dst == COLLECTOR:
        return "" if LAYERS[src] >= COLLECTOR_USERS else "only node, commands and cli may import the collector"
    if LAYERS[dst] < LAYERS[src]:
        return ""
    return "a sibling stage" if LAYERS[dst] == LAYERS[src] else "a higher layer"


def _sources(root: Path):
    for top in ("agent", COLLECTOR, WIRE):
        for path in sorted((root / top).rglob("*.py")):
            if "/".join(path.relative_to(root).parts[:2]) not in GENERATED:
                yield path


def imports(root: Path):
    """(file, line, importing module, imported module) for every import of ours under root."""
    for path in _sources(root):
        rel = path.relative_to(root)
        module = _module_name(path, root)
        for node in ast.walk(ast.parse(path.read_bytes(), str(rel))):
            for target in _targets(node, module, path.name == "__init__.py", root):
                if _ours(target):
                    yield rel.as_posix(), node.lineno, module, target


def violations(root: Path, allowed: dict | None = None) -> tuple[list[str], list[str], set]:
    """(wrong-way imports, unmapped modules, allow-list entries used), each message naming
    file:line and both layers."""
    allowed = ALLOWED if allowed is None else allowed
    wrong, used = [], set()
    unmapped = [f"{p.relative_to(root).as_posix()}: {_module_name(p, root)} is in no layer: add it to LAYERS"
                " in tests/unit/test_layers.py" for p in _sources(root) if _layer(_module_name(p, root)) is None]
    for rel, line, module, target in imports(root):
        src, dst = _layer(module), _layer(target)
        if dst is None:
            unmapped.append(f"{rel}:{line}: {target} is in no layer: add it to LAYERS in tests/unit/test_layers.py")
        if src is None or dst is None:
            continue
        why = _wrong_way(src, dst)
        if not why:
            continue
        if (rel, target) in allowed:
            used.add((rel, target))
            continue
        wrong.append(f"{rel}:{line}: {module} (layer {src}) imports {target} (layer {dst}): {why}")
    return wrong, unmapped, used


def test_imports_run_one_way():
    wrong, _unmapped, _used = violations(ROOT)
    assert not wrong, "imports that run the wrong way:\n" + "\n".join(wrong)


def test_every_module_has_a_layer():
    _wrong, unmapped, _used = violations(ROOT)
    assert not unmapped, "\n".join(sorted(set(unmapped)))


def test_allow_list_is_current():
    _wrong, _unmapped, used = violations(ROOT)
    stale = sorted(set(ALLOWED) - used)
    assert not stale, "allow-list entries no longer needed (remove them): " + ", ".join(map(str, stale))


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for d in ("agent", "agent/sensors", "agent/outputs", "agent/policy", "agent/enforce", "agent/devices",
              "collector", "nwwire"):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
        (tmp_path / d / "__init__.py").touch()
    return tmp_path


def test_checker_sees_every_form_of_a_wrong_import(tmp_path):
    """The checker itself: a wrong import at module level, in a function, relative, as
    `from package import module`, from a sibling, and from the collector, each reported."""
    root = _tree(tmp_path, {
        "agent/outputs/log.py": "",
        "agent/policy/loader.py": "",
        "agent/enforce/kill.py": "",
        "agent/devices/nvml.py": "",
        "agent/sensors/a.py": "import agent.outputs.log\n",
        "agent/sensors/b.py": "def f():\n    from agent.outputs import log\n",
        "agent/sensors/c.py": "from ..policy import loader\n",
        "agent/imagegate/d.py": "from agent.enforce.kill import x\n",
        "agent/detect/f.py": "from agent.devices import nvml\n",
        "collector/e.py": "from agent.outputs.log import y\nfrom nwwire.genproto import load\nimport agent.genproto\n",
        "nwwire/codec.py": "from nwwire import schema\nfrom agent.events import ExecEvent\n",
        "nwwire/schema.py": "",
        "agent/vocab.py": "if True:\n    import agent.events\n",
        "agent/sensors/ok.py": "from agent.events import ExecEvent\nfrom agent.sensors import a\n",
    })
    wrong, unmapped, _ = violations(root, allowed={})
    assert sorted(wrong) == sorted([
        "agent/sensors/a.py:1: agent.sensors.a (layer agent.sensors) imports agent.outputs.log"
        " (layer agent.outputs): a higher layer",
        "agent/sensors/b.py:2: agent.sensors.b (layer agent.sensors) imports agent.outputs.log"
        " (layer agent.outputs): a higher layer",
        "agent/sensors/c.py:1: agent.sensors.c (layer agent.sensors) imports agent.policy.loader"
        " (layer agent.policy): a higher layer",
        "agent/imagegate/d.py:1: agent.imagegate.d (layer agent.imagegate) imports agent.enforce.kill"
        " (layer agent.enforce): a higher layer",
        "agent/detect/f.py:1: agent.detect.f (layer agent.detect) imports agent.devices.nvml"
        " (layer agent.devices): a sibling stage",
        "collector/e.py:1: collector.e (layer collector) imports agent.outputs.log (layer agent.outputs):"
        " the collector shares only the wire package (nwwire) with the agent",
        "collector/e.py:3: collector.e (layer collector) imports agent.genproto (layer agent.genproto):"
        " the collector shares only the wire package (nwwire) with the agent",
        "nwwire/codec.py:2: nwwire.codec (layer nwwire) imports agent.events (layer agent.events): a higher layer",
        "agent/vocab.py:2: agent.vocab (layer agent.vocab) imports agent.events (layer agent.events): a higher layer",
    ])
    assert unmapped == []


def test_checker_names_unmapped_modules_and_honours_the_allow_list(tmp_path):
    root = _tree(tmp_path, {"agent/outputs/log.py": "", "agent/sensors/a.py": "import agent.outputs.log\n",
                            "agent/newstage/x.py": "import agent.events\n"})
    wrong, unmapped, used = violations(root, allowed={("agent/sensors/a.py", "agent.outputs.log"): "someone"})
    assert wrong == []
    assert used == {("agent/sensors/a.py", "agent.outputs.log")}
    assert unmapped == ["agent/newstage/x.py: agent.newstage.x is in no layer: add it to LAYERS in"
                        " tests/unit/test_layers.py"]
