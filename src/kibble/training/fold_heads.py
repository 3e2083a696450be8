"""Features mode's folds trained together: K linear heads as one batched model in one Lightning fit.

Why: in features mode a fold is a linear head over cached embeddings, seconds of arithmetic, yet
each fold paid for its own Trainer, checkpoint and prediction Trainer, and five small matrix
products per step where one larger one does the work (a 5-fold Imagewoof round took 1.6x
scikit-learn's LogisticRegression `cross_val_predict`). The heads share nothing but the input
matrix, so they train as one (K, D, C) weight:

- each head draws its own shuffled batches from its own fold's fit rows, with the fold's own
  standardisation, so a head sees what it would see trained alone (batch size, steps per epoch);
- AdamW is elementwise and the loss is the sum of the heads' mean losses, so one optimizer over the
  stacked weight takes each head's own step;
- each head has its own early stopping and best epoch on its own inner validation split (the
  config's `callbacks.early_stopping` / `model_checkpoint` settings); a stopped head drops out of the
  products, and the fit ends when every head has stopped or at `trainer.max_epochs`.

The fold files it writes (heldout/others stores, sidecars, a Lightning checkpoint per fold) are the
ones a fold trained alone writes, so assembly, resume of a round and `kibble predict` do not know
the difference. `cv.heads_together=false` trains the folds one by one instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset


@dataclass
class HeadData:
    """One fold's head: positions of its fit and inner-val rows in the feature matrix, their class
    indices, and the standardisation statistics of its fit rows."""

    fit: torch.Tensor
    fit_y: torch.Tensor
    val: torch.Tensor
    val_y: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor


class HeadBatches(IterableDataset):
    """Per step: (x (K, B, D) standardised per head, y (K, B), mask (K, B)); a fresh per-head shuffle
    every epoch (train) or each head's rows in order (validation). Shorter heads are padded, mask 0."""

    def __init__(self, matrix: torch.Tensor, heads: list[HeadData], batch_size: int, train: bool, seed: int = 0):
        self.matrix, self.heads, self.batch_size, self.train = matrix, heads, int(batch_size), train
        self.rows = [(h.fit, h.fit_y) if train else (h.val, h.val_y) for h in heads]
        self.generator = torch.Generator().manual_seed(int(seed))
        self.active: torch.Tensor | None = None  # heads still training (set by the module); None: all

    def __len__(self) -> int:
        return math.ceil(max((len(r) for r, _ in self.rows), default=0) / self.batch_size)

    def __iter__(self):
        heads = list(range(len(self.heads))) if self.active is None else self.active.tolist()
        orders = [torch.randperm(len(rows), generator=self.generator) if self.train else None for rows, _ in self.rows]
        which = torch.tensor(heads)
        for step in range(len(self)):
            # one fresh buffer per step (the loader may hold the previous batch), filled in place
            x = torch.zeros(len(heads), self.batch_size, self.matrix.shape[1], dtype=self.matrix.dtype)
            y = torch.zeros(len(heads), self.batch_size, dtype=torch.long)
            mask = torch.zeros(len(heads), self.batch_size)
            for i, k in enumerate(heads):
                rows, labels = self.rows[k]
                lo, hi = step * self.batch_size, min((step + 1) * self.batch_size, len(rows))
                if hi <= lo:
                    continue
                take = orders[k][lo:hi] if orders[k] is not None else slice(lo, hi)
                n = hi - lo
                torch.index_select(self.matrix, 0, rows[take], out=x[i, :n])
                x[i, :n].sub_(self.heads[k].mean).div_(self.heads[k].std)
                y[i, :n] = labels[take]
                mask[i, :n] = 1.0
            yield x, y, mask, which


class FoldHeads(L.LightningModule):
    """K linear heads (weight (K, D, C), bias (K, C)), each with its own early stopping and best weights.

    monitor: "val/acc" (mode max) or "val/loss" (mode min), each head on its own inner split; patience
    None: no early stopping; select_best False: the last epoch's weights (no checkpoint selection).
    """

    def __init__(self, n_heads: int, in_features: int, num_classes: int, dropout: float = 0.0, label_smoothing: float = 0.0,
                 optimizer=None, scheduler=None, monitor: str = "val/acc", patience: int | None = None, min_delta: float = 0.0,
                 select_best: bool = True):
        super().__init__()
        if monitor not in ("val/acc", "val/loss"):
            raise ValueError(f"heads trained together monitor val/acc or val/loss, not {monitor!r}")
        bound = 1.0 / math.sqrt(in_features)  # nn.Linear's default initialisation, per head
        # one Parameter per head: a step in which a head has no rows leaves its gradient None, so AdamW skips it
        # (no momentum or weight-decay drift) and keeps the head's own step count, as if it trained alone
        self.weights = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.empty(in_features, num_classes).uniform_(-bound, bound)) for _ in range(n_heads)])
        self.biases = torch.nn.ParameterList([torch.nn.Parameter(torch.empty(num_classes).uniform_(-bound, bound)) for _ in range(n_heads)])
        self.dropout = float(dropout)
        self._bits = np.random.default_rng(0)  # re-seeded by seed_dropout
        self.label_smoothing = float(label_smoothing)
        self._optimizer_factory, self._scheduler_factory = optimizer, scheduler
        self.monitor, self.patience, self.min_delta, self.select_best = monitor, patience, float(min_delta), bool(select_best)
        # the selection state is in buffers, so it travels with the module (and any checkpoint of it)
        self.register_buffer("best_weight", torch.stack([w.detach() for w in self.weights]).clone())
        self.register_buffer("best_bias", torch.stack([b.detach() for b in self.biases]).clone())
        self.register_buffer("best_score", torch.full((n_heads,), math.nan))
        self.register_buffer("stop_score", torch.full((n_heads,), math.nan))  # EarlyStopping's own best (moves by > min_delta)
        self.register_buffer("best_epoch", torch.full((n_heads,), -1, dtype=torch.long))
        self.register_buffer("bad_epochs", torch.zeros(n_heads, dtype=torch.long))
        self.register_buffer("stopped", torch.zeros(n_heads, dtype=torch.bool))
        self.register_buffer("stop_epoch", torch.full((n_heads,), -1, dtype=torch.long))
        self._val_sums = torch.zeros(3, n_heads)  # correct, loss sum, rows

    @property
    def n_heads(self) -> int:
        return len(self.weights)

    def forward(self, x: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
        """x (H, B, D) for the heads `heads` -> logits (H, B, C)."""
        which = heads.tolist()
        weight = torch.stack([self.weights[k] for k in which])
        bias = torch.stack([self.biases[k] for k in which])
        return torch.baddbmm(bias.unsqueeze(1), x, weight)

    def training_step(self, batch, batch_idx):
        x, y, mask, heads = batch
        rows = mask.sum(1) > 0
        if not bool(rows.all()):  # a shorter head's epoch is over: it sits this step out (its gradient stays None)
            if not bool(rows.any()):
                return None  # Lightning skips the optimizer step
            x, y, mask, heads = x[rows], y[rows], mask[rows], heads[rows]
        logits = self(self._drop(x), heads)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none", label_smoothing=self.label_smoothing).view_as(mask)
        per_head = (loss * mask).sum(1) / mask.sum(1).clamp_min(1)
        total = per_head.sum()  # disjoint parameters: each head gets its own mean loss's gradient
        self.log("train/loss", per_head.mean(), on_step=True, on_epoch=True, prog_bar=True, batch_size=int(mask.sum()))
        return total

    def validation_step(self, batch, batch_idx):
        x, y, mask, heads = batch
        logits = self(x, heads)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none").view_as(mask)
        self._val_sums[0].index_add_(0, heads, ((logits.argmax(-1) == y).float() * mask).sum(1))
        self._val_sums[1].index_add_(0, heads, (loss * mask).sum(1))
        self._val_sums[2].index_add_(0, heads, mask.sum(1))

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        correct, loss_sum, rows = self._val_sums
        seen = rows > 0
        if not bool(seen.any()):
            return
        acc, loss = correct / rows.clamp_min(1), loss_sum / rows.clamp_min(1)
        self.log_dict({"val/acc": acc[seen].mean(), "val/loss": loss[seen].mean()}, prog_bar=True)
        score = acc if self.monitor == "val/acc" else -loss  # larger is better
        if self.select(score, seen, int(self.current_epoch)):
            self.trainer.should_stop = True

    @torch.no_grad()
    def select(self, score: torch.Tensor, seen: torch.Tensor, epoch: int) -> bool:
        """One epoch's early stopping and best-weights bookkeeping per head (score: larger is better;
        seen: heads validated this epoch); True when every head has stopped."""
        for k in torch.nonzero(seen & ~self.stopped).flatten().tolist():
            current, best, stop_best = float(score[k]), float(self.best_score[k]), float(self.stop_score[k])
            if math.isnan(best) or current > best:  # ModelCheckpoint: strict improvement, the first best kept
                self.best_score[k], self.best_epoch[k] = score[k], epoch
                self.best_weight[k].copy_(self.weights[k])
                self.best_bias[k].copy_(self.biases[k])
            # Lightning's EarlyStopping: its own best moves only on a gain beyond min_delta; patience counts the others
            if math.isnan(stop_best) or current - self.min_delta > stop_best:
                self.stop_score[k], self.bad_epochs[k] = score[k], 0
            else:
                self.bad_epochs[k] += 1
                if self.patience is not None and int(self.bad_epochs[k]) >= self.patience:
                    self.stopped[k], self.stop_epoch[k] = True, epoch
        return bool(self.stopped.all())

    def on_train_epoch_start(self) -> None:
        # before this epoch's loaders are iterated (Lightning calls iter() after this hook)
        self._narrow(self.trainer.train_dataloader)
        self._narrow(self.trainer.val_dataloaders)

    def seed_dropout(self, seed: int) -> None:
        self._bits = np.random.default_rng(int(seed))

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        """Input dropout. On a CPU the keep mask comes from numpy's PCG64 as 16-bit integers: torch's CPU
        generator made the mask of a (5, 256, 1,280) batch in 18 ms, over half of a training step; this
        takes ~3 ms (p is exact to 1/65,536). Elsewhere torch's own dropout (fast on GPUs)."""
        if not self.training or self.dropout <= 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.dropout, training=True)
        threshold = round(self.dropout * 65536)
        keep = torch.from_numpy(self._bits.integers(0, 65536, x.shape, dtype=np.uint16) >= threshold)
        return x * keep / (1.0 - threshold / 65536)

    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(3, self.n_heads, device=self.device)

    def _narrow(self, loader) -> None:
        """A stopped head drops out of the products: its batches are no longer drawn."""
        dataset = getattr(loader, "dataset", None)
        if isinstance(dataset, HeadBatches) and not bool(self.stopped.all()):
            dataset.active = torch.nonzero(~self.stopped.cpu()).flatten() if bool(self.stopped.any()) else None

    def configure_optimizers(self):
        params = [*self.weights, *self.biases]
        optimizer = self._optimizer_factory(params=params) if self._optimizer_factory else torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
        if self._scheduler_factory is None:
            return optimizer
        scheduler = self._scheduler_factory(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def head(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Head k's chosen (weight (D, C), bias (C)): its best epoch's, or the last one's."""
        if self.select_best and int(self.best_epoch[k]) >= 0:
            return self.best_weight[k].detach().cpu(), self.best_bias[k].detach().cpu()
        return self.weights[k].detach().cpu(), self.biases[k].detach().cpu()

    def epochs_of(self, k: int) -> int:
        """Epochs behind head k's chosen weights: its best epoch's, the one it stopped after, or all of them."""
        if self.select_best and int(self.best_epoch[k]) >= 0:
            return int(self.best_epoch[k]) + 1
        if bool(self.stopped[k]):
            return int(self.stop_epoch[k]) + 1
        return int(self.current_epoch)


def head_logits(matrix: torch.Tensor, rows: np.ndarray, head: HeadData, weight: torch.Tensor, bias: torch.Tensor, chunk: int = 65536) -> np.ndarray:
    """Logits of `rows` (positions in `matrix`) under one head, in chunks (float32, no graph)."""
    out = np.empty((len(rows), weight.shape[1]), np.float32)
    with torch.inference_mode():
        for start in range(0, len(rows), chunk):
            take = torch.as_tensor(rows[start:start + chunk])
            x = (matrix[take] - head.mean) / head.std
            out[start:start + len(take)] = torch.addmm(bias, x, weight).numpy()
    return out
