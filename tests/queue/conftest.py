"""Fixtures shared by the queue tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers import import_workspace


@pytest.fixture(scope="module")
def pool_workspace(digits_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits with 80 % of train moved to the unlabeled pool (true labels kept for the annotator)."""
    ws = tmp_path_factory.mktemp("budget") / "ws"
    shutil.copytree(digits_workspace, ws, ignore=shutil.ignore_patterns("runs", "multiruns", "cache", "rounds"))
    return import_workspace(ws, ["overwrite=true", "pool.fraction=0.8"])
