"""Image scans of OCI layouts the tests build: each kind of finding, the file view across layers,
compression formats, caching and its invalidation, user rules and hash lists."""

import tarfile

import pytest

from agent.imagegate import osv
from agent.imagegate.cache import Cache
from agent.imagegate.config import ImageGateConfig
from agent.imagegate.decide import decide
from agent.imagegate.model import Severity
from agent.imagegate.scanner import ImageScanner
from agent.imagegate.source import open_path
from agent.policy.model import ImagePolicy
from tests.unit.imagegate_helpers import (
    DPKG_STATUS,
    EICAR,
    MINER,
    MINER_CONFIG,
    OS_RELEASE_DEBIAN,
    PRIVATE_KEY,
    REVSHELL,
    WEBSHELL,
    busybox_layer,
    entry,
    osv_advisory,
    raw_tar,
    write_layout,
    write_osv_dir,
)

BASE = busybox_layer()


@pytest.fixture(scope="module")
def scanner(tmp_path_factory):
    db = write_osv_dir(
        tmp_path_factory.mktemp("osv"),
        [osv_advisory("DSA-5678-1", "Debian:12", "openssl", "3.0.13-1~deb12u1", "critical")],
    )
    return ImageScanner(ImageGateConfig(cache_path="", advisory_db=str(db)))


def scan(scanner, tmp_path, files=None, layers=None, spec=None, **kw):
    built = write_layout(tmp_path, layers if layers is not None else [BASE, raw_tar(files or [])], **kw)
    rep = scanner.scan(open_path(str(built.path)), spec)
    return rep, decide(rep, ImagePolicy())


def rules(rep):
    return {(f.category, f.rule, f.path, f.severity) for f in rep.findings}


def test_clean_image_allowed_without_findings(scanner, tmp_path):
    rep, v = scan(scanner, tmp_path, layers=[BASE])
    assert rep.findings == [] and v.verdict == "allow" and v.reason == "no findings"


@pytest.mark.parametrize(
    "path,data,mode,category,rule,severity,verdict",
    [
        ("opt/eicar.com", EICAR, 0o644, "malware", "yara:EICAR_Test_File", Severity.HIGH, "block"),
        ("usr/local/bin/kworker", MINER, 0o755, "malware", "yara:CoinMiner_XMRig_Binary", Severity.CRITICAL, "block"),
        ("etc/miner/config.json", MINER_CONFIG, 0o644, "malware", "yara:CoinMiner_Config", Severity.HIGH, "block"),
        ("var/www/html/up.php", WEBSHELL, 0o644, "malware", "webshell:php.request-to-exec", Severity.CRITICAL, "block"),
        ("usr/local/bin/start.sh", REVSHELL, 0o755, "malware", "yara:ReverseShell_OneLiner", Severity.HIGH, "block"),
        ("root/.ssh/id_ed25519", PRIVATE_KEY, 0o600, "secret", "yara:Secret_Private_Key", Severity.HIGH, "alert"),
    ],
)
def test_each_detection(scanner, tmp_path, path, data, mode, category, rule, severity, verdict):
    rep, v = scan(scanner, tmp_path, [entry(path, data, mode=mode)])
    assert (category, rule, "/" + path, severity) in rules(rep)
    assert v.verdict == verdict
    top = v.findings[0]
    assert top.finding.category == category and top.decided_by.startswith(f"categories.{category}.")


def test_secret_never_copied(scanner, tmp_path):
    key = b"AKIAABCDEFGHIJKLMNOP\naws_secret_access_key = " + b"s" * 40 + b"\n"
    rep, _ = scan(
        scanner,
        tmp_path,
        [entry("app/.env", key), entry("etc/shadow", b"root:$6$salt$hashhash:19000:0:99999:7:::\nbin:*:1::::::\n")],
    )
    kinds = {f.rule for f in rep.findings if f.category == "secret"}
    assert {"yara:Secret_AWS_Access_Key", "shadow-password-hash"} <= kinds
    dump = repr([f.to_dict() for f in rep.findings])
    assert "AKIAABCDEFGHIJKLMNOP" not in dump and "$6$salt" not in dump and "sss" not in dump


def test_known_bad_hash(scanner, tmp_path):
    rep, v = scan(scanner, tmp_path, [entry("tmp/e", EICAR)])
    assert ("malware", "hash:known-bad.sha256", "/tmp/e", Severity.CRITICAL) in rules(rep)


def test_vulnerable_package(scanner, tmp_path):
    rep, v = scan(
        scanner, tmp_path, [entry("var/lib/dpkg/status", DPKG_STATUS), entry("etc/os-release", OS_RELEASE_DEBIAN)]
    )
    vulns = [f for f in rep.findings if f.category == "vulnerability"]
    assert {(f.package, f.advisory, f.installed, f.fixed, f.severity) for f in vulns} == {
        ("openssl", "DSA-5678-1", "3.0.11-1~deb12u1", "3.0.13-1~deb12u1", Severity.CRITICAL),
        ("libssl3", "DSA-5678-1", "3.0.11-1~deb12u1", "3.0.13-1~deb12u1", Severity.CRITICAL),
    }
    assert v.verdict == "block" and "DSA-5678-1" in v.reason
    assert {p.name for p in rep.packages} == {"openssl", "libssl3", "zlib1g"}
    assert {p.ecosystem for p in rep.packages} == {"Debian:12"}


def test_other_inventories(scanner, tmp_path):
    rep, _ = scan(
        scanner,
        tmp_path,
        [
            entry("lib/apk/db/installed", b"P:musl\nV:1.2.4-r2\no:musl\n\nP:busybox\nV:1.36.1-r15\n"),
            entry(
                "usr/lib/python3.11/site-packages/Jinja2-3.1.2.dist-info/METADATA", b"Name: Jinja2\nVersion: 3.1.2\n\n"
            ),
            entry("app/node_modules/@scope/pkg/package.json", b'{"name": "@scope/pkg", "version": "1.0.0"}'),
            entry("app/node_modules/lodash/package.json", b'{"name": "lodash", "version": "4.17.20"}'),
            entry("app/node_modules/lodash/test/package.json", b'{"name": "fixture", "version": "0"}'),
        ],
    )
    got = {(p.ecosystem, p.name, p.version) for p in rep.packages}
    assert got == {
        ("Alpine", "musl", "1.2.4-r2"),
        ("Alpine", "busybox", "1.36.1-r15"),
        ("PyPI", "Jinja2", "3.1.2"),
        ("npm", "@scope/pkg", "1.0.0"),
        ("npm", "lodash", "4.17.20"),
    }


def test_whiteouts_and_shadowing(scanner, tmp_path):
    lower = raw_tar(
        [
            entry("opt/eicar.com", EICAR),
            entry("srv/www/a.php", WEBSHELL),
            entry("var/lib/dpkg/status", DPKG_STATUS),
            entry("etc/os-release", OS_RELEASE_DEBIAN),
            entry("home/u/id_rsa", PRIVATE_KEY),
        ]
    )
    upper = raw_tar(
        [
            entry("opt/.wh.eicar.com"),
            entry("srv/www/.wh..wh..opq"),
            entry("var/lib/dpkg/status", b"Package: openssl\nVersion: 3.0.13-1~deb12u1\n"),
            entry("home/u/id_rsa", b"replaced\n"),
        ]
    )
    rep, v = scan(scanner, tmp_path, layers=[BASE, lower, upper])
    assert [f for f in rep.findings if f.category in ("malware", "secret", "vulnerability")] == []
    assert v.verdict == "allow"
    # the same lower layer alone is caught: the findings came from the file view, not luck
    rep2, _ = scan(scanner, tmp_path / "x", layers=[BASE, lower])
    assert {"malware", "secret", "vulnerability"} <= {f.category for f in rep2.findings}


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_compressions(scanner, tmp_path, compression):
    rep, v = scan(scanner, tmp_path, [entry("a/eicar", EICAR)], compression=compression)
    assert any(f.rule == "yara:EICAR_Test_File" for f in rep.findings) and v.verdict == "block"
    assert not any(f.category == "integrity" for f in rep.findings)


def test_tarball_layout(scanner, tmp_path):
    built = write_layout(tmp_path / "img.tar", [BASE, raw_tar([entry("x/shell.php", WEBSHELL)])], as_tar=True)
    rep = scanner.scan(open_path(str(built.path)))
    assert rep.digest == built.digest and any(f.rule == "webshell:php.request-to-exec" for f in rep.findings)


def test_baseline_with_privileged_spec(scanner, tmp_path):
    caps = [
        "CAP_" + c
        for c in (
            "CHOWN DAC_OVERRIDE SYS_ADMIN NET_ADMIN SYS_MODULE SYS_PTRACE SYS_RAWIO SYS_TIME "
            "NET_RAW MKNOD SETUID SETGID KILL AUDIT_WRITE"
        ).split()
    ]
    caps += [f"CAP_X{i}" for i in range(30)]
    spec = {
        "process": {"user": {"uid": 0}, "capabilities": {"bounding": caps}},
        "root": {"path": "rootfs"},
        "linux": {"namespaces": [{"type": "mount"}]},
        "mounts": [
            {"destination": "/host", "type": "bind", "source": "/", "options": ["rbind", "rw"]},
            {
                "destination": "/var/run/docker.sock",
                "type": "bind",
                "source": "/var/run/docker.sock",
                "options": ["bind"],
            },
        ],
    }
    rep, v = scan(scanner, tmp_path, layers=[BASE], spec=spec)
    got = {(f.rule, f.cis.split()[-1]) for f in rep.findings}
    assert {
        ("privileged", "5.4"),
        ("runs-as-root", "4.1"),
        ("host-pid-namespace", "5.15"),
        ("host-network-namespace", "5.9"),
        ("host-ipc-namespace", "5.16"),
        ("sensitive-host-mount", "5.5"),
        ("runtime-socket-mount", "5.31"),
        ("seccomp-unconfined", "5.21"),
        ("no-new-privileges-off", "5.25"),
        ("writable-rootfs", "5.12"),
    } <= got
    assert v.verdict == "alert"  # baseline blocks nothing by default
    strict = ImagePolicy(categories={**ImagePolicy().categories})
    from agent.policy.loader import parse

    strict = parse("categories: {baseline: {alert: medium, block: critical}}\n")
    assert decide(rep, strict).verdict == "block"
    hardened = {
        "process": {
            "user": {"uid": 1000},
            "noNewPrivileges": True,
            "apparmorProfile": "default",
            "capabilities": {"bounding": ["CAP_CHOWN"]},
        },
        "root": {"readonly": True},
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "ipc", "network", "uts", "mount")],
            "seccomp": {"defaultAction": "SCMP_ACT_ERRNO"},
            "resources": {"memory": {"limit": 1 << 28}, "pids": {"limit": 100}},
        },
    }
    rep, v = scan(scanner, tmp_path / "h", layers=[BASE], spec=hardened)
    assert rep.findings == [] and v.verdict == "allow"


def test_cache_hits_persist_and_invalidate(tmp_path):
    db = write_osv_dir(tmp_path / "osv", [osv_advisory("DSA-1", "Debian:12", "zlib", "1:1.3")])
    cfg = ImageGateConfig(cache_path=str(tmp_path / "cache.db"), advisory_db=str(db), refresh_interval=0)
    s = ImageScanner(cfg)
    app = raw_tar([entry("var/lib/dpkg/status", DPKG_STATUS), entry("etc/os-release", OS_RELEASE_DEBIAN)])
    a = write_layout(tmp_path / "a", [BASE, app])
    b = write_layout(tmp_path / "b", [BASE, raw_tar([entry("b", b"other")])], name="nodewarden.test/b:1")
    r1 = s.scan(open_path(str(a.path)))
    assert r1.cache_hit == "none" and r1.bytes_scanned > 0
    r2 = s.scan(open_path(str(a.path)))
    assert r2.cache_hit == "verdict" and r2.bytes_scanned == 0 and r2.findings == r1.findings
    rb = s.scan(open_path(str(b.path)))
    assert rb.cache_hit == "partial"  # base layer from cache, top layer scanned
    s.cache.close()
    s2 = ImageScanner(cfg)  # a restarted agent
    assert s2.scan(open_path(str(a.path))).cache_hit == "verdict"
    assert [f.advisory for f in r1.findings if f.advisory] == ["DSA-1"]
    osv.import_db(str(write_osv_dir(tmp_path / "new", [osv_advisory("DSA-2", "Debian", "openssl", "4")])), str(db))
    assert s2.refresh() is True
    r3 = s2.scan(open_path(str(a.path)))
    assert r3.cache_hit == "layers"  # layers still valid, the image result was recomputed
    assert sorted({f.advisory for f in r3.findings if f.advisory}) == ["DSA-1", "DSA-2"]


def test_corrupt_cache_file_is_moved_aside(tmp_path):
    p = tmp_path / "cache.db"
    p.write_bytes(b"this is not sqlite" * 100)
    c = Cache(str(p))
    assert c.counts() == {"layers": 0, "images": 0}
    assert any(x.name.startswith("cache.db.corrupt-") for x in tmp_path.iterdir())


def test_user_rules_hash_lists_and_broken_rule(tmp_path):
    rd = tmp_path / "rules"
    rd.mkdir()
    (rd / "good.yar").write_text(
        'rule Local_Marker { meta: severity = "medium" strings: $a = "NW-LOCAL-MARKER" condition: $a }\n'
    )
    (rd / "broken.yar").write_text("rule Broken { condition: $nope }\n")
    hl = tmp_path / "bad.sha256"
    data = b"some dropper\n"
    import hashlib

    hl.write_text(f"# list\n{hashlib.sha256(data).hexdigest()}  dropper v2\nnot-a-hash\n")
    s = ImageScanner(ImageGateConfig(cache_path="", advisory_db="", rule_dirs=(str(rd),), hash_lists=(str(hl),)))
    assert any("broken.yar" in e for e in s.rule_errors) and any("not a sha256" in e for e in s.rule_errors)
    built = write_layout(tmp_path / "img", [BASE, raw_tar([entry("x", b"..NW-LOCAL-MARKER.."), entry("y", data)])])
    rep = s.scan(open_path(str(built.path)))
    assert ("malware", "yara:Local_Marker", "/x", Severity.MEDIUM) in rules(rep)
    assert ("malware", "hash:bad.sha256", "/y", Severity.CRITICAL) in rules(rep)


def test_setuid_is_info(scanner, tmp_path):
    rep, v = scan(
        scanner, tmp_path, [entry("usr/bin/su", b"\x7fELF", mode=0o4755), ("dev/mem", tarfile.CHRTYPE, b"", 0o600, "")]
    )
    assert ("integrity", "setuid-file", "/usr/bin/su", Severity.INFO) in rules(rep)
    assert ("integrity", "device-file", "/dev/mem", Severity.HIGH) in rules(rep)
    assert v.verdict == "alert"
