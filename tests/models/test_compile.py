"""model.compile compiles once per process, not once per fold: a second ImageClassifier (the next
fold's new instance) trains, validates and predicts through Lightning on the graphs dynamo built
for the first, and computes with its own weights (dynamo's counters show no new graph).

Reuse is decided by dynamo's cache, whatever the backend: the fast test uses the `eager` backend
(dynamo only, ~15 s); the slow ones add AOT autograd (`aot_eager`) and the real inductor backend
(skipped without a C compiler; training steps only, as inductor takes ~100 s per graph on 2 cores)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from kibble.models.classifier import ImageClassifier, has_c_compiler

CLASSES = 3


def loader(n: int, batch_size: int, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    data = TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, CLASSES, (n,), generator=g), torch.arange(n))
    return DataLoader(data, batch_size=batch_size)


def run_fold(model: ImageClassifier, seed: int, full: bool = True) -> None:
    """What a k-fold fold does with its model: fit (with validation), then predict its held-out rows.

    full=False: two training steps of one batch shape only (one graph: forward + backward)."""
    settings = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False)
    if not full:
        L.Trainer(max_steps=2, **settings).fit(model, train_dataloaders=loader(8, 4, seed))
        return
    trainer = L.Trainer(max_steps=3, num_sanity_val_steps=0, val_check_interval=3, **settings)
    # 10 rows at batch 4: the last batch (2) is another shape; validation and predict use other batch sizes
    trainer.fit(model, train_dataloaders=loader(10, 4, seed), val_dataloaders=loader(6, 4, seed + 1))
    trainer.predict(model, dataloaders=loader(7, 5, seed + 2), return_predictions=False)


def graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def check_second_fold_reuses_the_first_folds_graphs(compile_kwargs: dict, full: bool = True) -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    first = ImageClassifier("test_resnet", CLASSES, input_size=32, compile=True, compile_kwargs=compile_kwargs)
    run_fold(first, seed=0, full=full)
    assert first.compiled
    after_first = graphs()
    assert after_first > 0

    torch.manual_seed(1)  # the next fold: a new instance, new weights
    second = ImageClassifier("test_resnet", CLASSES, input_size=32, compile=True, compile_kwargs=compile_kwargs)
    run_fold(second, seed=10, full=full)
    assert second.compiled
    assert graphs() == after_first, "the second fold recompiled"

    # the cached graphs take the weights as inputs: fold 2's compiled model computes with fold 2's weights
    eager = ImageClassifier("test_resnet", CLASSES, input_size=32)
    eager.load_state_dict(second.state_dict())  # plain keys: no `_orig_mod.` prefix in checkpoints
    x = next(iter(loader(4, 4, seed=99)))[0]
    with torch.no_grad():
        torch.testing.assert_close(second.eval()(x), eager.eval()(x), rtol=1e-4, atol=1e-5)


def test_second_fold_reuses_compiled_graphs():
    check_second_fold_reuses_the_first_folds_graphs({"backend": "eager"})


@pytest.mark.slow
def test_second_fold_reuses_compiled_graphs_aot_eager():
    check_second_fold_reuses_the_first_folds_graphs({"backend": "aot_eager"})


@pytest.mark.slow
@pytest.mark.skipif(not has_c_compiler(), reason="torch.compile's inductor backend needs a C compiler")
def test_second_fold_reuses_compiled_graphs_inductor():
    check_second_fold_reuses_the_first_folds_graphs({}, full=False)
