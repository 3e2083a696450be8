"""Queue files: queue.csv, queue.labelstudio.json (Label Studio tasks + predictions), labeling_config.xml."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kibble import KibbleError
from kibble.data.classes import ClassList
from kibble.queue.image_urls import image_url_builder
from kibble.queue.formats import (
    QUEUE_COLUMNS,
    labeling_config,
    write_queue_files,
)
from kibble.labels.history import VERDICTS

CLASSES = ClassList.from_names(
    ["n02085620-Chihuahua", "n02086240-Shih-Tzu", "n02099601-golden_retriever"],
    {"n02085620-Chihuahua": "Chihuahua", "n02086240-Shih-Tzu": "Shih-Tzu", "n02099601-golden_retriever": "Golden & Retriever"},
)


def make_queue() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "queue_id": ["r002-0001", "r002-0002", "r002-0003"],
            "round": [2, 2, 2],
            "rank": [1, 2, 3],
            "sample_id": ["a", "b", "c"],
            "path": ["Images/n02085620-Chihuahua/a.jpg", "Images/n02086240-Shih-Tzu/b b.jpg", "Images/x/c.jpg"],
            "given_label": ["n02085620-Chihuahua", "n02086240-Shih-Tzu", None],
            "suggested_label": ["n02099601-golden_retriever", None, "n02085620-Chihuahua"],
            "score": [0.91, 0.5, float("nan")],
            "strategy": ["kfold", "entropy", "least_confidence"],
            "reason": ["oof argmax != label", "high entropy", "pool"],
            "kind": ["relabel", "relabel", "new"],
        }
    )


def test_writes_three_files_with_local_files_urls(tmp_path):
    data_root = tmp_path / "data"
    paths = write_queue_files(make_queue(), tmp_path / "rounds" / "002", CLASSES,
                              {"scheme": "local_files", "document_root": str(tmp_path)}, data_root=data_root)
    assert {p.name for p in paths.values()} == {"queue.csv", "queue.labelstudio.json", "labeling_config.xml"}
    assert not list((tmp_path / "rounds" / "002").glob(".*.tmp"))

    csv = pd.read_csv(paths["csv"])
    assert list(csv.columns[: len(QUEUE_COLUMNS)]) == QUEUE_COLUMNS and "kind" in csv.columns
    assert csv["sample_id"].tolist() == ["a", "b", "c"]

    tasks = json.loads(paths["labelstudio"].read_text())
    assert isinstance(tasks, list) and len(tasks) == 3
    first = tasks[0]
    assert first["data"]["image"] == "/data/local-files/?d=data/Images/n02085620-Chihuahua/a.jpg"
    assert first["data"]["sample_id"] == "a" and first["data"]["queue_id"] == "r002-0001"
    assert first["data"]["given_label"] == "n02085620-Chihuahua" and first["data"]["round"] == 2
    (pred,) = first["predictions"]
    assert pred["model_version"] == "kibble-round-002" and pred["score"] == pytest.approx(0.91)
    (res,) = pred["result"]
    assert res["from_name"] == "label" and res["to_name"] == "image" and res["type"] == "choices"
    assert res["value"] == {"choices": ["n02099601-golden_retriever"]}
    # spaces are URL-quoted; no suggestion -> no prediction; NaN score -> prediction without score
    assert tasks[1]["data"]["image"].endswith("Shih-Tzu/b%20b.jpg") and "predictions" not in tasks[1]
    assert tasks[2]["data"]["given_label"] is None and "score" not in tasks[2]["predictions"][0]
    assert tasks[2]["data"]["kind"] == "new"


def test_document_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", str(tmp_path / "data"))
    url = image_url_builder(None, data_root=tmp_path / "data" / "dogs")
    assert url("Images/x.jpg") == "/data/local-files/?d=dogs/Images/x.jpg"
    assert url(str(tmp_path / "data" / "other" / "y.jpg")) == "/data/local-files/?d=other/y.jpg"


def test_url_prefix_and_callable(tmp_path):
    queue = make_queue()
    paths = write_queue_files(queue, tmp_path, CLASSES, "https://imgs.example.com/dogs/", data_root=tmp_path)
    tasks = json.loads(paths["labelstudio"].read_text())
    assert tasks[0]["data"]["image"] == "https://imgs.example.com/dogs/Images/n02085620-Chihuahua/a.jpg"
    paths = write_queue_files(queue, tmp_path, CLASSES, lambda p: f"s3://bucket/{p}")
    assert json.loads(paths["labelstudio"].read_text())[2]["data"]["image"] == "s3://bucket/Images/x/c.jpg"


def test_image_outside_document_root_fails_and_writes_nothing(tmp_path):
    out = tmp_path / "round"
    with pytest.raises(KibbleError, match="not under the Label Studio document root"):
        write_queue_files(make_queue(), out, CLASSES, {"document_root": str(tmp_path / "elsewhere")}, data_root=tmp_path / "data")
    assert not out.exists()


def test_bad_queue_fails_clearly(tmp_path):
    with pytest.raises(KibbleError, match=r"missing column\(s\) \['reason'\]"):
        write_queue_files(make_queue().drop(columns="reason"), tmp_path, CLASSES)
    bad = make_queue()
    bad.loc[1, "suggested_label"] = "wolf"
    with pytest.raises(KibbleError, match="suggested_label 'wolf' is not a class"):
        write_queue_files(bad, tmp_path, CLASSES)
    assert list(tmp_path.iterdir()) == []


def test_labeling_config_is_valid_xml_with_every_class():
    root = ET.fromstring(labeling_config(CLASSES))
    assert root.tag == "View"
    image = root.find("Image")
    assert image.get("name") == "image" and image.get("value") == "$image"
    label = root.find("Choices[@name='label']")
    assert label.get("toName") == "image" and label.get("choice") == "single"
    choices = label.findall("Choice")
    # buttons (and the Filter box) show names; the alias is the id Label Studio exports
    assert [c.get("value") for c in choices] == ["Chihuahua", "Shih-Tzu", "Golden & Retriever"]
    assert [c.get("alias") for c in choices] == CLASSES.names
    assert choices[2].get("hint") == "Golden & Retriever"  # escaped in the file, intact once parsed
    verdict = root.find("Choices[@name='verdict']")
    assert [c.get("value") for c in verdict.findall("Choice")] == list(VERDICTS)
    assert root.find("TextArea").get("name") == "note"
    assert root.find("Filter").get("toName") == "label"


def test_humans_read_names_machines_read_ids(tmp_path):
    """queue.csv keeps ids in given_label/suggested_label and adds given_name/suggested_name; the Label Studio
    header shows the names, the pre-annotation stays the id (the choice's alias)."""
    paths = write_queue_files(make_queue(), tmp_path, CLASSES, "https://imgs/")
    csv = pd.read_csv(paths["csv"], dtype=str, keep_default_na=False)
    assert list(csv.columns) == [*QUEUE_COLUMNS, "given_name", "suggested_name", "kind"]
    assert csv["given_label"].tolist() == ["n02085620-Chihuahua", "n02086240-Shih-Tzu", ""]
    assert csv["given_name"].tolist() == ["Chihuahua", "Shih-Tzu", ""]
    assert csv["suggested_name"].tolist() == ["Golden & Retriever", "", "Chihuahua"]
    tasks = json.loads(paths["labelstudio"].read_text())
    assert [(t["data"]["given_name"], t["data"]["suggested_name"]) for t in tasks] == [
        ("Chihuahua", "Golden & Retriever"), ("Shih-Tzu", "none"), ("none", "Chihuahua")]
    assert tasks[0]["predictions"][0]["result"][0]["value"] == {"choices": ["n02099601-golden_retriever"]}
    header = ET.fromstring(paths["labeling_config"].read_text()).find("Header").get("value")
    assert header == "Given label: $given_name   (model suggests: $suggested_name)"
    # written again from its own queue.csv (name columns included): the names are recomputed, not doubled
    again = write_queue_files(pd.read_csv(paths["csv"], dtype={"given_label": str, "suggested_label": str}), tmp_path / "b", CLASSES)
    assert pd.read_csv(again["csv"]).columns.tolist() == csv.columns.tolist()


def test_shared_display_names_are_told_apart():
    """Two classes with one display name (or a name that is another class's id) show `name (id)`."""
    classes = ClassList.from_names(["n1", "n2", "n3", "dog"], {"n1": "Terrier", "n2": "terrier", "n3": "dog", "dog": "Dog"})
    assert classes.shown_names() == {"n1": "Terrier (n1)", "n2": "terrier (n2)", "n3": "dog (n3)", "dog": "Dog (dog)"}
    choices = ET.fromstring(labeling_config(classes)).find("Choices[@name='label']").findall("Choice")
    assert [(c.get("value"), c.get("alias")) for c in choices] == [
        ("Terrier (n1)", "n1"), ("terrier (n2)", "n2"), ("dog (n3)", "n3"), ("Dog (dog)", "dog")]
    plain = ET.fromstring(labeling_config(ClassList.from_names(["cat"]))).find("Choices[@name='label']/Choice")
    assert plain.get("value") == "cat" and plain.get("alias") is None  # no display name: the id is the name


def _reference_task(row: dict, url, model_version) -> dict:
    """The task of one queue row written out plainly (what `task_lines` builds column-wise)."""
    clean = {k: (None if v is None or (isinstance(v, float) and v != v) else v) for k, v in row.items()}
    data = {"image": url(str(clean["path"]))}
    for col in ["sample_id", "queue_id", "round", "rank", "given_label", "suggested_label", "score", "strategy", "reason", "kind"]:
        data[col] = clean.get(col)
    data["given_name"], data["suggested_name"] = clean.get("given_name") or "none", clean.get("suggested_name") or "none"
    task = {"data": data}
    if clean["suggested_label"] is not None:
        prediction = {"model_version": model_version or f"kibble-round-{int(clean['round']):03d}",
                      "result": [{"id": f"q{str(clean['queue_id'])[-20:]}", "from_name": "label", "to_name": "image", "type": "choices",
                                  "value": {"choices": [str(clean["suggested_label"])]}}]}
        if clean["score"] is not None:
            prediction["score"] = float(clean["score"])
        task["predictions"] = [prediction]
    return task


@pytest.mark.parametrize("model_version", [None, "v-é"])
def test_task_lines_equal_the_plain_task_of_each_row(model_version):
    import json

    import numpy as np

    from kibble.queue.formats import labelstudio_tasks, task_lines, with_names

    rng = np.random.default_rng(1)
    n = 60
    names = {"c0": 'Chien "fou"', "c1": "犬", "c2": "c2"}
    queue = pd.DataFrame({
        "queue_id": [f"r001-{i:010d}" for i in range(n)], "round": 1, "rank": np.arange(1, n + 1),
        "sample_id": [f"s{i}\\x" if i % 7 == 0 else f"s{i}" for i in range(n)], "path": [f"img/ä {i}.png" for i in range(n)],
        "given_label": rng.choice(["c0", "c1", "c2", None], n), "suggested_label": rng.choice(["c0", "c1", None], n),
        "score": np.where(rng.random(n) < 0.2, np.nan, rng.random(n)), "strategy": "kfold", "reason": 'kfold 0.5; "x"', "kind": "relabel",
    })
    url = lambda p: "/data/local-files/?d=" + p  # noqa: E731
    lines = task_lines(queue, url, model_version, names)
    expected = [_reference_task(row, url, model_version) for row in with_names(queue, names).to_dict("records")]
    assert [json.loads(line) for line in lines] == expected
    assert labelstudio_tasks(queue, url, model_version, names) == expected
    assert lines[0] == json.dumps(expected[0], ensure_ascii=False)  # the very text json.dumps writes


@given(st.lists(st.text(alphabet="ab./_-~ é%", min_size=1, max_size=12), min_size=1, max_size=20),
       st.sampled_from([("/data", "/data/imgs"), ("/data", "/data"), ("/data/", "/data/a b"), ("/other", "/data/imgs")]))
def test_column_wise_local_files_urls_equal_the_per_path_ones(paths, roots):
    """The column-wise fast path (plain relative paths under the document root) gives each path's own URL."""
    from kibble.queue.image_urls import image_url_builder

    document_root, data_root = roots
    one = image_url_builder({"document_root": document_root}, data_root)
    many = getattr(one, "many", None)
    if many is None:  # a data root outside the document root or one that needs quoting: per path only
        assert not data_root.startswith(document_root.rstrip("/") + "/") or " " in data_root
        return
    expected = []
    for path in paths:
        try:
            expected.append(one(path))
        except KibbleError:
            expected.append(KibbleError)
    if KibbleError in expected:
        with pytest.raises(KibbleError):
            many(pd.Series(paths, dtype="str"))
    else:
        assert list(many(pd.Series(paths, dtype="str"))) == expected
