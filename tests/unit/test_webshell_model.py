"""The web-shell detector's optional statistical layer (agent/imagegate/webshell/model.py): the shipped
model, our tree walk, the combination with the readers, hostile input, and the switch."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

from agent.imagegate import webshell
from agent.imagegate.webshell import model
from agent.imagegate.webshell.common import MODEL_FILE

OFF = webshell.Limits(model="")
ON = webshell.Limits(model=MODEL_FILE)
MANIFEST = os.path.join(os.path.dirname(__file__), "..", "data", "webshells", "MANIFEST")


def _doc() -> dict:
    with open(MODEL_FILE, "rb") as f:
        return json.loads(f.read())


def _tiny(threshold: float = 0.5) -> bytes:
    """One hand-made tree: best_conf <= 0.3 -> -2.0, else entropy <= 5.0 -> +1.0, else +3.0."""
    tree = {"f": [0, -1, 1, -1, -1], "t": [0.3, -2, 5.0, -2, -2], "l": [1, -1, 3, -1, -1],
            "r": [2, -1, 4, -1, -1], "v": [0.0, -2.0, 2.0, 1.0, 3.0]}
    group = {"names": ["best_conf", "entropy"], "base": 0.5, "trees": [tree], "platt": [1.0, 0.0],
             "threshold": threshold}
    return json.dumps({"format": model.FORMAT, "groups": {"php": group},
                       "training": {"manifest_sha256": "0" * 64}}).encode()


# -- the shipped model ---------------------------------------------------------------------------------------

def test_shipped_model_loads_with_its_training_record():
    m = model.load(MODEL_FILE)
    assert isinstance(m, model.Model)
    with open(MODEL_FILE, "rb") as f:
        raw = f.read()
    assert m.sha256 == hashlib.sha256(raw).hexdigest()
    assert len(raw) < 512 * 1024  # a small data file
    doc = _doc()
    tr = doc["training"]
    assert tr["split"] == "tune"
    assert len(tr["manifest_sha256"]) == 64 and int(tr["manifest_sha256"], 16) >= 0
    assert len(tr["commit"]) == 40
    assert set(m.groups) == {"php", "jsp", "asp"}
    for name, g in m.groups.items():
        assert webshell.THRESHOLD <= g.threshold <= 1.0
        assert g.trees and len(g.names) == len(set(g.names))
        st = doc["groups"][name]["stats"]
        # the threshold was picked so that out-of-fold false positives on tune are 0
        assert st["oof_fp_added"] == 0
        assert st["oof_detected_with_layer"] >= st["readers_detected"]


def test_shipped_model_was_trained_on_manifest_lines_that_are_still_there():
    """The MANIFEST is only ever appended: the lines the model was trained on are a prefix of today's file,
    so its hash was taken of a real state of it (the tune samples counted then are all still listed)."""
    doc = _doc()
    with open(MANIFEST, "rb") as f:
        text = f.read()
    tune = sum(1 for line in text.splitlines() if b" tune " in line and line.split(b" ")[1] in (b"shell", b"benign")
               and line.split(b" ")[2] in (b"php", b"jsp", b"asp", b"aspx"))
    assert tune >= doc["training"]["samples"]


# -- our inference ---------------------------------------------------------------------------------------------

def test_tree_walk_scores_and_contributions():
    m = model.parse(_tiny())
    g = m.groups["php"]
    raw, contrib = g.raw([0.2, 9.0])
    assert raw == pytest.approx(0.5 - 2.0) and contrib == pytest.approx([-2.0, 0.0])
    raw, contrib = g.raw([0.4, 4.0])
    assert raw == pytest.approx(1.5) and contrib == pytest.approx([2.0, -1.0])
    raw, contrib = g.raw([0.4, 6.0])
    assert raw == pytest.approx(3.5) and contrib == pytest.approx([2.0, 1.0])
    # the base plus the root value plus the contributions is the score
    assert g.base + 0.0 + sum(contrib) == pytest.approx(raw)
    assert g.probability(0.0) == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [
    b"not json", b"[]", b'{"format": 99}',
    json.dumps({"format": 1, "groups": {"php": {"names": ["a"], "base": 0, "platt": [1, 0], "threshold": 0.9,
                "trees": [{"f": [5, -1, -1], "t": [0, 0, 0], "l": [1, -1, -1], "r": [2, -1, -1],
                           "v": [0, 0, 0]}]}}, "training": {"manifest_sha256": ""}}).encode(),
    json.dumps({"format": 1, "groups": {"php": {"names": ["a"], "base": 0, "platt": [1, 0], "threshold": 0.9,
                "trees": [{"f": [0, -1, -1], "t": [0, 0, 0], "l": [0, -1, -1], "r": [2, -1, -1],
                           "v": [0, 0, 0]}]}}, "training": {"manifest_sha256": ""}}).encode(),
])
def test_malformed_model_is_refused_in_one_line(bad, tmp_path):
    with pytest.raises(model.ModelError):
        model.parse(bad)
    p = tmp_path / "bad.json"
    p.write_bytes(bad)
    assert isinstance(model.load(str(p)), model.NullModel)


def test_a_threshold_under_the_detectors_is_raised_to_it():
    # a model hit always counts as a shell: its confidence is at or above THRESHOLD
    assert model.parse(_tiny(threshold=0.1)).groups["php"].threshold == webshell.THRESHOLD


def test_tiny_model_adds_a_hit_with_evidence(tmp_path):
    p = tmp_path / "m.json"
    p.write_bytes(_tiny(threshold=0.9))
    limits = webshell.Limits(model=str(p))
    # a packed payload the readers see but score low: best_conf above 0.3, entropy above 5
    body = b"<?php $a = '" + bytes(range(33, 127)) * 40 + b"'; echo strlen($a);"
    readers = webshell.scan("x.php", body, OFF)
    assert not webshell.is_shell(readers)
    hits = webshell.scan("x.php", body, limits)
    best = max((h.confidence for h in readers), default=0.0)
    if best > 0.3:
        extra = hits[-1]
        assert extra.rule == "model.php" and extra.confidence >= 0.9
        assert "entropy" in extra.snippet and webshell.is_shell(hits)
    else:
        assert hits == readers


# -- the combination with the readers ----------------------------------------------------------------------

FLAGGED = b"<?php system($_GET['c']);"


def test_a_file_the_readers_flag_keeps_exactly_their_hits():
    assert webshell.scan("x.php", FLAGGED, ON) == webshell.scan("x.php", FLAGGED, OFF)


def test_switched_off_or_missing_file_gives_the_readers_findings(tmp_path):
    assert webshell.Limits().model == ""  # off unless switched on
    missing = webshell.Limits(model=str(tmp_path / "nope.json"))
    assert isinstance(model.load(str(tmp_path / "nope.json")), model.NullModel)
    assert isinstance(model.load(""), model.NullModel)
    for body in (FLAGGED, NEAR_MISS, LOOKALIKE, b"<?php echo 'hello';"):
        readers = webshell.scan("x.php", body, OFF)
        assert webshell.scan("x.php", body, missing) == readers
        assert webshell.scan("x.php", body) == readers
        # the layer on only ever appends: every reader hit is still there, unchanged
        on = webshell.scan("x.php", body, ON)
        assert on[: len(readers)] == readers and len(on) - len(readers) in (0, 1)


def test_files_of_languages_without_a_model_are_left_to_the_readers():
    body = b"#!/usr/bin/perl\nprint 'hello';\n"
    assert webshell.scan("x.pl", body, ON) == webshell.scan("x.pl", body, OFF)


# -- a near miss the model catches, and a look-alike it leaves ---------------------------------------------

# Written for this test (no sample code): a password form that decodes what is posted through a split
# function name and drops it in the temp folder, showing the host's identity; the readers see the request
# reach a file write but score it 0.2 (no exec or code sink in sight).
NEAR_MISS = b"""<?php
@error_reporting(0); @set_time_limit(0); @ini_set('display_errors', 0);
$p = $_POST;
$t = isset($p['pass']) ? $p['pass'] : '';
echo php_uname().' | '.get_current_user().' | '.getcwd().'<br>';
echo "<form method=post><input name=pass type=password><input name=cmd><input type=submit></form>";
$b = 'ba'.'se'.'64_de'.'code';
$s = @$b($t);
@file_put_contents(sys_get_temp_dir().'/.cache', $s);
"""

# A framework-like page: a namespaced controller that lists an uploads folder for its own users.
LOOKALIKE = b"""<?php
namespace App\\Http\\Controllers;

use Illuminate\\Http\\Request;

/**
 * Lists the files a user uploaded.
 *
 * @param Request $request the current request
 */
class UploadsController extends Controller
{
    public function index(Request $request)
    {
        $this->authorize('viewAny', Upload::class);
        $files = $request->user()->uploads()->latest()->paginate(20);
        return view('uploads.index', ['files' => $files]);
    }

    public function destroy(Request $request, Upload $upload)
    {
        $this->authorize('delete', $upload);
        Storage::disk('uploads')->delete($upload->path);
        $upload->delete();
        return redirect()->route('uploads.index');
    }
}
"""


def test_near_miss_shell_is_raised_by_the_model():
    readers = webshell.scan("fm.php", NEAR_MISS, OFF)
    assert readers and not webshell.is_shell(readers)  # the readers see it, just under THRESHOLD
    hits = webshell.scan("fm.php", NEAR_MISS, ON)
    assert webshell.is_shell(hits)
    extra = hits[-1]
    assert extra.rule == "model.php" and extra.confidence >= webshell.THRESHOLD
    assert extra.snippet  # the top features and their contributions
    assert "statistical model" in webshell.describe(extra)


def test_benign_lookalike_is_not_raised():
    assert not webshell.is_shell(webshell.scan("UploadsController.php", LOOKALIKE, ON))


def test_inference_is_deterministic():
    a = webshell.scan("fm.php", NEAR_MISS, ON)
    b = webshell.scan("fm.php", NEAR_MISS, ON)
    assert a == b
    hits = webshell.scan("fm.php", NEAR_MISS, OFF)
    assert model.features("php", NEAR_MISS, hits) == model.features("php", NEAR_MISS, hits)


# -- hostile input ---------------------------------------------------------------------------------------------

def _hostile() -> dict[str, bytes]:
    return {
        "junk.php": hashlib.sha256(b"seed").digest() * 40_000,  # 1.25 MB of binary junk named .php
        "literal.php": b"<?php $a = '" + b"QUJD" * (2 * 1024 * 1024 // 4) + b"';",  # a 2 MB literal
        "nest.php": b"<?php " + b"(" * 20_000 + b"$_GET['x']" + b")" * 20_000 + b";",
        "words.jsp": b"<% " + b"exec request shell cmd " * 100_000 + b"%>",
        "lines.aspx": b"\n" * (2 * 1024 * 1024),
    }


@pytest.mark.parametrize("name", sorted(_hostile()))
def test_hostile_input_stays_bounded(name):
    body = _hostile()[name]
    hits = webshell.scan(name, body, OFF)
    t0 = time.process_time()
    f = model.features(webshell.language_of(name, body[:512]), body[: ON.max_bytes], hits)
    assert time.process_time() - t0 < 2.0
    assert all(isinstance(v, float | int) for v in f.values())
    t0 = time.process_time()
    on = webshell.scan(name, body, ON)  # never raises; the readers' hits stay first
    assert time.process_time() - t0 < 10.0
    assert on[: len(hits)] == hits
