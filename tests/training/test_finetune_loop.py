"""The cleaning loop in full fine-tune mode (not features mode): k-fold fine-tune -> queue -> simulated
reviews -> merge -> the next round trains on the corrected labels."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from helpers import TINY_FINETUNE_KFOLD, compose_config, import_workspace
from kibble.io import read_json
from kibble.paths import Workspace
from kibble.labels.history import load_events
from kibble.tasks import loop


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_finetune_loop_cleans_and_retrains_on_corrected_labels(digits_workspace: Path, tmp_path: Path):
    images = Workspace(digits_workspace).data_root.resolve()
    ws = Workspace(import_workspace(tmp_path / "ws", ["inject_noise.rate=0.2", f"source.root={images}"]))
    overrides = [f"workspace={ws.root}", *TINY_FINETUNE_KFOLD, "rounds=2", "strategy.budget=0.1", "round_callbacks.report=null"]
    loop.run(compose_config("loop", overrides, output_dir=tmp_path / "out"))

    assert ws.current_round() == 2
    summary = pd.read_csv(ws.root / "loop_summary.csv")
    assert summary["round"].tolist() == [0, 1]
    noise = [summary.loc[0, "noise_before"], *summary["noise_remaining"]]
    assert noise[0] == pytest.approx(0.2, abs=0.01)
    assert noise[1] < noise[0] and noise[2] <= noise[1]  # truthful answers only ever remove noise
    events = load_events(ws.label_events)
    reviewed = events[events["source"] == "simulated"]
    for r in (0, 1):
        round_dir = ws.round_dir(r)
        queue = pd.read_csv(round_dir / "queue.csv", dtype={"sample_id": str})
        assert len(queue) > 0 and set(queue["sample_id"]) <= set(reviewed.loc[reviewed["round"] == r, "sample_id"])
        saved = read_json(round_dir / "fold_0" / "heldout.meta.json")
        assert saved["n_fit"] > 0 and saved["train_images_per_second"] > 0
        config = (round_dir / "config.yaml").read_text()
        assert "kibble.models.classifier.ImageClassifier" in config and "embedder: null" in config  # a fine-tune round
    # round 1 trained on the labels round 0's reviews corrected
    assert read_json(ws.round_dir(0) / "round.json")["manifest_fingerprint"] != read_json(ws.round_dir(1) / "round.json")["manifest_fingerprint"]
