"""Diagnostics on stderr: text or JSON, at a level; through the real CLI where the command decides the format."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from agent import diaglog

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_json_lines_with_level_logger_and_a_one_line_traceback(restore_logging):
    buf = io.StringIO()
    diaglog.setup("info", "json", stream=buf)
    log = logging.getLogger("nodewarden.test")
    log.debug("not shown")
    log.warning("spool %s is full", "/var/lib/x")
    try:
        raise OSError("disk gone")
    except OSError:
        log.exception("write failed")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2, lines
    first, second = (orjson.loads(ln) for ln in lines)
    assert first["log.level"] == "warning" and first["log.logger"] == "nodewarden.test"
    assert first["message"] == "spool /var/lib/x is full"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", first["timestamp"])
    assert second["error.type"] == "OSError" and second["error.message"] == "disk gone"
    assert "Traceback" in second["error.stack_trace"]


def test_level_filters_and_text_keeps_the_plain_form(restore_logging):
    buf = io.StringIO()
    diaglog.setup("warning", "text", stream=buf)
    logging.getLogger("nodewarden").info("starting")
    logging.getLogger("nodewarden").error("gone")
    assert buf.getvalue() == "nodewarden: ERROR gone\n"


def test_bad_level_or_format_is_refused():
    with pytest.raises(ValueError, match="log level"):
        diaglog.setup("loud", "text")
    with pytest.raises(ValueError, match="log format"):
        diaglog.setup("info", "xml")


def test_diagnostic_keys_are_not_event_keys():
    """Shippers put stderr and stdout in one index: no event key may sit under the diagnostics' names."""
    keys = re.findall(r'\(key\) = "([^"]+)"', (REPO / "proto/nodewarden/v1/event.proto").read_text())
    assert keys
    clash = [k for k in keys if k == "message" or k.split(".")[0] in ("log", "error")]
    assert not clash, clash


def _run(tmp_path, *flags):
    policy = tmp_path / "policy.yaml"
    policy.write_text("runtime:\n  deny_exec: 5\n")
    env = {**os.environ, "NODEWARDEN_AGENT_STATE_DIR": str(tmp_path / "state")}
    return subprocess.run([sys.executable, "-m", "agent.cli", "run", "--no-containers", "--policy", str(policy),
                           "--duration", "1", *flags], capture_output=True, text=True, timeout=60, env=env, cwd=REPO)


def test_run_with_json_events_says_why_it_stops_in_json(tmp_path):
    """No probes load (the policy is read first), so this needs no root."""
    p = _run(tmp_path, "--json")
    assert p.returncode == 1, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    rec = orjson.loads(lines[0])
    assert rec["log.level"] == "error" and "expected a list" in rec["message"] and str(tmp_path) in rec["message"]


def test_log_format_overrides_the_events_format(tmp_path):
    p = _run(tmp_path, "--json", "--log-format", "text")
    assert p.returncode == 1 and p.stderr.startswith("nodewarden: ERROR "), p.stderr
    p = _run(tmp_path, "--log-format", "json", "--log-level", "error")
    assert p.returncode == 1 and orjson.loads(p.stderr.strip())["log.level"] == "error", p.stderr
