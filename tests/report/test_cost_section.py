"""The round report shows what each fold cost, from rounds/NNN/metrics.json `fold_costs`."""

from __future__ import annotations

import json
from pathlib import Path

from kibble.report.round import cost_sections


def test_cost_section_lists_every_fold_with_its_device_and_throughput(tmp_path: Path):
    costs = [{"fold": k, "device": "NVIDIA H100 80GB HBM3", "world_size": 1, "seconds": 10.0 + k, "train_images_per_second": 812.5,
              "predict_images_per_second": 2400.0, "peak_device_memory_mb": 9123.4} for k in range(3)]
    (tmp_path / "metrics.json").write_text(json.dumps({"fold_costs": costs}))
    [section] = cost_sections(None, tmp_path)
    assert section.title == "Cost per fold"
    assert section.body.count("NVIDIA H100 80GB HBM3") == 3 and "812.5" in section.body and "33.0 s" in section.body


def test_no_cost_section_without_fold_costs(tmp_path: Path):
    (tmp_path / "metrics.json").write_text(json.dumps({"round": 0}))
    assert cost_sections(None, tmp_path) == []
