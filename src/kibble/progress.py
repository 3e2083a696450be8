"""Progress of kibble's long steps: a bar on a terminal, periodic plain lines anywhere else.

Embedding a data set, training k folds, predicting thousands of images, pushing or pulling a Label
Studio project and monitoring a batch take minutes to hours, often as batch jobs whose output goes
to a file (SLURM, `nohup`, `> run.log`). A rich bar there writes nothing readable, and silence looks
like a hang; so every long step reports through one `Progress`:

- on a terminal: a rich bar (label, bar, counts, rate, ETA). rich allows one live display per
  console, so a `Progress` opened while another shows (the prediction inside a fold) adds its own
  line to the same display and removes it when done; under another library's live display (the
  active loop's) rich >= 14 nests the bar in it, and older rich refuses (LiveError): then it stays
  quiet, that display already shows progress;
- anywhere else: one plain log line through the caller's logger (so it carries the caller's name
  and lands where kibble's logs go: Hydra's console and `<task>.log`) at most every `every`
  seconds (KIBBLE_PROGRESS_SECONDS, default 30), written when work advances:

      embedding: 3,200/12,954 images (247/s, ETA 0:39)
      k-fold round 0: 2/5 folds (3:12 each, ETA 9:36)

  and, when a line was written, a last one when the step ends (`... in 0:52 (247/s)`).

Counts, rate and ETA are the same text in both. Work that is skipped (a fold already complete) is
counted with `skip`, not `advance`, so it does not inflate the rate. The clock is injectable for tests.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Progress", "duration", "LOG_EVERY_SECONDS"]

log = logging.getLogger(__name__)


def _env_seconds(name: str, default: float) -> float:
    try:
        return max(0.0, float(os.environ.get(name, default)))
    except ValueError:
        return default


LOG_EVERY_SECONDS = _env_seconds("KIBBLE_PROGRESS_SECONDS", 30.0)


def duration(seconds: float) -> str:
    """0:39, 12:05, 1:02:03 (what a person reads an ETA as)."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _is_terminal() -> bool:
    from rich.console import Console

    return Console().is_terminal  # honours FORCE_TERMINAL / TERM=dumb / Jupyter as rich does


class _Live:
    """The one rich display all terminal `Progress` objects of this process share (rich allows one)."""

    bar: Any = None
    tasks: set[int] = set()

    @classmethod
    def add(cls, label: str, total: int | None, status: str) -> int | None:
        from rich.errors import LiveError
        from rich.progress import BarColumn, TextColumn
        from rich.progress import Progress as RichProgress

        if cls.bar is None:
            bar = RichProgress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"))
            try:
                bar.start()
            except LiveError:  # another library's live display holds the console
                return None
            cls.bar = bar
        task = cls.bar.add_task(label, total=total, status=status)
        cls.tasks.add(task)
        return task

    @classmethod
    def update(cls, task: int, completed: int, status: str) -> None:
        if cls.bar is not None:
            cls.bar.update(task, completed=completed, status=status)

    @classmethod
    def remove(cls, task: int) -> None:
        """A nested line goes when done; the last one stays on screen as the step's record."""
        if cls.bar is None:
            return
        cls.tasks.discard(task)
        if cls.tasks:
            cls.bar.remove_task(task)
        else:
            cls.bar.stop()
            cls.bar = None


class Progress:
    """Progress of one step over `total` units (None: unknown), shown as the module docstring says.

    label: what the step is ("embedding"); unit: plural noun of what is counted ("images"; "bytes"
    is shown in MB); enabled=False: nothing at all (a config's `progress: false`, DDP ranks > 0);
    every: seconds between plain lines (0: a line on every advance); logger: where plain lines go
    (a Logger or LoggerAdapter; default this module's); terminal: force the bar (True) or the plain
    lines (False) instead of asking rich whether stdout is a terminal; clock: time source (tests).
    """

    def __init__(self, label: str, total: int | None = None, unit: str = "items", *, enabled: bool = True,
                 every: float | None = None, logger: Any = None, terminal: bool | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.label, self.total, self.unit = label, (None if total is None else int(total)), unit
        self.done = self.skipped = 0
        self.note = ""
        self.every = LOG_EVERY_SECONDS if every is None else max(0.0, float(every))
        self._log = logger if logger is not None else log
        self._clock = clock
        self.started = self._last_line = clock()
        self._logged_at: int | None = None  # `done` when the last plain line was written
        self._task: int | None = None
        self._closed = False
        on_terminal = enabled and (_is_terminal() if terminal is None else terminal)
        if on_terminal:
            self._task = _Live.add(label, self.total, self.status())
        self.plain = enabled and not on_terminal  # quiet under a foreign live display

    # ---------------------------------------------------------------- reporting
    def advance(self, n: int = 1, note: str | None = None) -> None:
        """`n` more units done (by work: they count in the rate)."""
        self.done += int(n)
        if note is not None:
            self.note = note
        self._tick()

    def skip(self, n: int = 1, note: str | None = None) -> None:
        """`n` more units done without work (already complete): counted, but not in the rate."""
        self.skipped += int(n)
        self.advance(n, note)

    def rate(self) -> float:
        """Units per second of real work so far (0 before any)."""
        elapsed = self._clock() - self.started
        worked = self.done - self.skipped
        return worked / elapsed if worked > 0 and elapsed > 0 else 0.0

    def status(self, final: bool = False) -> str:
        """'3,200/12,954 images (247/s, ETA 0:39)'; final: '12,954 images in 0:52 (247/s)'."""
        counts = f"{self._amount(self.done)}/{self._amount(self.total)}" if self.total is not None else self._amount(self.done)
        counts += " MB" if self.unit == "bytes" else f" {self.unit}"
        rate, elapsed = self.rate(), self._clock() - self.started
        speed = ""
        if rate > 0:
            if self.unit == "bytes":
                speed = f"{rate / 1e6:.1f} MB/s"
            elif rate >= 1:
                speed = f"{rate:,.0f}/s" if rate >= 10 else f"{rate:.1f}/s"
            else:
                speed = f"{duration(1 / rate)} each"
        if final:
            text = f"{counts} in {duration(elapsed)}" + (f" ({speed})" if speed else "")
        else:
            extra = [speed] if speed else []
            if rate > 0 and self.total is not None:
                extra.append(f"ETA {duration(max(self.total - self.done, 0) / rate)}")
            elif self.total is None and elapsed > 0:
                extra.append(f"{duration(elapsed)} elapsed")
            text = counts + (f" ({', '.join(extra)})" if extra else "")
        return text + (f": {self.note}" if self.note else "")

    def _amount(self, n: int | None) -> str:
        return f"{n / 1e6:,.1f}" if self.unit == "bytes" else f"{n:,}"

    def _tick(self) -> None:
        if self._task is not None:
            _Live.update(self._task, self.done, self.status())
        elif self.plain and self._clock() - self._last_line >= self.every:
            self._line(self.status())

    def _line(self, text: str) -> None:
        self._log.info("%s: %s", self.label, text)
        self._last_line, self._logged_at = self._clock(), self.done

    # ---------------------------------------------------------------- ending
    def close(self, ok: bool = True) -> None:
        """End the step: the bar shows its totals; a plain log that had lines gets a last one (unless
        the last line already said as much). ok=False (the step failed): no closing line."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            _Live.update(self._task, self.done, self.status(final=ok))
            _Live.remove(self._task)
        elif self.plain and ok and self._logged_at is not None and self._logged_at != self.done:
            self._line(self.status(final=True))

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)
