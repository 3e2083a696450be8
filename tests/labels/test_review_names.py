"""Names for humans, ids for machines (issue 17, item 9): a reviews file may name a class by its id or its
display name; the history and the manifest hold ids. Ambiguous and unknown names fail in one line, writing nothing."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

import kibble.labels.reviews as reviews_module
from kibble import KibbleError
from kibble.data.classes import ClassList
from kibble.labels.history import load_events
from kibble.labels.lock import LOCK_DIR
from kibble.labels.reviews import validate_reviews

from test_merge import CLASSES, make_workspace, merge

NAMES = {"cat": "House cat", "dog": "Australian terrier", "fox": "Red fox"}


def named_workspace(root, names=NAMES):
    ws = make_workspace(root)
    ClassList.from_names(CLASSES, names).save(ws.classes)
    return ws


def hashes(ws) -> dict[str, str]:
    return {str(p.relative_to(ws.root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(ws.root.rglob("*"))
            if p.is_file() and p.relative_to(ws.root).parts[0] != LOCK_DIR}


def write(tmp_path, rows: str):
    path = tmp_path / "reviews.csv"
    path.write_text("sample_id,label,verdict,annotator\n" + rows)
    return path


def test_display_names_in_any_case_merge_as_ids(tmp_path):
    ws = named_workspace(tmp_path / "ws")
    path = write(tmp_path, "s1,house CAT,,alice\n"            # the given label, by name: confirmed
                           "s2,  red   fox ,,alice\n"          # spaces and case ignored: corrected to fox
                           "s3,fox,,alice\n"                   # an id still works
                           "s4,Australian Terrier (dog),corrected,bob\n")  # the `name (id)` form people see when names clash
    summary = merge(ws, path)
    assert summary["n_reviews"] == 4
    events = load_events(ws.label_events)
    review = events[events["source"] == "review"].set_index("sample_id")
    assert review["label"].to_dict() == {"s1": "cat", "s2": "fox", "s3": "fox", "s4": "dog"}
    assert review["verdict"].to_dict() == {"s1": "confirmed", "s2": "corrected", "s3": "confirmed", "s4": "corrected"}
    assert set(pd.read_parquet(ws.manifest)["label"].dropna()) <= set(CLASSES)


def test_a_display_name_two_classes_share_fails_in_one_line_and_writes_nothing(tmp_path):
    ws = named_workspace(tmp_path / "ws", {"cat": "House cat", "dog": "Terrier", "fox": "terrier"})
    before = hashes(ws)
    with pytest.raises(KibbleError) as err:
        merge(ws, write(tmp_path, "s1,cat,,alice\ns2,TERRIER,,alice\n"))
    message = str(err.value)
    assert "\n" not in message and "line 3" in message and "'TERRIER'" in message and "dog, fox" in message
    assert "class id" in message
    assert hashes(ws) == before
    merge(ws, write(tmp_path, "s2,fox,,alice\n"))  # the id says which
    assert load_events(ws.label_events)["label"].iloc[-1] == "fox"


@pytest.mark.parametrize("label, hint", [("Red fax", "did you mean 'Red fox'?"),
                                         ("wolf", "e.g. 'House cat', 'Australian terrier', 'Red fox', or an id like 'cat'")])
def test_an_unknown_class_fails_in_one_line_with_names_to_use(tmp_path, label, hint):
    ws = named_workspace(tmp_path / "ws")
    before = hashes(ws)
    with pytest.raises(KibbleError) as err:
        merge(ws, write(tmp_path, f"s1,cat,,alice\ns2,{label},,alice\n"))
    message = str(err.value)
    assert "\n" not in message and "line 3" in message and f"unknown class {label!r}" in message and hint in message
    assert "use a class id or display name from classes.yaml" in message.lower()
    assert hashes(ws) == before


def test_names_are_resolved_once_per_distinct_value(monkeypatch):
    """10^5 rows, three distinct names: the lookup sees three values, then one vectorised map."""
    seen = []
    real = reviews_module.class_lookup

    def spy(values, *args):
        values = list(values)
        seen.append(values)
        return real(values, *args)

    monkeypatch.setattr(reviews_module, "class_lookup", spy)
    n = 100_000
    manifest = pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "label": ["cat"] * n})
    labels = pd.Series(["Red fox", "house cat", "dog"] * (n // 3) + ["dog"] * (n % 3))
    frame = pd.DataFrame({"sample_id": manifest["sample_id"], "label": labels, "verdict": None, "annotator": "alice"})
    out = validate_reviews(frame, manifest, CLASSES, display_names=NAMES)
    assert len(seen) == 1 and sorted(seen[0]) == ["Red fox", "dog", "house cat"]
    assert out["label"].value_counts().to_dict() == {"fox": n // 3, "cat": n // 3, "dog": n - 2 * (n // 3)}
    assert frame["label"].iloc[0] == "Red fox"  # the caller's table is left as it was
