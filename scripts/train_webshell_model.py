"""Train the web-shell detector's statistical layer (agent/imagegate/webshell/model.py) on the TUNE split.

    python scripts/train_webshell_model.py [--corpus /work/corpora/webshells] [--jobs 2] [--cache FILE]
        [--out agent/imagegate/webshell/model.json]

Needs scikit-learn and numpy (training only; the agent's inference walks the exported trees itself):
install them in a separate environment, e.g. `python -m venv /tmp/train && /tmp/train/bin/pip install
scikit-learn`, with the agent's own environment on its path.

Every shell and benign sample of tests/data/webshells/MANIFEST in the tune split and a modelled language
(PHP, JSP, ASP/ASP.NET) is read from <corpus>/tune/, its sha256 checked (a mismatch or a missing file stops
the run), scanned by the readers with the layer off and measured by model.features. The held-out split is
never opened: only MANIFEST lines marked tune are read, and a path under holdout/ is refused.

Per group: gradient-boosted depth-3 trees; 5-fold stratified cross-validation inside tune gives
out-of-fold scores, on which a Platt scaling (score -> probability) is fitted and the threshold picked: the
lowest probability above every out-of-fold score of a benign file the readers did not flag (so out-of-fold
false positives on tune are 0), never under THRESHOLD. The final trees are then fitted on all tune samples
of the group. The model file records the MANIFEST's sha256, the repository commit, the counts and the
out-of-fold detection with the layer on and off.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from agent.imagegate import webshell  # noqa: E402
from agent.imagegate.webshell import model  # noqa: E402
from bench.webshells import MANIFEST, Sample, load_samples  # noqa: E402

HIT_PREFIXES = ("rule:", "family:", "sink:", "source:")
MIN_NAME_FILES = 5  # a reader's rule/sink/source name becomes a feature when this many files show it
PARAMS = {"n_estimators": 120, "max_depth": 3, "learning_rate": 0.1, "subsample": 0.8, "min_samples_leaf": 5,
          "random_state": 0}
FOLDS = 5
MARGIN = 1e-4  # the threshold sits this far above the highest out-of-fold benign probability


def _measure(args: tuple[str, Sample]) -> dict:
    corpus, s = args
    path = s.file(corpus)
    if s.split != "tune" or os.sep + "holdout" + os.sep in path:
        raise SystemExit(f"refusing a non-tune sample: {path}")
    with open(path, "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != s.sha:
        raise SystemExit(f"sha256 mismatch: {path}")
    limits = webshell.Limits(model="")
    hits = webshell.scan(path, data, limits)
    feats = model.features(s.language, data[: limits.max_bytes], hits)
    return {"sha": s.sha, "lang": s.language, "label": s.label, "flagged": webshell.is_shell(hits), "f": feats}


def extract(corpus: str, samples: list[Sample], jobs: int) -> list[dict]:
    todo = [(corpus, s) for s in samples]
    if jobs <= 1:
        return [_measure(a) for a in todo]
    with ProcessPoolExecutor(jobs) as pool:
        return list(pool.map(_measure, todo, chunksize=16))


def _names(rows: list[dict]) -> list[str]:
    seen: dict[str, int] = {}
    for r in rows:
        for k in r["f"]:
            seen[k] = seen.get(k, 0) + 1
    return sorted(k for k, c in seen.items() if not k.startswith(HIT_PREFIXES) or c >= MIN_NAME_FILES)


def _export(clf, names: list[str]) -> list[dict]:
    lr = clf.learning_rate
    trees = []
    for est in clf.estimators_[:, 0]:
        t = est.tree_
        trees.append({
            "f": [int(v) if v >= 0 else -1 for v in t.feature],
            "t": [float(v) for v in t.threshold],
            "l": [int(v) for v in t.children_left],
            "r": [int(v) for v in t.children_right],
            "v": [float(v) * lr for v in t.value[:, 0, 0]],
        })
    return trees


def train_group(rows: list[dict]) -> tuple[dict, dict]:
    import numpy as np
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    names = _names(rows)
    x = np.array([[r["f"].get(n, 0.0) for n in names] for r in rows], dtype=np.float64)
    y = np.array([r["label"] == "shell" for r in rows], dtype=np.int64)
    flagged = np.array([r["flagged"] for r in rows], dtype=bool)
    oof = np.zeros(len(rows))
    for train, test in StratifiedKFold(FOLDS, shuffle=True, random_state=0).split(x, y):
        clf = GradientBoostingClassifier(**PARAMS).fit(x[train], y[train])
        oof[test] = clf.decision_function(x[test])
    platt = LogisticRegression(C=1e6).fit(oof.reshape(-1, 1), y)
    a, b = float(platt.coef_[0, 0]), float(platt.intercept_[0])
    prob = 1.0 / (1.0 + np.exp(-(a * oof + b)))
    benign_open = (y == 0) & ~flagged
    worst = float(prob[benign_open].max()) if benign_open.any() else 0.0
    threshold = max(min(worst + MARGIN, 1.0), webshell.THRESHOLD)
    added = (y == 1) & ~flagged & (prob >= threshold)
    stats = {
        "shells": int(y.sum()), "benign": int((y == 0).sum()),
        "readers_detected": int(((y == 1) & flagged).sum()), "readers_fp": int(((y == 0) & flagged).sum()),
        "oof_added": int(added.sum()), "oof_fp_added": int((benign_open & (prob >= threshold)).sum()),
        "oof_benign_max_probability": round(worst, 6),
    }
    stats["oof_detected_with_layer"] = stats["readers_detected"] + stats["oof_added"]
    final = GradientBoostingClassifier(**PARAMS).fit(x, y)
    base = float(final._raw_predict_init(x[:1])[0, 0])
    group = {"names": names, "base": base, "trees": _export(final, names), "platt": [a, b],
             "threshold": threshold, "stats": stats}
    _verify(group, final, x)
    return group, stats


def _verify(group: dict, clf, x) -> None:
    """Our tree walk gives scikit-learn's scores (to rounding): the exported file is the trained model."""
    gm = model.parse(json.dumps({"format": model.FORMAT, "groups": {"g": group},
                                 "training": {"manifest_sha256": ""}}).encode()).groups["g"]
    want = clf.decision_function(x[:500])
    for row, w in zip(x[:500], want, strict=True):
        got, _ = gm.raw([float(v) for v in row])
        if abs(got - w) > 1e-6:
            raise SystemExit(f"exported trees disagree with scikit-learn: {got} != {w}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default="/work/corpora/webshells")
    ap.add_argument("--manifest", default=MANIFEST)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--cache", default="", help="features file: written after extraction, read when present")
    ap.add_argument("--out", default=webshell.common.MODEL_FILE)
    args = ap.parse_args(argv)
    with open(args.manifest, "rb") as f:
        manifest_sha = hashlib.sha256(f.read()).hexdigest()
    samples = [s for s in load_samples(args.manifest) if s.split == "tune" and s.language in model.GROUP]
    if args.cache and os.path.exists(args.cache):
        with open(args.cache, encoding="utf-8") as f:
            cached = json.load(f)
        if cached["manifest_sha256"] != manifest_sha:
            raise SystemExit("the cache was made from another MANIFEST: delete it")
        rows = cached["rows"]
    else:
        rows = extract(args.corpus, samples, args.jobs)
        if args.cache:
            with open(args.cache, "w", encoding="utf-8") as f:
                json.dump({"manifest_sha256": manifest_sha, "rows": rows}, f)
    import sklearn

    groups, report = {}, {}
    for g in sorted(set(model.GROUP.values())):
        part = [r for r in rows if model.GROUP[r["lang"]] == g]
        groups[g], report[g] = train_group(part)
        print(g, json.dumps(report[g]), flush=True)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    doc = {
        "format": model.FORMAT,
        "training": {"manifest_sha256": manifest_sha, "split": "tune", "commit": commit,
                     "samples": len(rows), "sklearn": sklearn.__version__, "params": PARAMS, "folds": FOLDS,
                     "readers_version": webshell.VERSION},
        "groups": groups,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, separators=(",", ":"))
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
