"""The GPU code paths of ImageClassifier, run on the CPU where torch allows: bf16 autocast,
channels_last, and a Lightning step under each (the real GPU runs are skipped without one)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from kibble import KibbleError
from kibble.models.classifier import ImageClassifier

CLASSES = 3


def tiny(**kwargs) -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier("test_resnet", CLASSES, input_size=32, **kwargs).eval()


def batches(n: int = 8, size: int = 32) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    return DataLoader(TensorDataset(x, y, torch.arange(n)), batch_size=4)


def one_step(model: ImageClassifier, accelerator: str = "cpu", precision: str = "32-true") -> float:
    """One optimizer step through Lightning; returns the logged training loss."""
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision=precision, max_steps=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, train_dataloaders=batches())
    return float(trainer.callback_metrics["train/loss_step"])


def test_bf16_autocast_on_cpu_gives_close_logits():
    model = tiny()
    x = next(iter(batches()))[0]
    with torch.no_grad():
        fp32 = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(x)
    assert bf16.dtype == torch.bfloat16
    assert (bf16.float() - fp32).abs().max() <= 0.05 * fp32.abs().max() + 1e-3
    assert (bf16.float().argmax(1) == fp32.argmax(1)).float().mean() >= 0.75


def test_bf16_mixed_training_step_runs_on_cpu():
    model = tiny()
    before = [p.detach().clone() for p in model.parameters()]
    loss = one_step(model, precision="bf16-mixed")
    assert torch.isfinite(torch.tensor(loss))
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32 under mixed precision
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_channels_last_gives_the_same_logits_and_trains():
    plain, nhwc = tiny(), tiny(channels_last=True)
    nhwc.load_state_dict(plain.state_dict())  # same weights, other memory layout
    conv = next(m for m in nhwc.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = next(iter(batches()))[0]
    with torch.no_grad():
        torch.testing.assert_close(nhwc(x), plain(x), rtol=1e-4, atol=1e-5)
    assert set(nhwc.state_dict()) == set(plain.state_dict())  # checkpoints interchangeable
    assert torch.isfinite(torch.tensor(one_step(nhwc)))


def test_bad_compile_value_names_the_choices():
    with pytest.raises(KibbleError, match="model.compile='yes': use false, true or auto"):
        ImageClassifier("test_resnet", CLASSES, compile="yes")


def test_compile_auto_stays_eager_on_cpu():
    model = tiny(compile="auto")
    one_step(model)
    assert not model.compiled


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_bf16_channels_last_compiled_step():
    model = tiny(channels_last=True, compile="auto")
    loss = one_step(model, accelerator="gpu", precision="bf16-mixed")
    assert model.compiled and torch.isfinite(torch.tensor(loss))
