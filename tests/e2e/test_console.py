"""The console in a real headless browser (Debian's chromium through selenium + chromedriver), against a real
collector: events go in through its gRPC Ingest, the page reads them through /api/ with the token.

Covered: the token prompt, the list (protection events only, newest first), each filter and the URL that keeps
it, the charts, an alert's detail (lineage, raw JSON), a verdict's findings, the live tail receiving an alert
ingested during the test, marking handled (persisted: a reload shows it, the status filter finds it), export.
Screenshots go to the test's tmp dir; NW_CONSOLE_SCREENSHOT=path also writes the README's one there
(docs/img/console.png), so a plain `make test` leaves the tree clean.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import time
import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlsplit

import grpc
import orjson
import pytest

from collector.server import CollectorConfig, serve
from nwwire.codec import rfc3339, to_event
from nwwire.genproto import load

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"
TOKEN = "console-test-token"
cpb = load("nodewarden.v1.collector_pb2")
gpb = load("nodewarden.v1.collector_pb2_grpc")

selenium = pytest.importorskip("selenium", reason="selenium (PyPI) is not installed: scripts/setup.sh test")
if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
    pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/setup.sh test)",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

NOW = time.time_ns()
MIN = 60 * 10**9

# What the agent would send: alerts, image verdicts, blocks, and kernel events the console leaves out.
# (minutes ago, kind, severity, rule or verdict, node, namespace, image)
_SPEC = [
    (170, "alert", "high", "shell_in_container", "node-a", "shop", "nginx:1.25"),
    (160, "alert", "medium", "sensitive_file_read", "node-a", "shop", "nginx:1.25"),
    (150, "exec", "info", "", "node-a", "shop", "nginx:1.25"),
    (140, "verdict", "critical", "block", "node-b", "payments", "evil/miner:latest"),
    (130, "alert", "critical", "crypto_miner", "node-b", "payments", "evil/miner:latest"),
    (120, "block", "critical", "deny_exec", "node-b", "payments", "evil/miner:latest"),
    (110, "alert", "low", "package_manager", "node-a", "ci", "debian:12"),
    (100, "exec", "info", "", "node-b", "ci", "debian:12"),
    (90, "verdict", "medium", "alert", "node-a", "ci", "redis:7"),
    (80, "alert", "high", "shell_in_container", "node-c", "shop", "redis:7"),
    (70, "alert", "medium", "sensitive_file_read", "node-c", "payments", "postgres:16"),
    (60, "alert", "high", "reverse_shell", "node-a", "shop", "nginx:1.25"),
    (50, "exec", "info", "", "node-c", "shop", "redis:7"),
    (40, "block", "high", "drift", "node-a", "ci", "debian:12"),
    (30, "alert", "low", "package_manager", "node-c", "ci", "debian:12"),
    (20, "verdict", "info", "allow", "node-b", "shop", "nginx:1.25"),
    (10, "alert", "critical", "reverse_shell", "node-b", "payments", "postgres:16"),
    (5, "alert", "high", "shell_in_container", "node-a", "shop", "nginx:1.25"),
]


def _record(i: int, mins: int, kind: str, sev: str, what: str, node: str, ns: str, image: str) -> dict:
    ts = rfc3339(NOW - mins * MIN)
    pod = f"{ns}-{image.split(':')[0].split('/')[-1]}-7d9f"
    cont = {"container.id": f"{i:02d}" + "c0ffee" * 10, "container.name": image.split(":")[0].split("/")[-1],
            "container.image.name": image, "k8s.pod.name": pod, "k8s.namespace.name": ns}
    proc = {"process.pid": 4000 + i, "process.parent_pid": 3000 + i, "process.name": "sh",
            "process.executable.path": "/bin/sh", "process.command_line": f"sh -c marker-{i}",
            "process.parent.executable.path": "/usr/sbin/nginx", "process.parent.command_line": "nginx: worker",
            "process.ancestors.name": ["nginx", "containerd-shim"],
            "process.ancestors.executable.path": ["/usr/sbin/nginx", "/usr/bin/containerd-shim-runc-v2"]}
    if kind == "alert":
        return {"event.name": "alert", "timestamp": ts, "event.severity": sev, **proc, **cont,
                "trigger.name": "process.exec", "process.args": ["sh", "-c", f"marker-{i}"],
                "rule.id": what, "rule.name": what.replace("_", " ").capitalize(),
                "rule.description": f"{what} seen", "threat.tactic.name": ["execution"],
                "threat.technique.id": ["T1059"], "alert.action": "kill" if sev == "critical" else "alert",
                "alert.findings": []}
    if kind == "verdict":
        return {"event.name": "image.verdict", "timestamp": ts, "event.severity": sev, **cont,
                "image.verdict": what, "image.reason": f"{what}: known miner binary" if what == "block"
                else f"{what}: image checked",
                "image.findings": [{"category": "malware", "severity": sev, "rule": "hash.known_bad",
                                    "path": "/usr/bin/xmrig", "detail": "sha256 in the known-bad list",
                                    "action": "block" if what == "block" else "none"}],
                "image.findings_count": 1, "image.scan.duration_ms": 12.5}
    if kind == "block":
        return {"event.name": "enforcement.block", "timestamp": ts, "event.severity": sev, **proc, **cont,
                "process.args": ["xmrig"], "enforcement.point": "kernel.exec", "enforcement.action": "kill",
                "enforcement.reason": f"{what}: /usr/bin/xmrig", "rule.name": what, "rule.category": what}
    return {"event.name": "process.exec", "timestamp": ts, **proc, **cont, "process.args": ["sh"]}


def _events(spec, start_seq: int = 1, boot: str = "boot-1"):
    out = []
    for n, s in enumerate(spec):
        ev = to_event(_record(start_seq + n, *s))
        ev.node, ev.agent_id, ev.boot_id, ev.seq = s[4], f"agent-{s[4]}", boot, start_seq + n
        out.append(ev)
    return out


def _ingest(address: str, events) -> None:
    """Through the real gRPC Ingest, as an agent does: hello, one batch, its ack."""
    with grpc.insecure_channel(address) as ch:
        stub = gpb.CollectorStub(ch)
        reqs = [cpb.IngestRequest(hello=cpb.Hello(agent_id="test", node="test")),
                cpb.IngestRequest(batch=cpb.Batch(batch_id=1, events=events))]
        acks = [r for r in stub.Ingest(iter(reqs), metadata=[("authorization", f"Bearer {TOKEN}")], timeout=30)
                if r.WhichOneof("msg") == "ack"]
        assert acks and acks[0].ack.stored == len(events)


# ids: one batch into a fresh store, so the n-th event is row n
PROTECTION = {i + 1: s for i, s in enumerate(_SPEC) if s[1] != "exec"}


def _ids(pred) -> set[int]:
    return {i for i, s in PROTECTION.items() if pred(s)}


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    d = tmp_path_factory.mktemp("console")
    h = serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(d / "events.db"), http_listen="127.0.0.1:0",
                              token=TOKEN))
    try:
        _ingest(h.address, _events(_SPEC))
        yield h
    finally:
        h.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1680,1050",
              f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        yield drv
    finally:
        drv.quit()


def _api(h, path: str, token: str | None = TOKEN, data: bytes | None = None):
    req = urllib.request.Request(h.console.url.rstrip("/") + path, data=data,
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.read()


def _wait(drv, cond, what: str, timeout: float = 10):
    try:
        return WebDriverWait(drv, timeout, poll_frequency=0.1).until(lambda d: cond(d))
    except Exception as e:
        raise AssertionError(f"timed out waiting for {what}") from e


def _rows(drv) -> list[int]:
    return [int(x) for x in drv.execute_script(
        "return [...document.querySelectorAll('#events tbody tr')].map(r => r.dataset.id)")]


def _filter(drv, h, **values):
    """Open the page with nothing in the form but `values`, as a user types them, and Apply."""
    drv.get(h.console.url)
    _wait(drv, lambda d: d.execute_script("return document.querySelectorAll('#events tbody tr').length") > 0,
          "the unfiltered list")
    for name, val in values.items():
        el = drv.find_element(By.NAME, name)
        if el.tag_name == "select":
            drv.execute_script("arguments[0].value = arguments[1]", el, val)
        else:
            el.clear()
            el.send_keys(val)
    if values:  # with none, the page as loaded is the view (a second load would redraw the rows under us)
        drv.find_element(By.ID, "apply").click()


def test_api_needs_the_token_and_refuses_bad_input(collector):
    with pytest.raises(urllib.error.HTTPError) as e:
        _api(collector, "/api/events", token=None)
    assert e.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as e:
        _api(collector, "/api/events", token="wrong")
    assert e.value.code == 401
    for bad in ("/api/events?severity=loud", "/api/events?since=yesterday", "/api/events?before=x",
                "/api/export?format=xml", "/api/events/12x"):
        with pytest.raises(urllib.error.HTTPError) as e:
            _api(collector, bad)
        assert e.value.code == 400 and "error" in orjson.loads(e.value.read()), bad
    for body in (b"{", b'{"status": "done"}', b"[]", b'{"status": "handled", "note": 7}'):
        with pytest.raises(urllib.error.HTTPError) as e:
            _api(collector, "/api/events/1/status", data=body)
        assert e.value.code == 400, body
    with pytest.raises(urllib.error.HTTPError) as e:
        _api(collector, "/api/events/999999/status", data=b'{"status": "handled"}')
    assert e.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as e:
        _api(collector, "/api/events?" + "&".join(f"node=n{i}" for i in range(300)))
    assert e.value.code == 400
    code, body = _api(collector, "/api/events?limit=3")
    got = orjson.loads(body)
    assert code == 200 and [s["id"] for s in got["events"]] == sorted(PROTECTION, reverse=True)[:3]
    assert got["next"]  # more after the first page
    nxt = orjson.loads(_api(collector, f"/api/events?limit=100&before={got['next']}")[1])
    assert [s["id"] for s in nxt["events"]] == sorted(PROTECTION, reverse=True)[3:]
    assert collector.console.stats["console_unauthorized"] >= 2


def test_console_in_a_browser(collector, browser, tmp_path):
    drv, h = browser, collector
    shots = tmp_path / "shots"
    shots.mkdir()

    # The token prompt, then the list: protection events only, newest first.
    drv.get(h.console.url)
    _wait(drv, lambda d: d.find_element(By.ID, "token-dialog").get_attribute("open") is not None, "the token prompt")
    drv.save_screenshot(str(shots / "01-token.png"))
    drv.find_element(By.ID, "token-input").send_keys(TOKEN)
    drv.find_element(By.ID, "token-save").click()
    want = sorted(PROTECTION, reverse=True)
    _wait(drv, lambda d: _rows(d) == want, "the list of protection events")
    first = drv.find_element(By.CSS_SELECTOR, "#events tbody tr")
    assert first.find_element(By.CSS_SELECTOR, "td.kind").text == "alert"
    assert first.find_element(By.CSS_SELECTOR, "td.reason").text == "Shell in container"
    assert first.find_element(By.CSS_SELECTOR, "td.where").text.startswith("shop/shop-nginx")
    assert first.find_element(By.CSS_SELECTOR, "td.image").text == "nginx:1.25"
    block = drv.find_element(By.CSS_SELECTOR, "#events tr[data-id='6']")
    assert [block.find_element(By.CSS_SELECTOR, f"td.{c}").text for c in ("kind", "action", "severity")] == \
        ["block", "kill", "critical"]
    verdict = drv.find_element(By.CSS_SELECTOR, "#events tr[data-id='4']")
    assert verdict.find_element(By.CSS_SELECTOR, "td.action").text == "block"

    # Charts: counts by severity, rule, namespace and image, as SVG bars with a legend.
    _wait(drv, lambda d: d.execute_script("return document.querySelectorAll('#chart-severity rect').length") > 0,
          "the severity chart")
    legend = drv.execute_script("return Object.fromEntries([...document.querySelectorAll('#chart-rule .legend "
                                "span')].map(s => [s.dataset.key, s.textContent]))")
    assert legend["shell_in_container"] == "shell_in_container 3"
    sev_total = drv.execute_script("return [...document.querySelectorAll('#chart-severity rect')]"
                                   ".reduce((a, r) => a + Number(r.dataset.count), 0)")
    assert sev_total == len(PROTECTION)
    assert "payments" in drv.find_element(By.CSS_SELECTOR, "#chart-namespace .legend").text
    assert "evil/miner:latest" in drv.find_element(By.CSS_SELECTOR, "#chart-image .legend").text
    drv.save_screenshot(str(shots / "02-list.png"))

    # Each filter: the rows shown, and the URL that keeps it (a reload or a shared link shows the same).
    since = rfc3339(NOW - 95 * MIN).replace(".000000000Z", "Z").split(".")[0] + "Z"
    until = rfc3339(NOW - 35 * MIN).split(".")[0] + "Z"
    cases = [
        ({"severity": "critical"}, _ids(lambda s: s[2] == "critical")),
        ({"kind": "verdict"}, _ids(lambda s: s[1] == "verdict")),
        ({"kind": "block"}, _ids(lambda s: s[1] == "block")),
        ({"rule": "reverse_shell"}, _ids(lambda s: s[1] == "alert" and s[3] == "reverse_shell")),
        ({"node": "node-c"}, _ids(lambda s: s[4] == "node-c")),
        ({"namespace": "payments"}, _ids(lambda s: s[5] == "payments")),
        ({"image": "redis"}, _ids(lambda s: "redis" in s[6])),
        ({"text": "marker-14"}, {14}),
        ({"since": since, "until": until}, _ids(lambda s: 35 < s[0] <= 95)),
        ({"severity": "high", "namespace": "shop"}, _ids(lambda s: s[5] == "shop" and s[2] in ("high", "critical"))),
    ]
    for values, expect in cases:
        assert expect, values
        _filter(drv, h, **values)
        _wait(drv, lambda d, e=expect: set(_rows(d)) == e, f"the rows of filter {values} ({sorted(expect)})")
        q = parse_qs(urlsplit(drv.current_url).query)
        assert {k: v[0] for k, v in q.items()} == values
        drv.refresh()  # the URL alone brings the same view back
        _wait(drv, lambda d, e=expect: set(_rows(d)) == e, f"the rows of filter {values} after a reload")
        assert drv.find_element(By.NAME, next(iter(values))).get_attribute("value") == next(iter(values.values()))
    drv.save_screenshot(str(shots / "03-filtered.png"))

    # An alert's detail: process lineage and raw JSON; then a verdict's findings.
    _filter(drv, h)
    _wait(drv, lambda d: _rows(d) == want, "the whole list again")
    drv.find_element(By.CSS_SELECTOR, "#events tr[data-id='12']").click()
    _wait(drv, lambda d: d.find_element(By.ID, "detail").is_displayed() and
          d.find_element(By.ID, "detail").get_attribute("data-id") == "12", "the detail of event 12")
    _wait(drv, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#lineage li")) == 3, "the lineage")
    roles = [li.get_attribute("data-role") for li in drv.find_elements(By.CSS_SELECTOR, "#lineage li")]
    assert roles == ["process", "parent", "ancestor"]
    lineage = drv.find_element(By.ID, "lineage").text
    assert "sh -c marker-12" in lineage and "/usr/sbin/nginx" in lineage and "containerd-shim-runc-v2" in lineage
    raw = orjson.loads(drv.find_element(By.ID, "raw").text)
    assert raw["rule.id"] == "reverse_shell" and raw["host.name"] == "node-a" and raw["seq"] == 12
    assert "event=12" in drv.current_url
    drv.find_element(By.CSS_SELECTOR, "#events tr[data-id='4']").click()
    _wait(drv, lambda d: "hash.known_bad" in d.find_element(By.ID, "findings").text, "the verdict's findings")
    assert "/usr/bin/xmrig" in drv.find_element(By.ID, "findings").text
    assert drv.find_element(By.ID, "lineage").text.startswith("no process")

    # Marking handled: stored by the collector, so a reload (and the status filter) shows it.
    drv.find_element(By.CSS_SELECTOR, "#events tr[data-id='12']").click()
    _wait(drv, lambda d: d.find_element(By.ID, "detail").get_attribute("data-id") == "12", "event 12 again")
    drv.find_element(By.ID, "mark-handled").click()
    _wait(drv, lambda d: d.find_element(By.ID, "detail-status").text == "handled", "the status change")
    drv.refresh()
    _wait(drv, lambda d: d.execute_script(
        "const c = document.querySelector(\"#events tr[data-id='12'] td.status\"); return c && c.textContent")
        == "handled", "the handled status after a reload")
    _wait(drv, lambda d: d.find_element(By.ID, "detail-status").text == "handled", "the reopened detail")
    _filter(drv, h, status="handled")
    _wait(drv, lambda d: _rows(d) == [12], "the handled filter")
    _filter(drv, h, status="unhandled")
    _wait(drv, lambda d: set(_rows(d)) == set(PROTECTION) - {12}, "the unhandled filter")

    # The live tail: an alert ingested now through gRPC appears at the top without a reload.
    _filter(drv, h)
    _wait(drv, lambda d: _rows(d) == want, "the whole list before the tail")
    drv.find_element(By.ID, "tail-toggle").click()
    _wait(drv, lambda d: "live tail on" in d.find_element(By.ID, "tail-state").text, "the tail to open")
    _wait(drv, lambda d: h.hub.count() >= 1, "the tail's subscription")
    new = [(0, "alert", "critical", "crypto_miner", "node-c", "payments", "evil/miner:latest")]
    _ingest(h.address, _events(new, start_seq=100, boot="boot-2"))
    new_id = len(_SPEC) + 1
    _wait(drv, lambda d: _rows(d)[:1] == [new_id], "the tailed alert at the top of the list")
    top = drv.find_element(By.CSS_SELECTOR, "#events tbody tr")
    assert "new" in top.get_attribute("class")
    assert top.find_element(By.CSS_SELECTOR, "td.reason").text == "Crypto miner"
    assert top.find_element(By.CSS_SELECTOR, "td.node").text == "node-c"
    assert "1 new" in drv.find_element(By.ID, "tail-state").text
    drv.find_element(By.CSS_SELECTOR, "#events tr[data-id='6']").click()
    _wait(drv, lambda d: d.find_element(By.ID, "detail").get_attribute("data-id") == "6", "the block's detail")
    _wait(drv, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#lineage li")) == 3, "the block's lineage")
    time.sleep(0.3)  # the new row's highlight fades in the screenshot
    drv.save_screenshot(str(shots / "04-tail-detail.png"))
    readme_shot = os.environ.get("NW_CONSOLE_SCREENSHOT")
    if readme_shot:
        shutil.copyfile(shots / "04-tail-detail.png", readme_shot)
    drv.find_element(By.ID, "tail-toggle").click()
    _wait(drv, lambda d: "off" in d.find_element(By.ID, "tail-state").text, "the tail to close")
    _wait(drv, lambda d: h.hub.count() == 0, "the tail's subscription to end", timeout=15)

    # Export of the current filter: the browser's download, and the same through the API.
    _filter(drv, h, namespace="payments")
    _wait(drv, lambda d: set(_rows(d)) == _ids(lambda s: s[5] == "payments") | {new_id}, "the payments list")
    drv.find_element(By.ID, "export-csv").click()
    rows = list(csv.DictReader(io.StringIO(_api(h, "/api/export?format=csv&namespace=payments")[1].decode())))
    assert {int(r["id"]) for r in rows} == _ids(lambda s: s[5] == "payments") | {new_id}
    recs = orjson.loads(_api(h, "/api/export?format=json&namespace=payments&kind=block")[1])
    assert [r["enforcement.action"] for r in recs] == ["kill"] and recs[0]["k8s.namespace.name"] == "payments"
    assert drv.find_element(By.ID, "error").text == ""
    # No script errors along the way (the refused first call, before the token, is the one expected 401).
    errors = [e["message"] for e in drv.get_log("browser") if e["level"] == "SEVERE" and "401" not in e["message"]]
    assert errors == []
    assert sorted(p.name for p in shots.iterdir()) == ["01-token.png", "02-list.png", "03-filtered.png",
                                                       "04-tail-detail.png"]


from tests.harness.pg import pg_url, postgres  # noqa: E402, F401  (fixtures: a private PostgreSQL)


def test_console_api_on_postgresql(pg_url, tmp_path):  # noqa: F811
    """The same API over the PostgreSQL store: list newest first, a filter, the detail, a status change."""
    h = serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / "events.db"), store=pg_url,
                              http_listen="127.0.0.1:0", token=TOKEN))
    try:
        _ingest(h.address, _events(_SPEC))
        got = orjson.loads(_api(h, "/api/events?limit=100")[1])["events"]
        newest_first = [s for s in sorted(_SPEC, key=lambda s: s[0]) if s[1] != "exec"]
        assert [(e["kind"], e["node"], e["namespace"]) for e in got] == [(s[1], s[4], s[5]) for s in newest_first]
        pay = orjson.loads(_api(h, "/api/events?namespace=payments&severity=critical")[1])["events"]
        assert len(pay) == sum(1 for s in newest_first if s[5] == "payments" and s[2] == "critical")
        d = orjson.loads(_api(h, f"/api/events/{got[0]['id']}")[1])
        assert d["record"]["rule.id"] == "shell_in_container" and len(d["lineage"]) == 3
        _api(h, f"/api/events/{got[0]['id']}/status", data=b'{"status": "ignored"}')
        assert orjson.loads(_api(h, f"/api/events/{got[0]['id']}")[1])["status"]["status"] == "ignored"
        counts = orjson.loads(_api(h, "/api/counts")[1])
        assert sum(counts["total"]) == len(newest_first)
    finally:
        h.stop()


def test_console_tls_and_cli(tmp_path):
    """TLS with the collector's certificate; `nodewarden collector --http` starts it and prints its URL;
    a bad address is one line; no host means loopback."""
    import ssl
    import subprocess
    import sys

    from collector.console import parse_listen
    from tests.e2e.test_transport_auth import _cert, _write

    assert parse_listen(":7480") == ("127.0.0.1", 7480)
    ca_key, ca = _cert("console-test-ca", ca=True)
    ca_pem = _write(tmp_path, "ca", ca_key, ca)[0]
    crt, key = _write(tmp_path, "server", *_cert("localhost", ca_key, ca.subject, server=True))
    h = serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / "tls.db"), http_listen="127.0.0.1:0",
                              tls_cert=crt, tls_key=key, token=TOKEN))
    try:
        assert h.console.url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=ca_pem)
        req = urllib.request.Request(h.console.url + "api/events", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            assert r.status == 200 and orjson.loads(r.read())["events"] == []
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(h.console.url.replace("https:", "http:") + "healthz", timeout=5)
    finally:
        h.stop()

    bad = subprocess.run([sys.executable, "-m", "agent.cli", "collector", "--listen", "127.0.0.1:0", "--db",
                          str(tmp_path / "cli.db"), "--http", "localhost"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "expected HOST:PORT" in bad.stderr and "Traceback" not in bad.stderr
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "collector", "--listen", "127.0.0.1:0", "--db",
                             str(tmp_path / "cli.db"), "--http", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    try:
        url = ""
        deadline = time.monotonic() + 30
        while not url and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("collector: console on "):
                url = line.split()[-1]
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=10) as r:
            assert b"protection events" in r.read()
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
