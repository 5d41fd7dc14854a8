"""The policy's `profiles:` section (agent/policy/profiles.py): defaults, durations, overrides (first match
wins, settings left out are the section's), exclude, and each bad value rejected with one line naming the
field and its position; mutations of a valid section never raise anything but PolicyError."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pytest
import yaml

from agent.policy.loader import PolicyError, parse
from agent.policy.model import ImagePolicy
from agent.policy.profiles import ProfilePolicy, WorkloadPolicy, from_dict

SECTION = """\
profiles:
  learn: 1h
  quiet: 10m
  after_learning: monitoring
  overrides:
    - {namespace: "prod-*", after_learning: protecting}
    - {image: "docker.io/library/nginx*", after_learning: monitoring, learn: 30m}
    - {namespace: lab, kind: "", quiet: off, after_learning: learning}
  exclude: [{namespace: kube-system}, {owner: "debug-*", container: shell}]
"""


@dataclass(frozen=True)
class W:  # the fields of agent/detect/profile/key.py Workload (the policy stage may not import detect)
    namespace: str = "default"
    kind: str = "Deployment"
    owner: str = "web"
    container: str = "app"
    image: str = "registry.example.com/web:1"
    image_digest: str = "sha256:" + "a" * 64


def _section(text: str = SECTION) -> ProfilePolicy:
    return parse(text, "policy.yaml").profiles


def test_defaults_without_the_section():
    pol = ImagePolicy().profiles
    assert pol == parse("{}").profiles == parse("profiles:\n").profiles
    assert pol.for_workload(W()) == WorkloadPolicy(3600.0, 600.0, "monitoring")
    assert pol.for_workload(W()) is pol.for_workload(W(namespace="x"))  # one object for the common case


def test_overrides_first_match_wins_and_inherit():
    pol = _section()
    assert pol.for_workload(W()) == WorkloadPolicy(3600.0, 600.0, "monitoring")
    assert pol.for_workload(W(namespace="prod-eu")) == WorkloadPolicy(3600.0, 600.0, "protecting")
    # prod-* comes first: an nginx in prod is protecting with the section's window
    nginx = "docker.io/library/nginx:1.25"
    assert pol.for_workload(W(namespace="prod-eu", image=nginx)) == WorkloadPolicy(3600.0, 600.0, "protecting")
    assert pol.for_workload(W(image=nginx)) == WorkloadPolicy(1800.0, 600.0, "monitoring")
    # every named field must match: kind "" is a container outside a pod
    assert pol.for_workload(W(namespace="lab", kind="")) == WorkloadPolicy(3600.0, math.inf, "learning")
    assert pol.for_workload(W(namespace="lab")).after == "monitoring"


def test_image_glob_matches_the_digest_too():
    pol = from_dict({"overrides": [{"image": "sha256:aaaa*", "after_learning": "protecting"}]})
    assert pol.for_workload(W()).after == "protecting"
    assert pol.for_workload(W(image_digest="sha256:" + "b" * 64)).after == "monitoring"


def test_exclude():
    pol = _section()
    assert pol.for_workload(W(namespace="kube-system")) is None
    assert pol.for_workload(W(owner="debug-7", container="shell")) is None
    assert pol.for_workload(W(owner="debug-7", container="app")) is not None  # both fields must match


@pytest.mark.parametrize("text,secs", [("90", 90.0), ("90s", 90.0), ("10m", 600.0), ("1.5h", 5400.0),
                                       ("2 h", 7200.0), ("0.5", 0.5), ("8760h", 8760 * 3600.0)])
def test_durations(text, secs):
    assert from_dict({"learn": text}).learn_s == secs
    assert from_dict({"quiet": text}).quiet_s == secs
    assert _section(f"profiles: {{learn: {text}}}\n").learn_s == secs  # bare YAML numbers are seconds


@pytest.mark.parametrize("text", ["off", "false", "no", "never", "Off"])
def test_quiet_off_is_never(text):
    assert _section(f"profiles: {{quiet: {text}}}\n").quiet_s == math.inf


# (section text, the field the one error names, words in the message)
BAD = [
    ("profiles: 5", "profiles", "expected a mapping"),
    ("profiles: {lern: 1h}", "profiles", "unknown key 'lern'"),
    ("profiles: {learn: 1d}", "profiles.learn", "expected a duration"),
    ("profiles: {learn: 0}", "profiles.learn", "more than 0"),
    ("profiles: {learn: -5s}", "profiles.learn", "expected a duration"),
    ("profiles: {learn: 8761h}", "profiles.learn", "at most 8760h"),
    ("profiles: {learn: off}", "profiles.learn", "expected a duration"),
    ("profiles: {learn: true}", "profiles.learn", "expected a duration"),
    ("profiles: {learn: .inf}", "profiles.learn", "expected a duration"),
    ("profiles: {learn: [1]}", "profiles.learn", "expected a value"),
    ("profiles: {learn: ~}", "profiles.learn", "expected a duration"),
    ("profiles: {quiet: soon}", "profiles.quiet", "or off"),
    ("profiles: {after_learning: blocking}", "profiles.after_learning", "monitoring, protecting or learning"),
    ("profiles: {after_learning: {a: 1}}", "profiles.after_learning", "expected a value"),
    ("profiles: {overrides: 5}", "profiles.overrides", "expected a list of mappings"),
    ("profiles: {overrides: [5]}", "profiles.overrides[0]", "expected a mapping"),
    ("profiles: {overrides: [~]}", "profiles.overrides[0]", "expected a mapping"),
    ("profiles: {overrides: [{after_learning: protecting}]}", "profiles.overrides[0]", "names no workload"),
    ("profiles: {overrides: [{namespace: a, image: b, node: c}]}", "profiles.overrides[0]", "unknown key 'node'"),
    ("profiles: {overrides: [{namespace: 5}]}", "profiles.overrides[0].namespace", "a string"),
    ("profiles: {overrides: [{namespace: [a]}]}", "profiles.overrides[0].namespace", "a string"),
    ("profiles: {overrides: [{namespace: a, learn: 3x}]}", "profiles.overrides[0].learn", "expected a duration"),
    ("profiles: {overrides: [{namespace: a, quiet: 0}]}", "profiles.overrides[0].quiet", "more than 0"),
    ("profiles: {overrides: [{namespace: a, after_learning: x}]}", "profiles.overrides[0].after_learning",
     "monitoring, protecting or learning"),
    ("profiles: {exclude: {namespace: a}}", "profiles.exclude", "expected a list of mappings"),
    ("profiles: {exclude: [{}]}", "profiles.exclude[0]", "names no workload"),
    ("profiles: {exclude: [{namespace: a, learn: 1h}]}", "profiles.exclude[0]", "unknown key 'learn'"),
    ("profiles: {exclude: [{image: true}]}", "profiles.exclude[0].image", "a string"),
    ("profiles: {learn: 1h, learn: 2h}", "profiles.learn", "duplicate key"),
]


@pytest.mark.parametrize("text,where,words", BAD, ids=[b[0] for b in BAD])
def test_bad_value_is_one_line_naming_the_field(text, where, words):
    with pytest.raises(PolicyError) as e:
        parse(text + "\n", "policy.yaml")
    (line,) = e.value.errors
    assert "\n" not in line and line.startswith("policy.yaml:1:"), line
    assert f": {where}: " in line and words in line, line
    if words == "duplicate key":
        return  # a dict cannot hold one
    with pytest.raises(ValueError) as e2:  # the same validator from data
        from_dict(yaml.safe_load(text)["profiles"])
    assert where in str(e2.value) and "\n" not in str(e2.value)


def test_every_error_is_listed_with_its_line():
    text = "profiles:\n  learn: 1y\n  after_learning: x\n  exclude: [{}]\n"
    with pytest.raises(PolicyError) as e:
        parse(text, "p.yaml")
    assert [x.split(": ")[0] for x in e.value.errors] == ["p.yaml:2:10", "p.yaml:3:19", "p.yaml:4:13"]


_VALUES = [None, True, False, 0, -1, 5, 2**64, 1.5, float("inf"), float("nan"), "", "x", "off", "1h", "\0",
           "a" * 5000, [], [1, [2]], {}, {"a": None}, {1: 2}, {"namespace": "a"}]


def test_mutations_raise_only_policy_error():
    rng = random.Random(13)
    for i in range(800):
        data = yaml.safe_load(SECTION)
        sec = data["profiles"]
        targets = [sec, sec["overrides"], sec["exclude"], *sec["overrides"], *sec["exclude"]]
        for _ in range(rng.randint(1, 3)):
            target = rng.choice(targets)
            if isinstance(target, dict):
                target[rng.choice([*target, "learn", "quiet", "image", "junk"])] = rng.choice(_VALUES)
            else:
                target.append(rng.choice(_VALUES))
        try:
            text = yaml.safe_dump(data)
        except yaml.YAMLError:
            continue
        try:
            pol = parse(text, "m.yaml").profiles
        except PolicyError as e:
            assert all("\n" not in x and x.startswith("m.yaml") for x in e.errors), (i, e.errors)
            continue
        assert isinstance(pol, ProfilePolicy), i
        pol.for_workload(W())
