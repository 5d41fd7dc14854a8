"""The OSV advisory database: matching with each ecosystem's ordering, severity, import, index."""

import json
import zipfile

from agent.imagegate import osv
from agent.imagegate.model import Package, Severity
from tests.unit.imagegate_helpers import osv_advisory, write_osv_dir


def _db(tmp_path, advs):
    return osv.AdvisoryDB(str(write_osv_dir(tmp_path / "db", advs)))


def test_debian_match_and_fixed(tmp_path):
    db = _db(tmp_path, [osv_advisory("DSA-1-1", "Debian:12", "openssl", "3.0.13-1~deb12u1", "critical")])
    pkgs = [Package("Debian:12", "libssl3", "3.0.11-1~deb12u1", "/var/lib/dpkg/status", "openssl")]
    (f,) = db.match(pkgs)
    assert (f.category, f.advisory, f.severity) == ("vulnerability", "DSA-1-1", Severity.CRITICAL)
    assert (f.installed, f.fixed, f.package) == ("3.0.11-1~deb12u1", "3.0.13-1~deb12u1", "libssl3")
    # fixed version installed, other release, other package: no finding
    assert not db.match([Package("Debian:12", "openssl", "3.0.13-1~deb12u1", "/s")])
    assert not db.match([Package("Debian:11", "openssl", "1.1.1", "/s")])
    assert not db.match([Package("Debian:12", "zlib1g", "1.0", "/s")])


def test_alpine_pypi_npm(tmp_path):
    db = _db(
        tmp_path,
        [
            osv_advisory("ALPINE-1", "Alpine:v3.19", "busybox", "1.36.1-r16"),
            osv_advisory("GHSA-py", "PyPI", "Jinja2", "3.1.3", "MODERATE"),
            osv_advisory("GHSA-npm", "npm", "lodash", "4.17.21"),
        ],
    )
    found = db.match(
        [
            Package("Alpine:v3.19", "busybox-binsh", "1.36.1-r15", "/lib/apk/db/installed", "busybox"),
            Package("PyPI", "jinja2", "3.1.2", "/x/METADATA"),
            Package("npm", "lodash", "4.17.20", "/n/package.json"),
            Package("npm", "lodash", "4.17.21", "/n2/package.json"),
        ]
    )
    assert sorted(f.advisory for f in found) == ["ALPINE-1", "GHSA-npm", "GHSA-py"]
    assert {f.advisory: f.severity for f in found}["GHSA-py"] == Severity.MEDIUM


def test_last_affected_versions_and_withdrawn(tmp_path):
    adv = osv_advisory("X-1", "PyPI", "pkg", "9")
    adv["affected"][0]["ranges"][0]["events"] = [{"introduced": "1.0"}, {"last_affected": "1.5"}]
    adv["affected"][0]["versions"] = ["0.5"]
    gone = osv_advisory("X-2", "PyPI", "pkg", "9", withdrawn="2024-01-01T00:00:00Z")
    db = _db(tmp_path, [adv, gone])
    hit = lambda v: [f.advisory for f in db.match([Package("PyPI", "pkg", v, "/p")])]  # noqa: E731
    assert hit("0.5") == ["X-1"] and hit("1.2") == ["X-1"] and hit("1.5") == ["X-1"]
    assert hit("0.9") == [] and hit("1.6") == []


def test_cvss_severity():
    assert osv.cvss3_score("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H") == 9.8
    assert osv.cvss3_score("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H") == 10.0
    assert osv.cvss3_score("CVSS:3.1/AV:L/AC:H/PR:L/UI:R/S:U/C:L/I:N/A:N") == 2.2
    assert osv.cvss3_score("garbage") is None
    adv = {"severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"}]}
    assert osv.advisory_severity(adv, {})[0] == Severity.HIGH  # 7.5
    assert osv.advisory_severity({}, {})[0] == Severity.MEDIUM


def test_import_zip_index_and_fingerprint(tmp_path):
    src = tmp_path / "all.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("DSA-9.json", json.dumps(osv_advisory("DSA-9", "Debian:12", "bash", "5.2.15-2+b2")))
        zf.writestr("bad.json", "{not json")
        zf.writestr("noaff.json", json.dumps({"id": "X"}))
    db = tmp_path / "db"
    n, errors = osv.import_db(str(src), str(db))
    assert n == 1 and len(errors) == 2 and all("all.zip" in e for e in errors)
    assert (db / "index.json").exists() and (db / "debian" / "DSA-9.json").exists()
    fp1 = osv.fingerprint(str(db))
    assert osv.AdvisoryDB(str(db)).match([Package("Debian:12", "bash", "5.2.15-2", "/s")])[0].advisory == "DSA-9"
    n, _ = osv.import_db(str(write_osv_dir(tmp_path / "more", [osv_advisory("DSA-10", "Debian", "tar", "2")])), str(db))
    assert n == 1 and osv.fingerprint(str(db)) != fp1
    assert osv.AdvisoryDB(str(db)).match([Package("Debian:12", "tar", "1.0", "/s")])  # "Debian" fits any release
    assert osv.fingerprint(str(tmp_path / "nope")) == ""


def test_db_path_can_be_a_zip(tmp_path):
    src = tmp_path / "npm.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("a/GHSA-1.json", json.dumps(osv_advisory("GHSA-1", "npm", "left-pad", "1.3.0")))
    (f,) = osv.AdvisoryDB(str(src)).match([Package("npm", "left-pad", "1.1.0", "/p")])
    assert f.fixed == "1.3.0"
