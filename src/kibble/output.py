"""What a kibble run prints: its own result lines, not Lightning's advertising or third-party deprecations.

Lightning logs a "💡 Tip" to try its cloud products, "GPU available / TPU available" lines and CUDA
matmul advice on every Trainer, and torch deprecations raised inside Lightning (`LeafSpec`) show up once
per fit and test: `make demo` printed dozens of them around a handful of kibble lines. They tell a user
nothing they can act on, so `configure(verbose=False)` drops exactly those records (a filter on
Lightning's rank-zero loggers, warnings filters by message) and leaves every other warning alone;
`verbose=true` (a top-level key of every task's config) brings them back.

`configure` is called by `kibble.cli` before a task runs (DDP child ranks re-run the same command line,
so they are quiet too) and by `kibble.config.compose_config` for in-process runs.

Hydra writes "Error executing job with overrides: [...]" straight to stderr before re-raising a task's
exception; `hold_hydra_banner` keeps that line back so the cli can print one line for a user error and
still show it above a bug's traceback.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

__all__ = ["configure", "verbose_from_overrides", "hold_hydra_banner", "HeldBanner"]

# Lightning's rank-zero helpers log through whichever of these `rank_zero_module.log` points at last.
LIGHTNING_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
    "lightning.fabric.utilities.seed",
    "pytorch_lightning.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",  # its own logger: "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]" per Trainer
)
# Records that are advertising or environment chatter, never something to act on.
NOISE_MESSAGES = (
    r"💡 Tip:",
    r"(GPU|TPU|HPU|IPU) available: ",
    r"You are using a CUDA device .*set_float32_matmul_precision",
    r"Seed set to ",
    r"Loading `train_dataloader` to estimate number of stepping batches",
    # per Trainer, so once per fold: a k-fold round on a GPU printed 15 of these around its own 5 lines
    r"LOCAL_RANK: \d+ - CUDA_VISIBLE_DEVICES: ",
    r"Using (?:16bit|bfloat16) Automatic Mixed Precision \(AMP\)",
    # once per Trainer: the heads train a fixed number of epochs by design (no inner split), 5 lines a round;
    # in `kibble train` it only says early stopping did not fire (verbose=true shows it again)
    r"`Trainer\.fit` stopped: `max_epochs=",
)
# Known third-party deprecations raised from library code the user does not own (message regexes).
KNOWN_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # torch, from lightning/pytorch/utilities/_pytree.py
    # Lightning, when a fit has no validation rows (no inner split: kibble's data module hands it an empty list on
    # purpose, Lightning's documented way to skip validation); `kibble loop mode=active` printed it every round
    r"Total length of `list` across ranks is zero",
)

# a DDP child rank's record may carry Lightning's "[rank: 1] " prefix
_NOISE = re.compile(r"(?:\[rank: \d+\] )?(?:" + "|".join(f"(?:{m})" for m in NOISE_MESSAGES) + ")", re.DOTALL)
_TRUE = {"true", "1", "yes", "on"}


class _DropNoise(logging.Filter):
    """Drops Lightning's tips and environment lines (a logging filter: levels of real warnings stay)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to judge
            return True
        return _NOISE.match(message.lstrip()) is None


_FILTER = _DropNoise()


def configure(verbose: bool = False) -> None:
    """Silence Lightning's tips/environment lines and known deprecations, or (verbose) bring them back.

    Idempotent; safe to call once per task run and again from an in-process run."""
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if verbose:
            logger.removeFilter(_FILTER)
        elif _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for message in KNOWN_WARNINGS:  # the newest filter wins: "default" undoes an earlier "ignore"
        warnings.filterwarnings("default" if verbose else "ignore", message=message)


def verbose_from_overrides(overrides: Sequence[str]) -> bool:
    """Whether a command line asks for `verbose=true` (also `+verbose=`/`++verbose=`), read before Hydra
    composes the config so the silencing is in place before the first Lightning import logs anything."""
    for arg in overrides:
        key, sep, value = arg.lstrip("+").partition("=")
        if sep and key == "verbose":
            return value.strip().lower() in _TRUE
    return False


class HeldBanner:
    """A stderr stand-in that keeps Hydra's "Error executing job" line back and passes the rest through."""

    PREFIX = "Error executing job with overrides:"

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.held: list[str] = []

    def write(self, text: str) -> int:
        if text.startswith(self.PREFIX):
            self.held.append(text)
            return len(text)
        return self._stream.write(text)

    def release(self) -> None:
        """Print the held banner (a bug follows with its traceback: which job failed is worth knowing)."""
        for text in self.held:
            self._stream.write(text)
        self.held.clear()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, flush, encoding... of the real stream
        return getattr(self._stream, name)


@contextlib.contextmanager
def hold_hydra_banner() -> Iterator[HeldBanner]:
    """Route stderr through a `HeldBanner` for the duration of a task (restored afterwards)."""
    original = sys.stderr
    held = HeldBanner(original)
    sys.stderr = held  # type: ignore[assignment]
    try:
        yield held
    finally:
        if sys.stderr is held:
            sys.stderr = original
