"""K fold heads as one batched model (kibble.training.fold_heads): the batching changes no head's arithmetic."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from kibble.models.head import FeatureClassifier, feature_stats
from kibble.training.fold_heads import FoldHeads, HeadBatches, HeadData
from kibble.training.folds_together import together_settings


def heads_on(matrix: torch.Tensor, labels: torch.Tensor, fits: list[list[int]], vals: list[list[int]]) -> list[HeadData]:
    out = []
    for fit, val in zip(fits, vals):
        fit_t, val_t = torch.tensor(fit), torch.tensor(val, dtype=torch.long)
        mean, std = feature_stats(matrix, fit_t)
        out.append(HeadData(fit_t, labels[fit_t], val_t, labels[val_t], mean, std))
    return out


def test_each_head_gets_the_gradient_of_its_own_linear_layer():
    torch.manual_seed(0)
    n, d, c = 40, 6, 3
    matrix, labels = torch.randn(n, d), torch.randint(0, c, (n,))
    fits = [list(range(0, 30)), list(range(10, 40)), list(range(0, 23))]  # unequal sizes: padded batches
    heads = heads_on(matrix, labels, fits, [[], [], []])
    model = FoldHeads(3, d, c, label_smoothing=0.1)
    x, y, mask, which = next(iter(HeadBatches(matrix, heads, batch_size=32, train=True, seed=1)))
    assert x.shape == (3, 32, d) and mask.sum(1).tolist() == [30, 30, 23]
    model.training_step((x, y, mask, which), 0).backward()
    for k in range(3):
        rows = mask[k].bool()
        linear = torch.nn.Linear(d, c)
        with torch.no_grad():
            linear.weight.copy_(model.weights[k].T)
            linear.bias.copy_(model.biases[k])
        F.cross_entropy(linear(x[k][rows]), y[k][rows], label_smoothing=0.1).backward()
        torch.testing.assert_close(model.weights[k].grad, linear.weight.grad.T)
        torch.testing.assert_close(model.biases[k].grad, linear.bias.grad)


def test_batches_cover_each_heads_fit_rows_once_per_epoch_standardised():
    torch.manual_seed(0)
    matrix, labels = torch.randn(50, 4) * 3 + 1, torch.randint(0, 5, (50,))
    fits = [list(range(0, 37)), list(range(13, 50))]
    heads = heads_on(matrix, labels, fits, [[40, 41], [0, 1, 2]])
    batches = HeadBatches(matrix, heads, batch_size=8, train=True, seed=3)
    assert len(batches) == 5
    for _ in range(2):  # a fresh shuffle each epoch, every fit row exactly once
        seen = [[], []]
        for x, y, mask, which in batches:
            for k in which.tolist():
                rows = mask[k].bool()
                for row_x, row_y in zip(x[k][rows], y[k][rows]):
                    raw = row_x * heads[k].std + heads[k].mean
                    i = int(torch.cdist(raw[None], matrix).argmin())
                    assert int(labels[i]) == int(row_y)
                    seen[k].append(i)
        assert sorted(seen[0]) == fits[0] and sorted(seen[1]) == fits[1]
    batches.active = torch.tensor([1])
    x, y, mask, which = next(iter(batches))
    assert which.tolist() == [1] and x.shape[0] == 1
    val = list(HeadBatches(matrix, heads, batch_size=8, train=False))
    assert len(val) == 1 and val[0][2].sum(1).tolist() == [2, 3]


def test_early_stopping_and_best_epoch_per_head():
    model = FoldHeads(2, 3, 2, patience=2, min_delta=0.0)
    seen = torch.tensor([True, True])
    history = [(0.50, 0.50), (0.60, 0.55), (0.60, 0.52), (0.55, 0.70), (0.58, 0.71)]
    stopped_at = []
    for epoch, scores in enumerate(history):
        with torch.no_grad():
            for weight in model.weights:
                weight.fill_(epoch)
        done = model.select(torch.tensor(scores), seen, epoch)
        stopped_at.append(model.stopped.tolist())
        if done:
            break
    # head 0: best 0.60 at epoch 1 (a tie is no improvement), stops after two epochs without one;
    # head 1 has one bad epoch, improves at epochs 3 and 4 and keeps training
    assert stopped_at[2] == [False, False] and stopped_at[3] == [True, False]
    assert model.best_epoch.tolist() == [1, 4]
    weight0, _ = model.head(0)
    weight1, _ = model.head(1)
    assert float(weight0[0, 0]) == 1.0 and float(weight1[0, 0]) == 4.0
    assert model.epochs_of(0) == 2


def test_without_checkpoint_selection_the_last_weights_are_kept():
    model = FoldHeads(1, 2, 2, patience=None, select_best=False)
    model.select(torch.tensor([0.9]), torch.tensor([True]), 0)
    with torch.no_grad():
        model.weights[0].fill_(7.0)
    model.select(torch.tensor([0.1]), torch.tensor([True]), 1)
    assert float(model.head(0)[0][0, 0]) == 7.0 and not bool(model.stopped.any())


def test_feature_stats_match_the_heads_standardisation():
    torch.manual_seed(0)
    matrix = torch.randn(300, 5) * torch.tensor([1.0, 2.0, 0.0, 3.0, 0.5]) + 4
    rows = torch.arange(0, 300, 2)
    mean, std = feature_stats(matrix, rows, chunk=64)
    torch.testing.assert_close(mean, matrix[rows].mean(0), atol=1e-5, rtol=1e-5)
    expected = matrix[rows].std(0)
    floor = 0.1 * float(expected.mean())
    torch.testing.assert_close(std, expected.clamp_min(floor), atol=1e-5, rtol=1e-5)
    head = FeatureClassifier(5, 3)
    head.set_feature_stats(matrix[rows])
    torch.testing.assert_close(head.feature_std, std)
    assert math.isclose(float(std[2]), floor, rel_tol=1e-5)  # a constant feature is floored, not 0


def settings_of(**changes) -> dict | None:
    cfg = OmegaConf.create({
        "embedder": {"backbone": "x"},
        "model": {"_target_": "kibble.models.head.FeatureClassifier", "hidden": 0},
        "trainer": {"devices": 1, "accelerator": "cpu"},
        "cv": {"heads_together": True},
        "callbacks": {"early_stopping": {"monitor": "val/acc", "mode": "max", "patience": 4},
                      "model_checkpoint": {"monitor": "val/acc", "mode": "max"}},
    })
    for key, value in changes.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, merge=False)
    return together_settings(cfg)


def test_when_folds_train_together():
    assert settings_of() == {"monitor": "val/acc", "patience": 4, "min_delta": 0.0, "select_best": True}
    assert settings_of(callbacks=None) == {"monitor": "val/acc", "patience": None, "min_delta": 0.0, "select_best": False}
    loss = {"early_stopping": {"monitor": "val/loss", "mode": "min", "patience": 2}, "model_checkpoint": None}
    assert settings_of(callbacks=loss)["monitor"] == "val/loss"
    assert settings_of(cv__heads_together=False) is None
    assert settings_of(model__hidden=256) is None            # an MLP head: one by one
    assert settings_of(embedder=None) is None                # full fine-tune
    assert settings_of(trainer__devices=2) is None           # DDP: one by one
    assert settings_of(trainer__gradient_clip_val=1.0) is None  # a global-norm clip couples the heads
    assert settings_of(callbacks__early_stopping__monitor="val/f1_macro") is None
    assert settings_of(callbacks__model_checkpoint__mode="min") is None


def test_unknown_monitor_is_refused():
    with pytest.raises(ValueError, match="val/acc or val/loss"):
        FoldHeads(2, 3, 2, monitor="val/f1")


def test_input_dropout_drops_p_of_the_inputs_and_keeps_the_mean():
    model = FoldHeads(2, 4, 2, dropout=0.1)
    model.seed_dropout(0)
    x = torch.ones(5, 256, 1280)
    out = model._drop(x)
    dropped = float((out == 0).float().mean())
    assert abs(dropped - 0.1) < 0.005 and abs(float(out.mean()) - 1.0) < 0.01
    assert torch.unique(out).tolist() == [0.0, pytest.approx(1 / 0.9, rel=1e-4)]
    model.seed_dropout(0)
    assert torch.equal(model._drop(x), out)  # seeded: the same mask again
    model.eval()
    assert torch.equal(model._drop(x), x)


def test_feature_stats_of_overlapping_sets_in_one_pass():
    from kibble.models.head import feature_stats_of_sets

    torch.manual_seed(1)
    matrix = torch.randn(1000, 7) * 5 + 100  # a large offset: sums of squares must not cancel
    sets = [torch.randperm(1000)[:700] for _ in range(4)] + [torch.tensor([3])]
    for rows, (mean, std) in zip(sets, feature_stats_of_sets(matrix, sets, chunk=97)):
        expected_mean, expected_std = feature_stats(matrix[rows], chunk=10_000)
        torch.testing.assert_close(mean, expected_mean)
        torch.testing.assert_close(std, expected_std)
    torch.testing.assert_close(feature_stats_of_sets(matrix, sets[:1])[0][0], matrix[sets[0]].double().mean(0).float())


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_fit_heads_learns_each_fold_under_the_real_config(tmp_path, precision):
    """fit_heads with the real kfold config (model=features), in fp32 and under bf16 autocast (the GPU setting,
    here on the CPU): every head learns its own separable fold, and the early stopping state is per head."""
    from kibble.config import compose_config
    from kibble.training.fold_heads import head_logits
    from kibble.training.folds_together import fit_heads

    torch.manual_seed(0)
    n, d, c = 600, 16, 4
    centres = torch.randn(c, d) * 3
    labels = torch.randint(0, c, (n,))
    matrix = centres[labels] + torch.randn(n, d)
    fold_of = torch.arange(n) % 3
    fits = [torch.nonzero((fold_of != k) & (torch.arange(n) % 10 != 0)).flatten().tolist() for k in range(3)]
    vals = [torch.nonzero((fold_of != k) & (torch.arange(n) % 10 == 0)).flatten().tolist() for k in range(3)]
    heads = heads_on(matrix, labels, fits, vals)
    cfg = compose_config("kfold", ["workspace=unused", "model=features", "trainer.max_epochs=8", "model.optimizer.lr=0.05", f"trainer.precision={precision}",
                                   "logger=none", "callbacks.early_stopping.patience=2"], output_dir=tmp_path / "out")
    module, trainer = fit_heads(cfg, matrix, heads, c, 64, 256, tmp_path / "heads", "test", show_progress=False)
    assert 1 <= trainer.current_epoch <= 8 and module.best_epoch.min() >= 0
    for k in range(3):
        held = torch.nonzero(fold_of == k).flatten().numpy()
        weight, bias = module.head(k)
        accuracy = float((head_logits(matrix, held, heads[k], weight, bias).argmax(1) == labels[held].numpy()).mean())
        assert accuracy > 0.9, (k, accuracy)


@pytest.mark.parametrize("optimizer_class", [torch.optim.AdamW, torch.optim.Adam])  # decoupled decay; L2 (features mode's default)
def test_a_head_without_rows_in_a_step_is_not_moved_by_the_optimizer(optimizer_class):
    """Head 0 has 64 rows, head 1 has 65 (batch 64): in the second step head 0 has no rows, so the optimizer must
    leave it alone (no momentum, weight-decay or L2 drift) and count only its own steps."""
    torch.manual_seed(0)
    matrix, labels = torch.randn(65, 4), torch.randint(0, 3, (65,))
    heads = heads_on(matrix, labels, [list(range(64)), list(range(65))], [[], []])
    model = FoldHeads(2, 4, 3)
    optimizer = optimizer_class([*model.weights, *model.biases], lr=0.1, weight_decay=0.1)
    model.log = lambda *args, **kwargs: None
    batches = list(HeadBatches(matrix, heads, batch_size=64, train=True, seed=0))
    assert len(batches) == 2 and batches[1][2].sum(1).tolist() == [0, 1]
    for step, batch in enumerate(batches):
        before = [w.detach().clone() for w in model.weights]
        optimizer.zero_grad(set_to_none=True)
        model.training_step(batch, step).backward()
        optimizer.step()
        moved = [not torch.equal(b, w) for b, w in zip(before, model.weights)]
        assert moved == ([True, True] if step == 0 else [False, True])
    assert model.weights[0].grad is None and optimizer.state[model.weights[0]]["step"] == 1
    assert optimizer.state[model.weights[1]]["step"] == 2


@pytest.mark.parametrize("patience, min_delta, scores, stops_after", [
    (0, 0.0, [0.5, 0.6, 0.7, 0.7], 3),          # patience 0: only an epoch without improvement stops
    (3, 0.01, [0.50, 0.505, 0.508, 0.509, 0.5095], 3),  # gains below min_delta do not reset the count
    (2, 0.0, [0.5, 0.5, 0.6, 0.6, 0.6], 4),
])
def test_early_stopping_follows_lightning(patience, min_delta, scores, stops_after):
    from lightning.pytorch.callbacks import EarlyStopping

    model = FoldHeads(1, 2, 2, patience=patience, min_delta=min_delta)
    reference = EarlyStopping(monitor="val/acc", mode="max", patience=patience, min_delta=min_delta)
    ours = theirs = None
    for epoch, score in enumerate(scores):
        if ours is None and model.select(torch.tensor([score]), torch.tensor([True]), epoch):
            ours = epoch
        if theirs is None and reference._evaluate_stopping_criteria(torch.tensor(score))[0]:
            theirs = epoch
    assert ours == theirs == stops_after
    assert model.best_epoch.tolist() == [max(range(len(scores[: stops_after + 1])), key=lambda e: (scores[e], -e))]


def test_epoch_progress_writes_periodic_lines_not_one_per_epoch(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch):
    """A round's heads often fit in a second: its plain log gets lines every KIBBLE_PROGRESS_SECONDS, not 15 a round."""
    import logging
    from types import SimpleNamespace

    from kibble.training.folds_together import EpochProgress

    monkeypatch.setattr("kibble.progress.LOG_EVERY_SECONDS", 30.0)  # whatever KIBBLE_PROGRESS_SECONDS says here
    callback = EpochProgress("k-fold round 0: folds 1, 2 together", enabled=True)
    module = SimpleNamespace(stopped=torch.zeros(2, dtype=torch.bool))
    trainer = SimpleNamespace(max_epochs=15, callback_metrics={})
    with caplog.at_level(logging.INFO):
        callback.on_train_start(trainer, module)
        if callback.bar._task is not None:  # a terminal shows a bar instead: nothing to count here
            callback.on_train_end(trainer, module)
            pytest.skip("stdout is a terminal")
        assert callback.bar.every == 30.0
        for _ in range(15):
            callback.on_train_epoch_end(trainer, module)
        callback.on_train_end(trainer, module)
    assert not [r for r in caplog.records if "heads training" in r.getMessage()]
