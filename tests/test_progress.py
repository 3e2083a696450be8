"""kibble.progress: plain periodic lines (counts, rate, ETA) without a terminal, a bar with one;
the embedder's progress lines and its one warning for images much smaller than its input size."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf
import torch

import kibble.data.features as features
import kibble.progress as progress
from helpers import write_noise_jpegs
from kibble.data.features import Embedder, upscale_warning
from kibble.progress import Progress, duration


class Clock:
    """A fake monotonic clock: tests move time by hand instead of sleeping."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def stream() -> tuple[io.StringIO, logging.Logger]:
    """A logger writing to a StringIO: the plain (non-terminal) output, as a log file would get it."""
    out = io.StringIO()
    logger = logging.getLogger("kibble.test_progress")
    logger.handlers[:] = [logging.StreamHandler(out)]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield out, logger
    logger.handlers.clear()


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_duration_reads_as_minutes_and_hours():
    assert [duration(s) for s in (0, 39, 61.6, 725, 3723)] == ["0:00", "0:39", "1:02", "12:05", "1:02:03"]


def test_plain_lines_come_every_n_seconds_with_counts_rate_and_eta(stream):
    out, logger = stream
    clock = Clock()
    bar = Progress("embedding", 12_954, "images", every=30, terminal=False, logger=logger, clock=clock)
    done = 0
    while done < 12_954:
        clock.t += 1
        n = min(250, 12_954 - done)
        bar.advance(n)
        done += n
    bar.close()
    # one line after 30 s (not per advance), and a last one with the totals
    assert lines(out) == ["embedding: 7,500/12,954 images (250/s, ETA 0:22)", "embedding: 12,954/12,954 images in 0:52 (249/s)"]


def test_slow_units_show_time_each_and_skipped_ones_stay_out_of_the_rate(stream):
    out, logger = stream
    clock = Clock()
    with Progress("k-fold round 0", 5, "folds", every=0, terminal=False, logger=logger, clock=clock) as bar:
        bar.skip(note="fold 1/5 already complete")
        clock.t += 192
        bar.advance(note="fold 2/5 done")
    assert lines(out) == ["k-fold round 0: 1/5 folds: fold 1/5 already complete",
                          "k-fold round 0: 2/5 folds (3:12 each, ETA 9:36): fold 2/5 done"]


def test_unknown_totals_and_bytes(stream):
    out, logger = stream
    clock = Clock()
    with Progress("Label Studio export", None, "bytes", every=0, terminal=False, logger=logger, clock=clock) as bar:
        clock.t += 2
        bar.advance(2_500_000)
    assert lines(out) == ["Label Studio export: 2.5 MB (1.2 MB/s, 0:02 elapsed)"]


def test_short_steps_disabled_ones_and_failed_ones_write_no_closing_line(stream):
    out, logger = stream
    clock = Clock()
    with Progress("quick", 10, "images", every=30, terminal=False, logger=logger, clock=clock) as bar:
        clock.t += 1
        bar.advance(10)  # under 30 s: nothing to say
    with Progress("off", 10, "images", enabled=False, every=0, terminal=False, logger=logger, clock=clock) as bar:
        bar.advance(10)
    with pytest.raises(RuntimeError):
        with Progress("failing", 10, "images", every=0, terminal=False, logger=logger, clock=clock) as bar:
            clock.t += 1
            bar.advance(4)
            raise RuntimeError("boom")
    assert lines(out) == ["failing: 4/10 images (4.0/s, ETA 0:02)"]


def test_the_terminal_path_shares_one_display_and_does_not_crash(stream):
    out, logger = stream
    with Progress("k-fold round 0", 2, "folds", terminal=True, logger=logger) as outer:
        assert progress._Live.bar is not None and not outer.plain
        with Progress("predicting", 8, "images", terminal=True, logger=logger) as inner:
            inner.advance(8)
            assert len(progress._Live.tasks) == 2  # nested: a second line on the same display
        assert len(progress._Live.tasks) == 1
        outer.advance(2)
    assert progress._Live.bar is None and not progress._Live.tasks
    assert lines(out) == []  # a bar, not log lines


def test_under_a_foreign_live_display_it_nests_or_stays_quiet(stream):
    from rich.live import Live

    out, logger = stream
    with Live(""):
        with Progress("predicting", 4, "images", every=0, terminal=True, logger=logger) as bar:
            bar.advance(4)
    assert progress._Live.bar is None and lines(out) == []


# ------------------------------------------------------------------- the embedder
def make_rows(root: Path, size: int, n: int = 6) -> pd.DataFrame:
    names = [f"img_{i:02d}.jpg" for i in range(n)]
    write_noise_jpegs(root, names, size=size)
    return pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "path": names, "label": "a"})


def test_embedding_writes_progress_lines_to_a_log(tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(progress, "LOG_EVERY_SECONDS", 0.0)  # a line per batch
    rows = make_rows(tmp_path / "images", 32)
    torch.manual_seed(0)
    embedder = Embedder("test_resnet", "none", input_size=32, batch_size=2, num_workers=0, device="cpu")
    with caplog.at_level(logging.INFO, logger="kibble.data.features"):
        embedder.features_for(rows, tmp_path / "images", tmp_path / "cache")
    progress_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("embedding: ")]
    assert [line.split(" (")[0] for line in progress_lines] == ["embedding: 2/6 images", "embedding: 4/6 images", "embedding: 6/6 images"]
    assert all("/s, ETA " in line for line in progress_lines)


def test_upscale_warning_fires_for_small_images_only():
    message = upscale_warning([(32, 32)] * 150 + [(28, 28)] * 50, 224, "tf_efficientnet_lite0")
    assert message == ("images are about 32x32 px (median of a 200-image sample) but tf_efficientnet_lite0 embeds at 224 px: "
                       "they are upscaled 7x; set embedder.input_size=32 if that is not wanted")
    assert upscale_warning([(500, 375)] * 20, 224, "tf_efficientnet_lite0") is None
    assert upscale_warning([(96, 96)] * 20, 224, "tf_efficientnet_lite0") is None  # 2.3x: not "much smaller"
    assert upscale_warning([], 224, "tf_efficientnet_lite0") is None


def test_embedder_warns_once_unless_the_size_was_set(tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(features, "_WARNED", set())
    small = make_rows(tmp_path / "small", 32)
    torch.manual_seed(0)
    embedder = Embedder("test_resnet", "none", batch_size=8, num_workers=0, device="cpu")
    assert embedder.embed_size == 160  # the backbone's pretrained config (test_resnet: 160 px), nothing set
    with caplog.at_level(logging.WARNING, logger="kibble.data.features"):
        embedder.features_for(small, tmp_path / "small", tmp_path / "cache")
        embedder.features_for(small.assign(sample_id=[f"t{i}" for i in range(len(small))]), tmp_path / "small", tmp_path / "cache")
        Embedder("test_resnet", "none", input_size=32).warn_if_upscaled([tmp_path / "small" / p for p in small["path"]])
        Embedder("test_resnet", "none").warn_if_upscaled([tmp_path / "small" / "missing.jpg"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["images are about 32x32 px (median of a 6-image sample) but test_resnet embeds at 160 px: "
                        "they are upscaled 5x; set embedder.input_size=32 if that is not wanted"]

    large = make_rows(tmp_path / "large", 128, n=3)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kibble.data.features"):
        Embedder("test_resnet", "none").warn_if_upscaled([tmp_path / "large" / p for p in large["path"]])
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_label_studio_listing_and_export_are_read_with_progress(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch):
    from kibble.labelstudio.client import _collect

    monkeypatch.setattr(progress, "LOG_EVERY_SECONDS", 0.0)
    with caplog.at_level(logging.INFO, logger="kibble.progress"):
        chunks = _collect(iter([b"x" * 600_000, b"y" * 400_000]), "Label Studio export", "bytes")
        tasks = _collect(iter(range(3)), "Label Studio: reading tasks", "tasks", lambda t: {"id": t})
    assert chunks == [b"x" * 600_000, b"y" * 400_000] and tasks == [{"id": 0}, {"id": 1}, {"id": 2}]
    messages = [r.getMessage() for r in caplog.records]
    assert [m.split(" (")[0] for m in messages] == ["Label Studio export: 0.6 MB", "Label Studio export: 1.0 MB"] + [
        f"Label Studio: reading tasks: {i} tasks" for i in (1, 2, 3)]


def test_folds_log_k_of_k_with_complete_folds_skipped(caplog: pytest.LogCaptureFixture):
    from kibble.training.round import _train_folds

    class FakeRound:
        round_index, n_folds = 0, 3
        cfg = OmegaConf.create({"embedder": None, "cv": {}})  # fine-tune mode: the folds train one by one

        def fold_complete(self, k):
            return k == 0

        def run_fold(self, k):
            return {"seconds": 1.0, "n_fit": 10, "train_images_per_second": 5.0, "predict_images_per_second": 9.0,
                    "heldout_accuracy_given": 0.5}

    with caplog.at_level(logging.INFO, logger="kibble.training.round"):
        stats = _train_folds(FakeRound(), [0, 1, 2], show_progress=True)
    assert sorted(stats) == [1, 2]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("k-fold round 0: ")]
    assert lines[0] == "k-fold round 0: 1/3 folds: fold 1/3 already complete"
    assert [line.split(" (")[0] for line in lines[1:]] == ["k-fold round 0: 2/3 folds", "k-fold round 0: 3/3 folds"]
    assert lines[1].endswith("): fold 2/3 done") and "ETA" in lines[1]
