"""build_trainer with no inner validation rows (data.inner_val_fraction=0): the configured early stopping
and checkpoint watch val/acc, which never comes; the fit must run to max_epochs and keep the last epoch."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from kibble.config import compose_config
from kibble.training.build import build_trainer


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.layer(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val/acc", (self.layer(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader(n: int = 32) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 4, generator=g), torch.randint(0, 2, (n,), generator=g)), batch_size=8)


def config(tmp_path, *extra: str):
    return compose_config("kfold", ["workspace=unused", "model=features_lite0", "trainer.max_epochs=3", "logger=none",
                                    "trainer.accelerator=cpu", "trainer.devices=1", *extra], output_dir=tmp_path)


def test_without_val_early_stopping_is_left_out_and_the_last_epoch_is_kept(tmp_path):
    trainer = build_trainer(config(tmp_path), tmp_path, with_logger=False, has_val=False, enable_progress_bar=False)
    assert not any(isinstance(c, EarlyStopping) for c in trainer.callbacks)
    checkpoint = next(c for c in trainer.callbacks if isinstance(c, ModelCheckpoint))
    assert checkpoint.monitor is None
    trainer.fit(Tiny(), train_dataloaders=loader())
    assert trainer.current_epoch == 3 and checkpoint.best_model_path  # ran every epoch, saved the last
    assert torch.load(checkpoint.best_model_path, weights_only=False)["epoch"] == 2


def test_with_val_the_configured_callbacks_watch_it(tmp_path):
    trainer = build_trainer(config(tmp_path), tmp_path, with_logger=False, enable_progress_bar=False)
    stopping = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
    checkpoint = next(c for c in trainer.callbacks if isinstance(c, ModelCheckpoint))
    assert len(stopping) == 1 and stopping[0].monitor == "val/acc" and checkpoint.monitor == "val/acc"
    trainer.fit(Tiny(), train_dataloaders=loader(), val_dataloaders=loader(16))
    assert checkpoint.best_model_path


def test_without_val_a_top_k_checkpoint_keeps_only_the_last(tmp_path):
    """Lightning refuses save_top_k > 1 without a metric to rank by; with no val rows there is only the last epoch."""
    trainer = build_trainer(config(tmp_path, "callbacks.model_checkpoint.save_top_k=3"), tmp_path, with_logger=False, has_val=False,
                            enable_progress_bar=False)
    checkpoint = next(c for c in trainer.callbacks if isinstance(c, ModelCheckpoint))
    assert checkpoint.monitor is None and checkpoint.save_top_k == 1
    trainer.fit(Tiny(), train_dataloaders=loader())
    assert torch.load(checkpoint.best_model_path, weights_only=False)["epoch"] == 2
