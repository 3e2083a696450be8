"""scripts/bench_cleaning.py's protocol plumbing: the dev choice lands in the strategy config and is found again as an arm."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_cleaning  # noqa: E402

from kibble.benchmarks.cleaning_arms import all_arms  # noqa: E402
from kibble.queue.callback import BuildQueue  # noqa: E402


@pytest.mark.parametrize("choice", ["combine(2*normalized_margin+neighbors)", "normalized_margin", "queue mix strategy=all"])
def test_written_default_composes_and_maps_back_to_its_arm(choice, tmp_path, monkeypatch):
    target = tmp_path / "default.yaml"
    shutil.copy(bench_cleaning.DEFAULT_YAML, target)
    monkeypatch.setattr(bench_cleaning, "DEFAULT_YAML", target)
    configs = {a.name: a.config for a in all_arms()}
    bench_cleaning.write_default(configs[choice], choice)
    bench_cleaning.write_default(configs[choice], choice)  # re-running replaces, never stacks
    text = target.read_text()
    assert text.count("# Chosen on dev noise settings only") == 1
    written = yaml.safe_load(text)
    assert written["_target_"] == "kibble.queue.callback.BuildQueue" and written["budget"] == 0.1
    assert bench_cleaning.arm_for_config(written, configs) == choice
    BuildQueue(strategies=written["strategies"], quotas=written["quotas"], params=written["params"])  # a valid queue config


def test_shipped_config_maps_to_an_arm():
    configs = {a.name: a.config for a in all_arms()}
    assert bench_cleaning.arm_for_config(bench_cleaning.run_config_strategy(), configs) is not None
