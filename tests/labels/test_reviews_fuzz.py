"""Property tests of the reviews readers (CSV, Label Studio JSON export) through `kibble merge` (issue 13, item 9).

Whatever a file holds (random bytes, odd encodings and BOMs, shuffled or duplicated columns, conflicting
rows, unknown ids and classes, structurally odd JSON), the merge either succeeds, leaving a history
the manifest agrees with, or fails with one KibbleError line and the workspace byte-identical. Valid
files in any formatting merge exactly their answers. Deterministic (derandomize) and small, so CI is
stable and fast.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import compose_config
from kibble import KibbleError
from kibble.data.manifest import load_manifest
from kibble.labels.history import VERDICTS, load_events
from kibble.labels.lock import LOCK_DIR
from kibble.labels.merge import label_view
from kibble.labels.policy import resolve_labels
from kibble.labels.policy_file import policy_for_merge
from kibble.paths import Workspace
from kibble.queue.formats import write_queue_files
from kibble.data.classes import ClassList
from kibble.tasks.merge import run

from test_merge import CLASSES, make_workspace

# a merge that writes costs ~0.3 s here, a refused one a few ms: fewer examples where most cases merge
FUZZ = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
FUZZ_MERGING = settings(FUZZ, max_examples=12)
SAMPLES = ["s1", "s2", "s3", "s4", "s5"]
GIVEN = {"s1": "cat", "s2": "dog", "s3": "fox", "s4": "cat", "s5": None}
ANNOTATORS = ["alice", "bob", "zoë@example.com"]


class Env:
    """The template workspace and the composed merge config (a short repr for Hypothesis' reports)."""

    def __init__(self, ws: Workspace, cfg):
        self.ws, self.cfg = ws, cfg

    def __repr__(self) -> str:
        return "Env(tiny merge workspace)"


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    """The tiny merge workspace with round 0's queue (s1, s2), so reviews take their round from it."""
    ws = make_workspace(tmp_path_factory.mktemp("fuzz") / "ws")
    queue = pd.DataFrame({"queue_id": ["r000-0001", "r000-0002"], "round": [0, 0], "rank": [1, 2], "sample_id": ["s1", "s2"],
                          "path": ["img/s1.png", "img/s2.png"], "given_label": ["cat", "dog"], "suggested_label": ["dog", "cat"],
                          "score": [0.9, 0.8], "strategy": ["kfold", "kfold"], "reason": ["x", "x"]})
    write_queue_files(queue, ws.round_dir(0), ClassList.load(ws.classes), "http://images", data_root=ws.root)
    cfg = compose_config("merge", ["workspace=unset", "reviews=unset"], output_dir=tmp_path_factory.mktemp("merge_out"))
    return Env(ws, cfg)


class Case:
    """A fresh copy of the template per example (a successful merge changes it), and the merge task on it."""

    counter = 0

    def __init__(self, env: Env, root: Path):
        Case.counter += 1
        self.dir = root / f"case{Case.counter}"
        shutil.copytree(env.ws.root, self.dir / "ws")
        self.ws = Workspace(self.dir / "ws")
        self.cfg = copy.deepcopy(env.cfg)

    def snapshot(self) -> dict[str, bytes]:
        return {str(p.relative_to(self.ws.root)): p.read_bytes() for p in sorted(self.ws.root.rglob("*"))
                if p.is_file() and p.relative_to(self.ws.root).parts[0] != LOCK_DIR}

    def merge(self, name: str, content: bytes) -> dict | KibbleError:
        """The merge's summary, or its KibbleError after checking it is one line and nothing was written."""
        path = self.dir / name
        path.write_bytes(content)
        self.cfg.workspace, self.cfg.reviews = str(self.ws.root), str(path)
        before = self.snapshot()
        events_before = len(load_events(self.ws.label_events))
        try:
            summary = run(self.cfg)
        except KibbleError as err:
            message = str(err)
            assert message.strip() and "\n" not in message and "Traceback" not in message, message
            assert self.snapshot() == before, f"a failed merge wrote something: {message}"
            return err
        self.check_consistent(events_before, summary)
        return summary

    def check_consistent(self, events_before: int, summary: dict) -> None:
        """After a merge: the events were appended once each, and the manifest is the policy applied to the history."""
        events = load_events(self.ws.label_events)
        assert events["event_id"].is_unique
        assert len(events) == events_before + summary["n_events_added"]
        manifest = load_manifest(self.ws.manifest, CLASSES)
        policy, _ = policy_for_merge(self.ws, None)
        view, _ = label_view(manifest, resolve_labels(events, policy))
        assert _labels(view) == _labels(manifest)

    def events(self) -> pd.DataFrame:
        return load_events(self.ws.label_events)


def _labels(frame: pd.DataFrame) -> list:
    return [None if pd.isna(v) else str(v) for v in frame["label"]]


def _run(env, tmp_path, name, content):
    return Case(env, tmp_path).merge(name, content)


# ------------------------------------------------------------------------------- CSV: valid files
answer = st.fixed_dictionaries({
    "sample_id": st.sampled_from(SAMPLES), "annotator": st.sampled_from(ANNOTATORS), "label": st.sampled_from(CLASSES),
    "verdict_style": st.sampled_from(["empty", "explicit", "explicit-upper"]),
    "note": st.one_of(st.just(""), st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=12), st.just('a, "quoted"\nline')),
})


def _verdict(row: dict) -> str:
    if row["verdict_style"] == "empty":
        return ""
    verdict = "confirmed" if row["label"] == GIVEN[row["sample_id"]] else "corrected"
    return verdict.upper() if row["verdict_style"] == "explicit-upper" else verdict


@st.composite
def formatted_csv(draw) -> tuple[bytes, list[dict]]:
    """Distinct (sample, annotator) answers in a random but valid CSV dialect: column order and case, extra
    columns, padding, quoting, CRLF, BOM."""
    rows = draw(st.lists(answer, min_size=1, max_size=8, unique_by=lambda r: (r["sample_id"], r["annotator"])))
    columns = draw(st.permutations(["sample_id", "label", "verdict", "annotator", "note", "extra"]))
    header_case = draw(st.sampled_from([str.lower, str.upper, str.title]))
    pad = draw(st.sampled_from(["", " ", "  "]))
    out = io.StringIO()
    writer = csv.writer(out, quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])),
                        lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow([pad + header_case(c) + pad for c in columns])
    for row in rows:
        values = {**row, "verdict": _verdict(row), "extra": "x"}
        writer.writerow([pad + values[c] + pad if c != "note" else values[c] for c in columns])
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig"]))
    return out.getvalue().encode(encoding), rows


@FUZZ_MERGING
@given(data=formatted_csv())
def test_a_valid_csv_in_any_dialect_merges_exactly_its_answers(env, tmp_path, data):
    content, rows = data
    case = Case(env, tmp_path)
    summary = case.merge("reviews.csv", content)
    assert not isinstance(summary, KibbleError), summary
    assert summary["n_events_added"] == len(rows)
    events = case.events()
    added = events[events["source"] == "review"]
    assert sorted(zip(added["sample_id"], added["annotator"], added["label"])) == \
        sorted((r["sample_id"], r["annotator"], r["label"]) for r in rows)


@FUZZ_MERGING
@given(data=formatted_csv(), which=st.integers(min_value=0, max_value=7))
def test_a_conflicting_repeat_of_a_row_is_refused_and_writes_nothing(env, tmp_path, data, which):
    content, rows = data
    row = rows[which % len(rows)]
    other = next(c for c in CLASSES if c != row["label"])
    text = content.decode("utf-8-sig").rstrip("\r\n")
    header = next(csv.reader([text.splitlines()[0]]))
    order = [h.strip().lower() for h in header]
    values = {"sample_id": row["sample_id"], "label": other, "verdict": "", "annotator": row["annotator"], "note": "", "extra": ""}
    conflicting = io.StringIO()
    csv.writer(conflicting, lineterminator="\n").writerow([values[c] for c in order])
    result = _run(env, tmp_path, "reviews.csv", (text + "\n" + conflicting.getvalue()).encode())
    assert isinstance(result, KibbleError) and "two different answers" in str(result)


# ------------------------------------------------------------------------- CSV: anything at all
CELLS = st.one_of(st.sampled_from(SAMPLES + CLASSES + list(VERDICTS) + ANNOTATORS + ["", " ", "s9", "wolf", "nan", "NULL", "0", "-1", "1e400",
                                                                                      '"', "a,b", "\x00"]),
                  st.text(max_size=6))
HEADERS = st.sampled_from(["sample_id", "label", "verdict", "annotator", "note", "round", "queue_id", "lead_time", "given_label",
                           "created_at", "Label", " SAMPLE_ID ", "", "sample_id"])


@st.composite
def odd_csv(draw) -> bytes:
    """Header from real and odd column names (duplicates, empty), rows of ragged length with valid and junk cells."""
    header = draw(st.lists(HEADERS, min_size=1, max_size=8))
    lines = [",".join(header)]
    for _ in range(draw(st.integers(0, 6))):
        lines.append(",".join(draw(st.lists(CELLS, min_size=0, max_size=len(header) + 1))))
    text = draw(st.sampled_from(["\n", "\r\n", "\r"])).join(lines)
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252"]))
    return text.encode(encoding, errors="replace")


@FUZZ
@given(content=odd_csv())
def test_odd_csv_files_merge_or_fail_in_one_line_writing_nothing(env, tmp_path, content):
    _run(env, tmp_path, "reviews.csv", content)


@FUZZ
@given(content=st.binary(max_size=600), suffix=st.sampled_from(["reviews.csv", "reviews.tsv", "reviews.json", "reviews"]))
def test_random_bytes_merge_or_fail_in_one_line_writing_nothing(env, tmp_path, content, suffix):
    _run(env, tmp_path, suffix, content)


# ---------------------------------------------------------------------------- Label Studio JSON
def _annotation(ann_id: int, user: int, label: str | None, at: str, cancelled: bool = False) -> dict:
    result = [] if label is None else [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]
    return {"id": ann_id, "completed_by": user, "was_cancelled": cancelled, "result": result, "created_at": at, "updated_at": at,
            "lead_time": 2.5}


@st.composite
def export(draw) -> tuple[list, dict]:
    """A valid export: tasks for some samples, each with annotations by some users (several per user:
    the latest counts). Returns the export and the expected {(sample, annotator): label or None (skipped)}."""
    tasks, expected = [], {}
    for ti, sid in enumerate(draw(st.lists(st.sampled_from(SAMPLES), min_size=1, max_size=4, unique=True))):
        annotations = []
        for user in draw(st.lists(st.sampled_from([3, 4, 5]), max_size=3, unique=True)):
            answers = draw(st.lists(st.sampled_from(CLASSES + [None]), min_size=1, max_size=3))
            for k, label in enumerate(answers):
                annotations.append(_annotation(len(annotations) + 1, user, label, f"2024-05-0{k + 1}T10:00:00Z"))
            expected[(sid, f"labelstudio-user-{user}")] = answers[-1]
        data = {"image": f"/data/local-files/?d=img/{sid}.png", "sample_id": sid}
        if sid in ("s1", "s2"):
            data.update(queue_id=f"r000-000{sid[-1]}", round=0, given_label=GIVEN[sid])
        tasks.append({"id": 100 + ti, "data": data, "annotations": draw(st.permutations(annotations)), "predictions": []})
    return tasks, expected


@FUZZ_MERGING
@given(data=export())
def test_a_valid_export_merges_the_latest_answer_of_each_annotator(env, tmp_path, data):
    tasks, expected = data
    case = Case(env, tmp_path)
    summary = case.merge("export.json", json.dumps(tasks).encode())
    assert not isinstance(summary, KibbleError), summary
    events = case.events()
    added = events[events["source"] == "review"]
    got = {(s, a): (None if v == "skipped" else l) for s, a, l, v in zip(added["sample_id"], added["annotator"], added["label"], added["verdict"])}
    assert got == expected


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | st.sampled_from(SAMPLES + CLASSES + ["label", "verdict", "note", "choices", ""]) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["data", "annotations", "result", "sample_id", "completed_by", "value", "choices", "from_name", "was_cancelled",
                         "round", "queue_id", "given_label", "text", "updated_at", "lead_time", "id"]) | st.text(max_size=4),
        children, max_size=5),
    max_leaves=25,
)
PATHS_INTO_EXPORT = st.lists(st.sampled_from(["data", "annotations", "result", "value", "choices", "completed_by", "sample_id",
                                              "round", "text", "from_name", 0, 1]), min_size=1, max_size=5)


def _replace(tree, path: list, value):
    """`tree` with the node at `path` (keys / list positions that exist, the rest ignored) replaced by `value`."""
    if not path:
        return value
    key, rest = path[0], path[1:]
    if isinstance(tree, list) and tree:
        i = key if isinstance(key, int) and key < len(tree) else 0
        return [_replace(t, rest, value) if j == i else t for j, t in enumerate(tree)]
    if isinstance(tree, dict) and isinstance(key, str):
        return {**tree, key: _replace(tree.get(key), rest, value)}
    return tree


@settings(FUZZ, max_examples=25)
@given(data=export(), path=PATHS_INTO_EXPORT, value=JSON)
def test_a_damaged_export_merges_or_fails_in_one_line_writing_nothing(env, tmp_path, data, path, value):
    tasks, _ = data
    _run(env, tmp_path, "export.json", json.dumps(_replace(tasks, path, value)).encode())


@FUZZ
@given(value=JSON)
def test_any_json_merges_or_fails_in_one_line_writing_nothing(env, tmp_path, value):
    _run(env, tmp_path, "export.json", json.dumps(value).encode())


def test_a_string_result_is_refused_not_read_as_a_skip(env, tmp_path):
    tasks = [{"id": 1, "data": {"sample_id": "s3"}, "annotations": [{"id": 9, "completed_by": 3, "result": "dog"}]}]
    result = _run(env, tmp_path, "export.json", json.dumps(tasks).encode())
    assert isinstance(result, KibbleError) and "task 0 (id 1) annotation 0: `result` is a string, not a list of results" in str(result)


def test_a_result_from_another_labeling_config_is_refused(env, tmp_path):
    item = {"from_name": "breed", "to_name": "image", "type": "choices", "value": {"choices": ["dog"]}}
    tasks = [{"id": 1, "data": {"sample_id": "s3"}, "annotations": [{"id": 9, "completed_by": 3, "result": [item]}]}]
    result = _run(env, tmp_path, "export.json", json.dumps(tasks).encode())
    assert isinstance(result, KibbleError) and "no `label`, `verdict` or `note` result (from_name ['breed'])" in str(result)


def test_a_large_file_with_one_bad_row_at_the_end_writes_nothing(env, tmp_path):
    lines = ["sample_id,label,verdict,annotator"] + [f"s{1 + i % 4},dog,,annotator{i}" for i in range(20_000)] + ["s9,dog,,late"]
    result = _run(env, tmp_path, "reviews.csv", "\n".join(lines).encode())
    assert isinstance(result, KibbleError) and "line 20002 (sample_id 's9'): unknown sample_id" in str(result)


# ------------------------------------------------------------------ cases the fuzzing turned up
def test_a_trailing_comma_on_the_rows_does_not_shift_the_columns(env, tmp_path):
    # pandas would take the extra first field as an index and read 'dog' as the sample_id
    result = _run(env, tmp_path, "reviews.csv", b"sample_id,label,verdict,annotator\ns1,dog,,alice,\n")
    assert isinstance(result, KibbleError) and "Expected 4 fields in line 2, saw 5" in str(result)


def test_a_short_line_has_empty_cells_not_the_text_nan(env, tmp_path):
    result = _run(env, tmp_path, "reviews.csv", b"sample_id,label,verdict,annotator\ns1,dog,corrected\n")
    assert isinstance(result, KibbleError) and "line 2: empty annotator" in str(result)


def test_a_column_named_twice_is_refused(env, tmp_path):
    result = _run(env, tmp_path, "reviews.csv", b"sample_id,Label,verdict,annotator,label\ns1,dog,,alice,cat\n")
    assert isinstance(result, KibbleError) and "column(s) ['label'] appear more than once" in str(result)


def test_json_that_is_not_utf8_is_one_line(env, tmp_path):
    result = _run(env, tmp_path, "export.json", '[{"data": {"sample_id": "s1é"}}]'.encode("latin-1"))
    assert isinstance(result, KibbleError) and "not UTF-8 text" in str(result)
