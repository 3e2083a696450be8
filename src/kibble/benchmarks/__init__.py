"""Shared plumbing of scripts/bench_*.py: find the shared data, record results in docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

PROJECT_ROOT = Path(__file__).resolve().parents[3]  # src/kibble/benchmarks/__init__.py -> the checkout


def shared_imagewoof() -> Path | None:
    """../shared/data/imagewoof beside the checkout (or $KIBBLE_IMAGEWOOF), None when absent."""
    candidates = [os.environ.get("KIBBLE_IMAGEWOOF"), PROJECT_ROOT.parent / "shared" / "data" / "imagewoof"]
    for c in candidates:
        if c and (Path(c) / "train").is_dir():
            return Path(c).resolve()
    return None


@dataclass(frozen=True)
class ImagewoofBench:
    """Where a benchmark's Imagewoof workspace lives; every benchmark shares one weights file and one embedding cache."""

    root: Path  # the shared data set
    work: Path  # the benchmarks' work dir (workspaces/bench)
    weights: Path  # offline effnet-lite0 weights converted for timm
    workspace: Path

    @property
    def cache(self) -> Path:
        return self.work / "cache"

    @property
    def overrides(self) -> list[str]:
        """workspace, shared cache and weights: the overrides every task of the benchmark takes."""
        return [f"workspace={self.workspace}", f"paths.cache_dir={self.cache}", f"paths.effnet_lite0={self.weights}"]


def imagewoof_bench(workdir: str | Path, name: str) -> ImagewoofBench | None:
    """The set-up of an Imagewoof benchmark named `name`, or None (after printing SKIP) without the shared data."""
    root = shared_imagewoof()
    if root is None:
        print("SKIP: ../shared/data/imagewoof not found (set KIBBLE_IMAGEWOOF)")
        return None
    from kibble.models.weights import convert_effnet_lite0

    work = Path(workdir).resolve()
    weights = convert_effnet_lite0(work / "weights" / "tf_efficientnet_lite0.pth")
    return ImagewoofBench(root, work, weights, work / name)


def command_line() -> str:
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(PROJECT_ROOT)
    except ValueError:
        pass
    return " ".join(["python", str(script), *map(shlex.quote, sys.argv[1:])])


def record(title: str, table: pd.DataFrame, notes: list[str] | None = None, path: Path | None = None) -> Path:
    """Write this benchmark's section (title, exact command, machine, table, notes) into docs/benchmarks.md,
    in place of its previous run (git keeps the history; the page shows the current numbers)."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## {title}", "",
        f"Command: `{command_line()}`  ",
        f"Run: {stamp}, {os.cpu_count()} CPU cores, {platform.machine()}, Python {platform.python_version()}", "",
        table.to_markdown(index=False, floatfmt=".4g"), "",
    ]
    lines += [f"- {n}" for n in (notes or [])]
    return replace_section(f"## {title}", "\n".join(lines) + "\n", path)


def replace_section(heading: str, text: str, path: Path | None = None) -> Path:
    """Put `text` (starting with the line `heading`, e.g. "## Store (scripts/bench_x.py)") in place of that
    section of docs/benchmarks.md: a benchmark re-run replaces its numbers, never appends a second copy.

    The section runs from its heading to the next "## " heading; appended at the end the first time.
    """
    path = path or PROJECT_ROOT / "docs" / "benchmarks.md"
    doc = path.read_text() if path.is_file() else "# Benchmarks\n\nNumbers from real runs; each section names the command that produced it.\n"
    lines = doc.splitlines()
    try:
        start = lines.index(heading)
    except ValueError:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(doc.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n")
        return path
    end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
    new = lines[:start] + text.rstrip("\n").splitlines() + ([""] if end < len(lines) else []) + lines[end:]
    path.write_text("\n".join(new) + "\n")
    return path
