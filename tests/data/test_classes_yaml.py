"""A hand-edited classes.yaml that is broken gives one line with the file and the line number (issue 13, item 7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kibble import KibbleError
from kibble.data.classes import ClassList


def load(tmp_path: Path, text: str | bytes) -> ClassList:
    path = tmp_path / "classes.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return ClassList.load(path)


@pytest.mark.parametrize("text, expected", [
    ("classes:\n  - name: cat\n  - name: dog: big\n", "line 3 column 14: not valid YAML (mapping values are not allowed here)"),
    ("classes:\n\t- cat\n", "line 2 column 1: not valid YAML (found character '\\t' that cannot start any token)"),
    ("classes:\n  - name: cat\n  - name: [dog\n", "not valid YAML (expected ',' or ']', but got '<stream end>')"),
    ("classes:\n  - name: cat\n  - [dog, 2]\n", "line 3: classes[1] is a list, not a class; write `- name: <class>`"),
    ("classes:\n  - name: cat\n  - 1.5\n", "line 3: classes[1] is a number, not a class"),
    ("classes:\n  - name: cat\n\n  - weight: 2\n    group: x\n", "line 4: classes[1] has no `name`; give every class a name"),
    ("classes:\n  - name: cat\n  - name: ''\n", "line 3: classes[1] has no `name`"),
    ("classes:\n  - name: {a: 1}\n", "line 2: classes[0] has `name: {'a': 1}`, not a class name"),
    ("- cat\n- dog\n", "line 1: the file is a list; classes.yaml is a mapping with a `classes:` list"),
    ("classes: [cat, dog]\ntargets: [0.8]\n", "line 2: `targets:` is a list; it must be a mapping"),
    ("classes: [cat, dog]\ntargets: {class_f1: [cat]}\n", "`targets.class_f1` is a list; use a mapping of class name -> F1 target"),
    ("names: [cat]\n", "needs a non-empty `classes:` list"),
    (b"classes: [caf\xe9]\n", "not UTF-8 text (byte 13); save classes.yaml as UTF-8"),
])
def test_a_broken_classes_file_is_one_line_with_the_line_number(tmp_path, text, expected):
    with pytest.raises(KibbleError) as err:
        load(tmp_path, text)
    line = str(err.value)
    assert line.startswith(str(tmp_path / "classes.yaml")) and expected in line and "\n" not in line, line


def test_plain_names_numbers_and_a_bom_still_load(tmp_path):
    assert load(tmp_path, "\ufeffclasses: [cat, 3, {name: dog}]\n").names == ["cat", "3", "dog"]
