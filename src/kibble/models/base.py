"""Shared training logic for the full fine-tune and the features-head modules."""

from __future__ import annotations

from typing import Any, Callable

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score


def _metrics(num_classes: int, prefix: str) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes=num_classes, average="micro"),
            "f1_macro": MulticlassF1Score(num_classes=num_classes, average="macro"),
        },
        prefix=prefix,
    )


class ClassifierBase(L.LightningModule):
    """Loss, per-stage torchmetrics, optimizer + per-step scheduler, predict_step for the store."""

    num_classes: int

    def setup_common(self, num_classes: int, optimizer: Callable | None, scheduler: Callable | None, label_smoothing: float) -> None:
        self.num_classes = num_classes
        self._optimizer_factory = optimizer
        self._scheduler_factory = scheduler
        self.label_smoothing = label_smoothing
        self.train_metrics = _metrics(num_classes, "train/")
        self.val_metrics = _metrics(num_classes, "val/")
        self.test_metrics = _metrics(num_classes, "test/")

    def _step(self, batch, metrics: MetricCollection, stage: str):
        x, y, _ = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing if stage == "train" else 0.0)
        metrics.update(logits.detach(), y)
        on_step = stage == "train"
        # val/test loss is averaged over every rank's shard (an epoch-level all-reduce); the train loss
        # is logged per step, where a per-step all-reduce would cost throughput for a progress number
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=stage != "test", batch_size=len(y), sync_dist=not on_step)
        return loss

    def _log_epoch_metrics(self, metrics: MetricCollection, stage: str) -> None:
        # Accuracy / F1 are logged once per epoch, not handed to self.log every step: Lightning's
        # per-call bookkeeping of Metric objects cost ~5 % of a small model's training throughput
        # (scripts/bench_train_overhead.py). compute() already syncs the DDP ranks, so every rank logs
        # the same value; sync_dist=True (a mean of equal values, once per epoch) states it to Lightning,
        # so checkpoint selection and early stopping provably agree across ranks.
        if not any(m.update_called for m in metrics.values()):
            return
        values = metrics.compute()
        self.log_dict({k: v.float() for k, v in values.items()}, prog_bar=stage == "val", sync_dist=True)
        metrics.reset()

    def training_step(self, batch, batch_idx):
        return self._step(batch, self.train_metrics, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, self.val_metrics, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, self.test_metrics, "test")

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics(self.train_metrics, "train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics(self.val_metrics, "val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics(self.test_metrics, "test")

    predict_embeddings: bool = False  # set by the caller to also return pre-logit embeddings

    def embed_and_classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(embedding, logits); subclasses return their pre-logit features."""
        return x.flatten(1), self(x)

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        x, _, index = batch
        if self.predict_embeddings:
            embedding, logits = self.embed_and_classify(x)
            extra = {"embedding": embedding.float()}
        else:
            logits, extra = self(x), {}
        logits = logits.float()
        return {"index": index, "logits": logits, "probs": logits.softmax(dim=-1), **extra}

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        if self._optimizer_factory is None:
            optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
        else:
            optimizer = self._optimizer_factory(params=params)
        if self._scheduler_factory is None:
            return optimizer
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 1000
        scheduler = self._scheduler_factory(optimizer, total_steps=int(total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
