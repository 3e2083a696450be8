"""What a user sees: one line per kibble error (no Hydra banner), no Lightning tips or known deprecation
warnings unless `verbose=true`, and a test line that counts the images actually scored. Runs the real
console script, as a user would."""

from __future__ import annotations

import io
import json
import logging
import warnings
from pathlib import Path

import pytest

from helpers import TINY_MODEL, TINY_TRAIN, run_kibble
from kibble import output

NOISE = ("💡 Tip", "GPU available", "TPU available", "LeafSpec")


def tiny_train(workspace: Path, run_dir: Path, *extra: str):
    return run_kibble("train", f"workspace={workspace}", *TINY_TRAIN, *TINY_MODEL, "data=digits", f"hydra.run.dir={run_dir}", *extra)


@pytest.mark.slow
def test_a_train_run_prints_no_tips_or_known_deprecations_unless_verbose(digits_workspace: Path, tmp_path: Path):
    quiet = tiny_train(digits_workspace, tmp_path / "quiet", "data.eval_batch_size=50")
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    text = quiet.stdout + quiet.stderr
    # limit_test_batches=1: one batch of 50 was scored, not the 359 images of the split, and the line says so
    metrics = json.loads((tmp_path / "quiet" / "metrics.json").read_text())
    assert (metrics["n_test"], metrics["n_test_split"], metrics["test_split"]) == (50, 359, "test")
    assert "(test split; 50 of its 359 images (limit_test_batches))" in quiet.stdout
    for noise in NOISE:
        assert noise not in text, f"{noise!r} printed by a default run:\n{text[-3000:]}"

    loud = tiny_train(digits_workspace, tmp_path / "loud", "verbose=true")
    assert loud.returncode == 0, loud.stderr[-3000:]
    text = loud.stdout + loud.stderr
    assert "💡 Tip" in text and "GPU available" in text


@pytest.mark.slow
def test_ddp_child_ranks_are_quiet_too(digits_workspace: Path, tmp_path: Path):
    """Lightning re-runs the command line for rank 1: the silencing must not depend on rank 0's process."""
    import torch

    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available")
    proc = tiny_train(digits_workspace, tmp_path / "ddp", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "GLOBAL_RANK: 1" in text  # a second process ran
    for noise in (*NOISE, "Seed set to"):
        assert noise not in text, f"{noise!r} printed by a DDP run:\n{text[-3000:]}"


def test_a_kibble_error_is_one_line_without_the_hydra_banner(digits_workspace: Path):
    proc = run_kibble("merge", f"workspace={digits_workspace}", "reviews=/nonexistent.csv")
    assert proc.returncode == 1
    assert "Error executing job" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith("kibble merge: error: /nonexistent.csv")


def test_a_config_mistake_is_one_line_too():
    proc = run_kibble("merge", "workspace=/nonexistent", "no_such_key=1")
    assert proc.returncode == 1
    assert "Error executing job" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1, proc.stderr


def test_verbose_is_read_from_the_command_line():
    assert output.verbose_from_overrides(["workspace=W", "verbose=true"])
    assert output.verbose_from_overrides(["++verbose=True"])
    assert not output.verbose_from_overrides(["workspace=W", "verbose=false"])
    assert not output.verbose_from_overrides(["workspace=W"])


def test_configure_drops_the_tip_but_keeps_real_warnings(caplog: pytest.LogCaptureFixture):
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    try:
        output.configure(verbose=False)
        with caplog.at_level(logging.INFO, logger=logger.name), caplog.at_level(logging.INFO, logger="lightning.fabric.utilities.seed"):
            logger.info("💡 Tip: install our cloud product")
            logger.info("GPU available: False, used: False")
            logging.getLogger("lightning.fabric.utilities.seed").info("[rank: 1] Seed set to 0")  # a DDP child rank
            logger.info("Using bfloat16 Automatic Mixed Precision (AMP)")
            logger.info("`Trainer.fit` stopped: `max_epochs=30` reached.")
            cuda = logging.getLogger("lightning.pytorch.accelerators.cuda")
            with caplog.at_level(logging.INFO, logger=cuda.name):
                cuda.info("LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]")
            logger.warning("`Trainer(limit_val_batches=1)` was configured so 1 batch will be used.")
        assert [r.getMessage() for r in caplog.records] == ["`Trainer(limit_val_batches=1)` was configured so 1 batch will be used."]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            output.configure(verbose=False)
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning)
            warnings.warn("Total length of `list` across ranks is zero. Please make sure this was your intention.", UserWarning)
            warnings.warn("something of ours", UserWarning)
        assert [str(w.message) for w in caught] == ["something of ours"]
    finally:
        output.configure(verbose=True)
        output.configure(verbose=False)


def test_the_held_banner_is_released_for_a_bug():
    stream = io.StringIO()
    held = output.HeldBanner(stream)
    held.write("Error executing job with overrides: ['a=1']\n")
    held.write("other\n")
    assert stream.getvalue() == "other\n"
    held.release()
    assert stream.getvalue() == "other\nError executing job with overrides: ['a=1']\n"
