"""Image policy: loading and validation (errors name the line), hot reload, decisions."""

import os
import textwrap
import time

import pytest

from agent.imagegate.decide import decide, pre_decide
from agent.imagegate.model import Finding, ImageReport, Severity
from agent.policy.loader import PolicyError, load, parse
from agent.policy.model import ImagePolicy
from agent.policy.store import PolicyStore

REFERENCE = textwrap.dedent("""\
    categories:            # per category: lowest severity that alerts, lowest that blocks (off = never)
      malware:       {alert: low,    block: high}
      integrity:     {alert: low,    block: critical}
      vulnerability: {alert: medium, block: critical}
      secret:        {alert: medium, block: off}
      baseline:      {alert: medium, block: off}
    scope: {namespaces: {include: ["*"], exclude: [kube-system]}, labels: {}}
    whitelist: {images: ["registry.example.com/base/*"], digests: []}
    on_timeout: {after: 1.5s, action: allow}
""")


def test_reference_policy_parses():
    p = parse(REFERENCE, "p.yaml")
    assert p.categories["malware"].block == Severity.HIGH and p.categories["secret"].block is None
    assert p.namespaces.exclude == ("kube-system",) and p.whitelist_images == ("registry.example.com/base/*",)
    assert (p.timeout, p.timeout_action) == (1.5, "allow")
    assert parse("", "empty.yaml").categories == ImagePolicy().categories


@pytest.mark.parametrize(
    "text,line,needle",
    [
        ("categories:\n  malware: {alert: low, block: hgih}\n", 2, "unknown severity 'hgih'"),
        ("categories:\n  malwre: {alert: low}\n", 2, "unknown key"),
        ("scope:\n  namespaces: {include: [a]}\nscope: {}\n", 3, "duplicate key"),
        ("on_timeout:\n  after: soon\n", 2, "duration"),
        ("on_timeout: {action: maybe}\n", 1, "allow or block"),
        ("whitelist:\n  digests: [sha256:abc]\n", 2, "not a sha256 digest"),
        ("categories:\n  baseline: {alert: high, block: low}\n", 2, "alert must be <= block"),
        ("categories: [1, 2]\n", 1, "expected a mapping"),
        ("categories:\n  malware: {alert: low\n", 3, "invalid YAML"),
    ],
)
def test_errors_name_the_line(text, line, needle):
    with pytest.raises(PolicyError) as e:
        parse(text, "p.yaml")
    first = str(e.value).splitlines()[0]
    assert first.startswith(f"p.yaml:{line}:") and needle in first, first


def test_all_errors_reported_at_once():
    with pytest.raises(PolicyError) as e:
        parse("categories:\n  malware: {alert: bad}\non_timeout: {after: x, action: y}\nbogus: 1\n", "p.yaml")
    assert len(e.value.errors) == 4


def test_reload_atomic_and_bad_file_keeps_old(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(REFERENCE)
    store = PolicyStore(str(path), interval=0.1)
    old = store.current
    path.write_text(REFERENCE.replace("block: high}", "block: hgih}"))
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert store.check() is False
    assert store.current is old and "p" in store.last_error and ":2:" in store.last_error
    path.write_text(REFERENCE.replace("block: high}", "block: medium}"))
    os.utime(path, ns=(time.time_ns() + 2 * 10**9, time.time_ns() + 2 * 10**9))
    assert store.check() is True
    assert store.current.categories["malware"].block == Severity.MEDIUM and store.last_error == ""


def test_reload_thread_picks_up_change(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("on_timeout: {after: 1s}\n")
    store = PolicyStore(str(path), interval=0.1).start()
    try:
        path.write_text("on_timeout: {after: 2500ms}\n")
        os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
        deadline = time.monotonic() + 5
        while store.current.timeout != 2.5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.current.timeout == 2.5
    finally:
        store.stop()


def test_bad_file_at_start_raises(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("categories: {malware: {block: nope}}\n")
    with pytest.raises(PolicyError):
        PolicyStore(str(path))
    with pytest.raises(PolicyError, match="cannot read"):
        load(str(tmp_path / "missing.yaml"))


def _report(*findings):
    return ImageReport(image="reg/app:1", digest="sha256:" + "a" * 64, findings=list(findings))


def test_decide_thresholds_and_rule():
    p = parse(REFERENCE)
    v = decide(_report(Finding("malware", Severity.HIGH, "yara:X", "/bin/x")), p)
    assert v.verdict == "block" and v.findings[0].decided_by == "categories.malware.block >= high"
    v = decide(_report(Finding("secret", Severity.CRITICAL, "yara:K", "/k")), p)
    assert v.verdict == "alert"  # secret: block off
    v = decide(_report(Finding("baseline", Severity.LOW, "no-pids-limit")), p)
    assert v.verdict == "allow" and v.findings[0].action == "none"
    assert decide(_report(), p).verdict == "allow"
    assert decide(ImageReport(image="x", digest="", error="boom"), p).verdict == "allow"


def test_scope_and_whitelist():
    p = parse(REFERENCE + "\n".join(["", "on_error: {action: block}", ""]))
    assert pre_decide(p, "reg/app:1", "", "kube-system").verdict == "allow"
    assert "out of scope" in pre_decide(p, "reg/app:1", "", "kube-system").reason
    assert pre_decide(p, "registry.example.com/base/debian:12", "", "default").verdict == "allow"
    assert pre_decide(p, "reg/app:1", "", "default") is None
    lab = parse("scope: {labels: {include: {team: pay*}, exclude: {nodewarden.io/skip: 'true'}}}\n")
    assert pre_decide(lab, "a", "", "ns", {"team": "payments"}) is None
    assert pre_decide(lab, "a", "", "ns", {"team": "web"}).verdict == "allow"
    assert pre_decide(lab, "a", "", "ns", {"team": "payments", "nodewarden.io/skip": "true"}).verdict == "allow"
    d = "sha256:" + "b" * 64
    wl = parse(f"whitelist: {{digests: ['{d}']}}\n")
    rep = ImageReport(
        image="x", digest="sha256:" + "c" * 64, manifest_digest=d, findings=[Finding("malware", Severity.CRITICAL, "r")]
    )
    assert decide(rep, wl).verdict == "allow"
    assert decide(ImageReport(image="x", digest="", error="boom"), p).verdict == "block"
