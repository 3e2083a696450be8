"""A benchmark re-run replaces its own section of docs/benchmarks.md; it never appends a second copy."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kibble.benchmarks import record


def test_record_replaces_its_section_and_keeps_the_others_in_place(tmp_path: Path):
    doc = tmp_path / "benchmarks.md"
    record("A", pd.DataFrame({"x": [1]}), ["first run"], path=doc)
    record("B", pd.DataFrame({"x": [2]}), path=doc)
    record("A", pd.DataFrame({"x": [3]}), ["second run"], path=doc)
    text = doc.read_text()
    assert text.count("## A") == 1 and text.count("## B") == 1
    assert "second run" in text and "first run" not in text
    assert text.index("## A") < text.index("## B")  # the re-run keeps its place on the page
