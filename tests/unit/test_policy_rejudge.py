"""The policy's `rejudge:` section: what happens to a running container whose image is newly blocked."""

import pytest

from agent.policy.loader import PolicyError, parse


def test_default_alert_and_kill():
    assert parse("categories: {}\n").rejudge_action == "alert"
    assert parse("rejudge: {action: kill}\n").rejudge_action == "kill"


def test_bad_action_is_one_line_with_its_place():
    with pytest.raises(PolicyError, match=r"^<policy>:1:19: rejudge.action: expected alert or kill, got 'stop'$"):
        parse("rejudge: {action: stop}\n")
