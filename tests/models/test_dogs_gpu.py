"""`experiment=dogs_gpu` composes into the one-GPU preset (bf16-mixed, channels_last, compile on
CUDA, loaders sized from the CPU count) and, shrunk to a tiny model on the CPU, trains a step in
bf16-mixed on a generated Stanford Dogs tree."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import compose_config, import_workspace
from kibble.models.classifier import ImageClassifier
from kibble.tasks import train


@pytest.mark.parametrize("task", ["train", "kfold"])
def test_dogs_gpu_composes_to_the_one_gpu_preset(task: str, digits_workspace: Path, tmp_path: Path):
    cfg = compose_config(task, [f"workspace={digits_workspace}", "experiment=dogs_gpu"], output_dir=tmp_path)
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.devices == 1 and cfg.trainer.benchmark
    assert cfg.model.backbone == "tf_efficientnet_lite0" and cfg.model.pretrained == cfg.paths.effnet_lite0  # offline weights
    assert cfg.model.channels_last is True and cfg.model.compile == "auto"
    assert cfg.data.num_workers == "auto" and cfg.data.batch_size == 128


def test_dogs_gpu_trains_a_bf16_step_on_cpu_when_shrunk(stanford_dogs_tree, tmp_path: Path):
    ws = import_workspace(tmp_path / "dogs", ["source=stanford_dogs", f"source.root={stanford_dogs_tree(per_breed=8)}"])
    cfg = compose_config("train", [
        f"workspace={ws}", "experiment=dogs_gpu",
        "model.backbone=test_resnet", "model.pretrained=none", "model.input_size=32",
        "trainer=cpu", "trainer.accelerator=cpu", "trainer.precision=bf16-mixed", "trainer.max_epochs=1", "++trainer.limit_train_batches=1", "++trainer.limit_val_batches=1",
        "++trainer.limit_test_batches=1", "data.num_workers=0", "data.batch_size=4", "callbacks=quiet", "logger=none",
    ], output_dir=tmp_path / "run")
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.precision == "bf16-mixed"
    result = train.run(cfg)
    assert result["n_train"] > 0 and result["n_test"] == 6
    assert (tmp_path / "run" / "metrics.json").is_file()
    # the checkpoint reloads eagerly with NHWC weights
    model = ImageClassifier.load_from_checkpoint(result["best_checkpoint"], map_location="cpu")
    assert model.hparams.channels_last and model.hparams.compile is False and not model.compiled
    conv = next(m for m in model.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
