"""`nodewarden rules`: check detection rule files without running the agent.

Loads the files the way the agent would (`detect.rules_files`, after the bundled rules unless
--no-bundled), compiles every rule, and says which run here and which cannot, with the reason: the
check a user runs on a rules file (ours or Falco's) before putting it in the policy. Exit 1 when a
file has errors (the agent would refuse that policy), else 0.
"""

from __future__ import annotations

import sys

import orjson

NAME = "rules"
HELP = "check detection rule files (ours or Falco's): which rules run here, which cannot and why"


def add_arguments(p) -> None:
    p.add_argument("files", nargs="*", help="rules files or directories of *.yaml (none: the bundled rules alone)")
    p.add_argument("--no-bundled", action="store_true",
                   help="do not load the bundled rules first (a Falco file brings its own macros)")
    p.add_argument("--list", action="store_true", help="also list every rule that runs")
    p.add_argument("--json", action="store_true", help="one JSON object")


def check(files: list[str], bundled: bool = True) -> dict:
    """{"rules": [{id, name, severity, dialect}], "not_loaded": [{name, why}], "errors": [...]}"""
    from agent.detect.engine import build
    from agent.policy.rules import BUNDLED_DIR, DetectSection, load_files

    ruleset, errors = load_files(([BUNDLED_DIR] if bundled else []) + list(files))
    detector, build_errors = build(DetectSection(ruleset=ruleset))
    errors = errors + build_errors
    return {
        "rules": [{"id": r.spec.id, "name": r.spec.name, "severity": r.spec.severity.label,
                   "dialect": r.spec.dialect} for r in detector.rules],
        "not_loaded": [{"name": n, "why": why} for n, why in detector.result.skipped],
        "errors": errors,
    }


def main(args) -> int:
    import logging

    logging.getLogger("agent.detect").setLevel(logging.ERROR)  # the report below says it once, not the log too
    rep = check(args.files, bundled=not args.no_bundled)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(rep) + b"\n")
        return 1 if rep["errors"] else 0
    for e in rep["errors"]:
        print(f"error: {e}", file=sys.stderr)
    if args.list:
        for r in rep["rules"]:
            print(f"runs        {r['severity']:<8} {r['id']}")
    for s in rep["not_loaded"]:
        print(f"not loaded  {s['name']}: {s['why']}")
    print(f"{len(rep['rules'])} rules run, {len(rep['not_loaded'])} not loaded, {len(rep['errors'])} errors")
    return 1 if rep["errors"] else 0
