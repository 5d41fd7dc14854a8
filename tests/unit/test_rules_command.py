"""`nodewarden rules`: the bundled set checks clean; a Falco-format file lists what cannot run; a broken
file is an error with its position and exit status 1."""

from __future__ import annotations

import orjson

from agent.cli import main

FALCO = """\
- macro: spawned_process
  condition: (evt.type in (execve, execveat) and evt.dir=<)
- rule: Shell Spawned By Test Parent
  desc: written for this test
  condition: spawned_process and proc.name = bash and proc.pname = nwtestparent
  output: "shell %proc.cmdline"
  priority: WARNING
- rule: Needs A Field We Lack
  desc: written for this test
  condition: spawned_process and proc.nofield = 1
  output: "x"
  priority: ERROR
"""


def _run(capsys, *argv) -> tuple[int, dict]:
    rc = main(["rules", "--json", *argv])
    return rc, orjson.loads(capsys.readouterr().out)


def test_bundled_rules_check_clean(capsys):
    rc, rep = _run(capsys)
    assert rc == 0 and rep["errors"] == [] and rep["not_loaded"] == []
    assert len(rep["rules"]) >= 15 and all(r["dialect"] == "nodewarden" for r in rep["rules"])


def test_falco_file_lists_what_cannot_run(tmp_path, capsys):
    f = tmp_path / "falco.yaml"
    f.write_text(FALCO)
    rc, rep = _run(capsys, "--no-bundled", str(f))
    assert rc == 0
    assert [r["id"] for r in rep["rules"]] == ["Shell Spawned By Test Parent"]
    (skipped,) = rep["not_loaded"]
    assert skipped["name"] == "Needs A Field We Lack" and "proc.nofield" in skipped["why"]


def test_broken_file_is_an_error_with_its_position(tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text("- rule: nw.t\n  condition: process.name ===\n  severity: low\n")
    assert main(["rules", str(f)]) == 1
    captured = capsys.readouterr()
    assert f"{f}:2:" in captured.err and "0 rules run" not in captured.out
