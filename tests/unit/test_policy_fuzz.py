"""Fuzz the policy loader: whatever a file holds, load/parse returns a policy or raises PolicyError
(each error one line, naming the file), never anything else. Mutations of a valid policy that uses
every section: values of the wrong type, keys deleted or added, huge numbers, deep nesting, aliases,
YAML escapes and tags, random bytes. Seeded, so a failure reproduces; the seed is in the message."""

from __future__ import annotations

import copy
import random

import pytest
import yaml

from agent.policy.loader import PolicyError, load, parse
from agent.policy.model import ImagePolicy

VALID = """\
categories:
  malware:       {alert: low, block: high}
  integrity:     {alert: low, block: critical}
  vulnerability: {alert: medium, block: critical}
  secret:        {alert: medium, block: off}
  baseline:      {alert: medium, block: off}
scope:
  namespaces: {include: ["*"], exclude: [kube-system]}
  labels: {include: {team: pay*}, exclude: {nodewarden.io/skip: "true"}}
whitelist:
  images: ["registry.example.com/base/*"]
  digests: ["sha256:%s"]
on_timeout: {after: 1.5s, action: allow}
on_error: {action: block}
runtime:
  scope: containers
  drift: alert
  action: block
  deny_exec:
    - name: xmrig
    - {path: /tmp/*, scope: both}
    - {name: nc, scope: host}
""" % ("a" * 64)

_VALUES = [None, True, False, 0, -1, 5, 2**64, 10**400 // 10**300, 1.5, float("inf"), "", "x", "off", "\0",
           "\U0010ffff", "a" * 5000, [], [1, [2]], {}, {"a": {"b": None}}, {1: 2}, {(1, 2): 3}]


def _paths(data, prefix=()):
    """Every (container, key) pair in a nested dict/list."""
    if isinstance(data, dict):
        for k, v in data.items():
            yield data, k
            yield from _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield data, i
            yield from _paths(v, prefix + (i,))


def _value(rng: random.Random):
    v = copy.deepcopy(rng.choice(_VALUES))
    for _ in range(rng.choice((0, 0, 0, 1, 40))):  # sometimes nested deep
        v = [v] if rng.random() < 0.5 else {"k": v}
    return v


def _mutate_data(rng: random.Random) -> str:
    data = yaml.safe_load(VALID)
    for _ in range(rng.randint(1, 4)):
        spots = list(_paths(data))
        parent, key = rng.choice(spots)
        op = rng.random()
        if op < 0.5:
            parent[key] = _value(rng)  # a value of another type
        elif op < 0.7:
            del parent[key]  # a key (or list item) deleted
        elif isinstance(parent, dict):
            parent[rng.choice(["bogus", "deny_exec", "scope", "after", 7, None])] = _value(rng)  # one added
        else:
            parent.append(_value(rng))
    try:
        return yaml.dump(data, allow_unicode=rng.random() < 0.5, default_flow_style=rng.choice((None, True, False)))
    except (yaml.YAMLError, ValueError, RecursionError):
        return VALID


_SNIPPETS = ["\0", "\t", "&a ", "*a", "*nope", "!!python/object:os.system ", "!!binary ", "!custom ", "%YAML 1.1\n",
             "---\n", "...\n", '"\\U00110000"', '"\\UFFFFFFFF"', '"\\x"', "'", '"', "{", "}", "[", "]", ":", "- ",
             "? ", "<<: *a\n", "\ufeff", "\ud800", "\x85", "\u2028", "#", "|\n", ">-\n", "1e400", "0x" + "f" * 40,
             "[" * 3000, "{a: " * 2000, "99999999999999999999999999999999"]


def _mutate_text(rng: random.Random) -> str:
    text = VALID
    for _ in range(rng.randint(1, 5)):
        at = rng.randrange(len(text) + 1)
        op = rng.random()
        if op < 0.4:
            text = text[:at] + rng.choice(_SNIPPETS) + text[at:]
        elif op < 0.6:
            text = text[:at] + text[at + rng.randint(1, 20):]  # a piece cut out
        elif op < 0.8:
            text = text[:at] + "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randint(1, 8))) + text[at:]
        else:
            lines = text.splitlines(keepends=True)
            i = rng.randrange(len(lines))
            text = "".join(lines[:i] + [lines[i]] * rng.randint(2, 3) + lines[i + 1:])  # a line repeated
    return text


def _check(outcome: str, seed: int, text) -> None:
    assert outcome == "ok" or outcome.startswith("PolicyError"), f"seed {seed}: {outcome} for {text[:300]!r}"


def _run(fn, *args) -> str:
    try:
        assert isinstance(fn(*args), ImagePolicy)
        return "ok"
    except PolicyError as e:
        name = args[1] if fn is parse else args[0]
        for err in e.errors or ["(no error listed)"]:  # one short line each, naming the file
            assert "\n" not in err and err.startswith(name) and len(err) < len(name) + 400, err[:600]
        return "PolicyError"
    except Exception as e:  # anything else is the defect this test exists for
        return f"{type(e).__name__}: {e}"


@pytest.mark.parametrize("block", range(3))
def test_mutated_data_is_a_policy_or_a_policy_error(block):
    for seed in range(block * 200, (block + 1) * 200):
        text = _mutate_data(random.Random(seed))
        _check(_run(parse, text, "p.yaml"), seed, text)


@pytest.mark.parametrize("block", range(3))
def test_mutated_text_is_a_policy_or_a_policy_error(block):
    for seed in range(block * 200, (block + 1) * 200):
        text = _mutate_text(random.Random(seed))
        _check(_run(parse, text, "p.yaml"), seed, text)


def test_random_bytes_in_the_file(tmp_path):
    path = tmp_path / "p.yaml"
    raw = VALID.encode()
    for seed in range(300):
        rng = random.Random(seed)
        data = bytearray(raw)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.2:
            data = bytearray(rng.randbytes(rng.randint(0, 400)))
        path.write_bytes(bytes(data))
        _check(_run(load, str(path)), seed, bytes(data))


# A billion laughs: 2^30 items if aliases were expanded; the composer shares the nodes instead.
_LAUGHS = "".join(["l0: &l0 [lol, lol]\n"] + [f"l{i}: &l{i} [*l{i - 1}, *l{i - 1}]\n" for i in range(1, 31)]
                  + ["whitelist: {images: *l30}\n"])


@pytest.mark.parametrize("text", [
    "a: &a [*a]\n",  # an alias inside its own anchor
    _LAUGHS,
    "whitelist: {images: &l [a, b]}\nscope: {namespaces: {include: *l, exclude: *l}}\n",
    "categories: " + "[" * 20000 + "]" * 20000 + "\n",
    "on_timeout: {after: " + "9" * 5000 + "s}\n",
    "runtime: {deny_exec: [" + ", ".join(["{name: a}"] * 5000) + "]}\n",
])
def test_hostile_shapes(text):
    outcome = _run(parse, text, "p.yaml")
    assert outcome == "ok" or outcome == "PolicyError", outcome
