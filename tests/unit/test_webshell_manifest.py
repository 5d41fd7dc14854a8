"""The web-shell corpus MANIFEST (issue 11) and the bench that reads it.

The MANIFEST names every file looked at for the web-shell evaluation; the samples themselves live
outside the repository. These tests hold its format and split rule, check that the counts meet the
acceptance minimums, and run bench.webshells on a small corpus built here from our own text (a
missing and a changed sample must be reported and counted; --misses must refuse the holdout split).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench import webshells

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "tests" / "data" / "webshells" / "MANIFEST"
HEX64 = re.compile(r"[0-9a-f]{64}")
HEX40 = re.compile(r"[0-9a-f]{40}")
REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


@pytest.fixture(scope="module")
def rows():
    return webshells.parse_manifest(MANIFEST.read_text(encoding="utf-8"))


def _split(sha: str) -> str:
    return "holdout" if int(sha[:4], 16) % 3 == 0 else "tune"


def test_header_names_the_format_and_split_rule():
    head = [ln for ln in MANIFEST.read_text(encoding="utf-8").splitlines()[:15] if ln.startswith("#")]
    text = "\n".join(head)
    assert "sha256 label language split repository commit path" in text
    assert "int(sha256[:4], 16) % 3 == 0" in text


def test_every_line_is_well_formed(rows):
    assert rows
    for cols in rows:
        sha, label, lang, split, repo, commit, path = cols[:7]
        line = " ".join(cols)
        assert label in ("shell", "benign", "other"), line
        assert REPO.fullmatch(repo), line
        assert HEX40.fullmatch(commit), line
        assert path and " " not in path, line  # percent-encoded
        if label == "other":
            assert len(cols) == 8 and cols[7].strip(), f"an excluded file needs a reason: {line}"
            assert lang == "-" or lang in webshells.LANGUAGES, line
            if sha != "-":
                assert HEX64.fullmatch(sha) and split == _split(sha), line
            continue
        assert HEX64.fullmatch(sha), line
        assert lang in webshells.LANGUAGES, line
        assert split == _split(sha), line


def test_samples_are_unique_and_one_commit_per_repository(rows):
    samples = [c for c in rows if c[1] in ("shell", "benign")]
    dup = [sha for sha, n in Counter(c[0] for c in samples).items() if n > 1]
    assert not dup, f"the same bytes counted twice: {dup[:5]}"
    commits: dict[str, set] = {}
    for c in rows:
        commits.setdefault(c[4], set()).add(c[5])
    assert all(len(v) == 1 for v in commits.values()), {k: v for k, v in commits.items() if len(v) > 1}


def test_sorted_by_repository_then_path(rows):
    keys = [(c[4].lower(), c[6]) for c in rows]
    assert keys == sorted(keys)


def test_counts_meet_the_acceptance_minimums(rows):
    n = Counter((c[1], c[2], c[3]) for c in rows if c[1] in ("shell", "benign"))

    def count(label, langs, splits=("tune", "holdout")):
        return sum(v for (lb, lg, sp), v in n.items() if lb == label and lg in langs and sp in splits)

    assert count("shell", ("php", "jsp", "asp", "aspx")) >= 300
    assert count("benign", ("php", "jsp")) >= 3000
    # Each language the issue names is represented in the held-out part, not only in tuning.
    for langs in (("php",), ("jsp",), ("asp", "aspx")):
        assert count("shell", langs, ("holdout",)) >= 30, langs
    assert count("benign", ("php",), ("holdout",)) >= 300
    assert count("benign", ("jsp",), ("holdout",)) >= 300


def test_no_sample_is_committed():
    # Project rule: third-party samples stay outside the repository; only their names and hashes.
    assert sorted(p.name for p in MANIFEST.parent.iterdir()) == ["MANIFEST"]


def _mini_corpus(tmp_path: Path) -> tuple[Path, Path]:
    """A corpus of three of our own files: one benign, one shell, one changed; and one missing."""
    corpus = tmp_path / "corpus"
    files = {
        "benign": b"<?php\n// a page that greets\necho 'hello, ' . htmlspecialchars($name);\n",
        "shell": b"<?php @eval($_POST['c']); ?>\n" + b" " * 40,
        "changed": b"<?php\necho date('Y');\n// padding to pass thirty bytes\n",
        "missing": b"<?php\necho 'never written to the corpus';\n",
    }
    lines = ["# test manifest"]
    for name, data in files.items():
        sha = hashlib.sha256(data).hexdigest()
        label = "shell" if name == "shell" else "benign"
        lines.append(f"{sha} {label} php {_split(sha)} example/{name} {'0' * 40} src/{name}.php")
        if name == "missing":
            continue
        dest = corpus / _split(sha) / label / "php" / f"{sha}.php"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data + (b"!" if name == "changed" else b""))
    manifest = tmp_path / "MANIFEST"
    manifest.write_text("\n".join(lines) + "\n")
    return corpus, manifest


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_bench_reports_missing_and_changed_samples(tmp_path, capsys, jobs):
    corpus, manifest = _mini_corpus(tmp_path)
    argv = ["--corpus", str(corpus), "--manifest", str(manifest), "--split", "all", "--json", "--jobs", jobs]
    rc = webshells.main(argv)
    out = capsys.readouterr().out
    assert rc == 1  # a missing or changed sample fails the run
    doc = json.loads(out)
    assert doc["problems"] == {"missing": 1, "changed": 1, "errors": 0}
    total = sum(s["all"]["shells"] + s["all"]["benign"] for s in doc["splits"].values())
    assert total == 2  # the two intact samples were scanned


def test_bench_refuses_misses_on_holdout(tmp_path, capsys):
    corpus, manifest = _mini_corpus(tmp_path)
    rc = webshells.main(["--corpus", str(corpus), "--manifest", str(manifest), "--split", "holdout", "--misses"])
    assert rc == 2
    assert "tune split only" in capsys.readouterr().err


def test_bench_bad_inputs_are_one_line_errors(tmp_path, capsys):
    assert webshells.main(["--corpus", str(tmp_path / "absent")]) == 2
    bad = tmp_path / "MANIFEST"
    bad.write_text("only three columns\n")
    assert webshells.main(["--corpus", str(tmp_path), "--manifest", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "corpus not found" in err[0] and "MANIFEST line 1" in err[1]


def _builder():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "build_webshell_corpus", ROOT / "scripts" / "build_webshell_corpus.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_builder_rules_on_our_own_text():
    b = _builder()
    assert b.split_of("0000" + "0" * 60) == "holdout" and b.split_of("0001" + "0" * 60) == "tune"
    assert b.quote_path("a dir/ü.php".encode()) == "a%20dir/%C3%BC.php"
    # server-side code under its own name counts; fragments, HTML and other languages do not
    assert b._no_server_code("php", ".php", b"<?php eval($_POST[1]);") == ""
    assert b._no_server_code("php", ".php", b'<script language="php">eval($_POST[1]);</script>') == ""
    assert "would not run" in b._no_server_code("php", ".php", b"eval($_POST[1]); // no open tag")
    assert "JSP/ASP code under a .php name" in b._no_server_code("php", ".php", b"<% eval request(1) %>")
    assert b._no_server_code("asp", ".asp", b'<script runat="server" language="vbscript">x</script>') == ""
    assert b._no_server_code("aspx", ".aspx", "<%@ Page %>".encode("utf-16")) == ""  # UTF-16 with a BOM
    assert b._no_server_code("jsp", ".java", b"class Servlet {}") == ""  # no marker to look for
    assert b._no_server_code("jsp", ".jsp", b"<html>hello</html>").startswith("no server-side code")
