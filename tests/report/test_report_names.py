"""Reports speak names (issue 17, item 9): class ids appear beside display names, never alone. Fast: no training."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kibble.data.classes import ClassList
from kibble.metrics.evaluation import evaluate_probs
from kibble.paths import Workspace
from kibble.queue.formats import write_queue_files
from kibble.report import active, annotators
from kibble.report.eval import eval_sections, evalset_section
from kibble.report.gallery import queue_gallery_html

IDS = ["n02096294", "n02088364", "n02105641"]
CLASSES = ClassList.from_names(IDS, {"n02096294": "Australian terrier", "n02088364": "beagle", "n02105641": "Old English sheepdog"})


def workspace(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    CLASSES.save(ws.classes)
    queue = pd.DataFrame({"queue_id": ["q1", "q2"], "round": 0, "rank": [1, 2], "sample_id": ["a", "b"], "path": ["a.png", "b.png"],
                          "given_label": ["n02096294", None], "suggested_label": ["n02105641", "n02088364"], "score": [0.9, 0.8],
                          "strategy": ["kfold", "entropy"], "reason": ["x", "y"], "kind": ["relabel", "new"]})
    write_queue_files(queue, ws.round_dir(0), CLASSES, "http://images")
    return ws


def test_queue_gallery_and_new_label_guesses_show_names(tmp_path):
    ws = workspace(tmp_path)
    queue = pd.read_csv(ws.round_dir(0) / "queue.csv", dtype=str)
    html = queue_gallery_html(queue, CLASSES, ws.root)
    assert "given: <b>Australian terrier (n02096294)</b>" in html and "suggested: <b>Old English sheepdog (n02105641)</b>" in html
    assert 'data-given="Australian terrier"' in html and 'data-suggested="beagle"' in html  # the sort keys are names too
    (section,) = active.round_sections(ws, ws.round_dir(0))
    assert "<td>beagle</td>" in section.body and "<td>n02088364</td>" in section.body


def test_guideline_feedback_names_the_class_pair(tmp_path):
    ws = workspace(tmp_path)
    pd.DataFrame([{"class_a": "n02096294", "class_b": "n02088364", "n_ambiguous": 2, "n_disagreements": 1, "n_annotators": 2,
                   "notes": "ears", "examples": ""}]).to_csv(ws.round_dir(0) / "guideline_feedback.csv", index=False)
    (section,) = annotators.feedback_section(ws, ws.round_dir(0))
    assert "<td>Australian terrier vs beagle</td>" in section.body


def test_eval_sections_show_names_beside_ids(tmp_path):
    rng = np.random.default_rng(0)
    y_true = np.repeat(np.arange(3), 10)
    probs = rng.dirichlet(np.ones(3), size=len(y_true))  # a poor model: every class fails its F1 target
    result = evaluate_probs(y_true, probs, CLASSES, CLASSES.severity_matrix())
    sections = {s.title: s.body for s in eval_sections(result, CLASSES, tmp_path)}
    failing = sections["Summary"].split("Failing classes: ")[1].split("</p>")[0]
    assert set(failing.split(", ")) <= {"Australian terrier", "beagle", "Old English sheepdog"} and failing
    assert "<td>beagle</td>" in sections["Error severity"]
    checks = {"passed": True, "problems": [], "split": "test", "n": 30, "min_per_class": 5, "coverage": [], "duplicates_checked": False,
              "images_per_class": {c: 10 for c in IDS}}
    assert "<td>Old English sheepdog</td>" in evalset_section(checks, CLASSES).body
