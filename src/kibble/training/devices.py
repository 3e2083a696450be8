"""Folds across devices (`cv.devices`): a round's pending folds run as `kibble kfold cv.fold=K` processes,
at most one per device slot at a time, each seeing only its slot's GPUs (CUDA_VISIBLE_DEVICES); then
the parent assembles the OOF.

Why processes, not threads or one Trainer: a CUDA context, Lightning's DDP launcher and compile caches
belong to a process; a fold pinned through CUDA_VISIBLE_DEVICES cannot touch another fold's GPU, and a
crash (out of memory, NCCL) ends one fold, not the round. Folds meet only through the prediction store,
so the parent only schedules, waits, and assembles (`cv.assemble_only`).

A slot is one device (`cv.devices=[0,1,2,3]`) or a group that trains one fold under DDP
(`cv.devices=[[0,1],[2,3]]` with trainer=ddp trainer.devices=2). With trainer.accelerator=cpu the ids
are virtual slots (parallel CPU folds; CUDA_VISIBLE_DEVICES is still set), which is how the scheduling
is tested without a GPU.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from kibble import KibbleError
from kibble.data.datamodule import resolve_num_workers
from kibble.training.distributed import DDP_ENV, single_run_overrides

log = logging.getLogger(__name__)

_CUDA_ACCELERATORS = ("auto", "gpu", "cuda")


def _shown(spec) -> str:
    value = OmegaConf.to_container(spec) if isinstance(spec, ListConfig) else spec
    return json.dumps(value).replace(" ", "") if isinstance(value, list) else str(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def cuda_device_count() -> int:
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def resolve_slots(spec, accelerator: str = "auto", trainer_devices=None, *, cuda_count: int | None = None, visible: str | None = None) -> list[str]:
    """`cv.devices` -> one CUDA_VISIBLE_DEVICES value per slot, checked before anything is written.

    spec: `auto` (every visible GPU, one slot each), a count N (the first N), or a list of ids or id
    groups. Ids count among the devices this process sees, so with CUDA_VISIBLE_DEVICES=2,3 set,
    `cv.devices=[0,1]` means physical GPUs 2 and 3 (`visible` stands in for that variable in tests,
    `cuda_count` for torch.cuda.device_count()).
    """
    shown = f"cv.devices={_shown(spec)}"
    accelerator = str(accelerator or "auto").lower()
    cpu = accelerator == "cpu"
    if not cpu and accelerator not in _CUDA_ACCELERATORS:
        raise KibbleError(f"{shown}: folds are scheduled on CUDA devices (or virtual CPU slots), not trainer.accelerator={accelerator}")
    count = None if cpu else (cuda_device_count() if cuda_count is None else int(cuda_count))
    if isinstance(spec, str) and spec.lower() == "auto":
        if cpu:
            raise KibbleError(f"{shown} takes every visible GPU, but trainer.accelerator=cpu uses none; list CPU slots instead, e.g. cv.devices=[0,1]")
        if not count:
            raise KibbleError(f"{shown}: no CUDA device is visible on this machine; drop cv.devices, or use trainer.accelerator=cpu cv.devices=[0,1] for parallel CPU folds")
        groups = [[i] for i in range(count)]
    elif _is_int(spec):
        if spec < 1:
            raise KibbleError(f"{shown}: give at least one device (or cv.devices=null for folds one after another in this process)")
        groups = [[i] for i in range(spec)]
    elif isinstance(spec, (list, tuple, ListConfig)) and len(spec) > 0:
        raw = OmegaConf.to_container(spec) if isinstance(spec, ListConfig) else list(spec)
        groups = [[g] if _is_int(g) else g for g in raw]
        if not all(isinstance(g, list) and g and all(_is_int(i) and i >= 0 for i in g) for g in groups):
            raise KibbleError(f"{shown}: expected device ids >= 0, e.g. cv.devices=[0,1,2,3], or id groups for DDP folds, e.g. cv.devices=[[0,1],[2,3]]")
    else:
        raise KibbleError(f"{shown}: expected null, auto, a count, or a list of device ids such as cv.devices=[0,1]")
    flat = [i for g in groups for i in g]
    twice = sorted({i for i in flat if flat.count(i) > 1})
    if twice:
        raise KibbleError(f"{shown}: device {twice[0]} is listed twice; a device runs one fold at a time")
    if not cpu:
        if not count:
            raise KibbleError(f"{shown}: no CUDA device is visible on this machine; drop cv.devices, or use trainer.accelerator=cpu for parallel CPU folds")
        missing = [i for i in flat if i >= count]
        if missing:
            raise KibbleError(f"{shown}: no CUDA device {missing[0]} here; this machine shows {count} (ids 0..{count - 1})")
        _check_trainer_devices(shown, trainer_devices, min(len(g) for g in groups))
        names = [v.strip() for v in (visible if visible is not None else os.environ.get("CUDA_VISIBLE_DEVICES", "")).split(",") if v.strip()]
        if len(names) >= count:  # ids are positions in the parent's own CUDA_VISIBLE_DEVICES
            return [",".join(names[i] for i in g) for g in groups]
    return [",".join(str(i) for i in g) for g in groups]


def _check_trainer_devices(shown: str, trainer_devices, slot_size: int) -> None:
    """A fold's Trainer sees only its slot: trainer.devices must fit in it."""
    if isinstance(trainer_devices, ListConfig):
        trainer_devices = OmegaConf.to_container(trainer_devices)
    if _is_int(trainer_devices) and trainer_devices > slot_size:
        raise KibbleError(
            f"{shown}: trainer.devices={trainer_devices} but a fold process sees {slot_size} GPU(s); "
            f"group the ids per fold (e.g. cv.devices=[[0,1],[2,3]]) or set trainer.devices={slot_size}"
        )
    if isinstance(trainer_devices, list) and any(_is_int(i) and i >= slot_size for i in trainer_devices):
        raise KibbleError(f"{shown}: trainer.devices={trainer_devices} counts GPUs a fold cannot see (it sees ids 0..{slot_size - 1})")


@dataclass
class FoldRun:
    """One fold process: where it ran, its log, its exit code (None: not started), its wall clock span."""

    fold: int
    devices: str
    log: str
    returncode: int | None = None
    started: float | None = None
    ended: float | None = None


def fold_env(base: dict[str, str], devices: str, n_slots: int) -> dict[str, str]:
    """The fold's environment: only its devices visible, no DDP variables of ours (the fold starts its own
    ranks on its own port), and the CPU threads shared between the slots unless the user set them."""
    env = {k: v for k, v in base.items() if k not in DDP_ENV and k != "KIBBLE_TASK"}
    env["CUDA_VISIBLE_DEVICES"] = devices
    if "OMP_NUM_THREADS" not in base:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, n_slots)))
    return env


def run_on_devices(
    folds: Sequence[int],
    slots: Sequence[str],
    command_for: Callable[[int], list[str]],
    log_for: Callable[[int], Path],
    *,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
) -> list[FoldRun]:
    """Run `command_for(k)` for every fold, at most one per slot at a time, stdout+stderr into `log_for(k)`.

    After a fold fails no new fold starts; folds already running finish (their work is kept for a
    re-run). On an interrupt (Ctrl-C) every fold process is terminated.
    """
    base = dict(os.environ if env is None else env)
    free: queue.Queue[str] = queue.Queue()
    for slot in slots:
        free.put(slot)
    stop = threading.Event()
    procs: dict[int, subprocess.Popen] = {}
    lock = threading.Lock()

    def one(k: int) -> FoldRun:
        run = FoldRun(k, "", str(log_for(k)))
        if stop.is_set():
            return run
        run.devices = free.get()
        try:
            if stop.is_set():
                return run
            Path(run.log).parent.mkdir(parents=True, exist_ok=True)
            with open(run.log, "ab") as out:
                log.info("fold %d: started on device %s (log %s)", k, run.devices, run.log)
                run.started = time.time()
                with lock:
                    proc = procs[k] = subprocess.Popen(command_for(k), stdout=out, stderr=subprocess.STDOUT, env=fold_env(base, run.devices, len(slots)), cwd=cwd)
                run.returncode = proc.wait()
                run.ended = time.time()
            if run.returncode != 0:
                stop.set()
            log.info("fold %d: %s on device %s after %.0f s", k, "done" if run.returncode == 0 else f"FAILED (exit code {run.returncode})", run.devices, run.ended - run.started)
            return run
        finally:
            free.put(run.devices)

    pool = ThreadPoolExecutor(max_workers=max(1, len(slots)), thread_name_prefix="kibble-fold")
    try:
        futures = [pool.submit(one, k) for k in folds]
        return [f.result() for f in futures]
    except BaseException:  # an interrupt: no fold process outlives the round
        stop.set()
        with lock:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def failure_message(runs: Sequence[FoldRun]) -> str | None:
    """One line for the first failed fold: which fold, where, its last log line, and the log file."""
    failed = [r for r in runs if r.returncode not in (0, None)]
    if not failed:
        return None
    run = failed[0]
    last = _last_line(Path(run.log))
    others = f" (also failed: folds {[r.fold for r in failed[1:]]})" if len(failed) > 1 else ""
    return f"fold {run.fold} failed on device {run.devices} (exit code {run.returncode}){': ' + last if last else ''}; log: {run.log}{others}"


def _last_line(path: Path, tail_bytes: int = 4096) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - tail_bytes))
            lines = [line.strip() for line in fh.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def run_round_on_devices(cfg: DictConfig, task_overrides: Sequence[str], hydra_overrides: Sequence[str] = ()) -> dict:
    """`kibble kfold cv.devices=...`: the pending folds as fold processes (the user's overrides plus
    `cv.fold=K cv.devices=null round=R`, their own hydra.run.dir, no round callbacks), then the OOF
    assembly and the round callbacks here. Fold logs: <run dir>/fold_K.log; schedule: fold_runs.json."""
    from kibble.training.kfold import KFoldRound
    from kibble.training.round import build_round_callbacks, run_round

    slots = resolve_slots(cfg.cv.devices, cfg.trainer.get("accelerator", "auto"), cfg.trainer.get("devices"))
    single = copy.deepcopy(cfg)  # what every fold process composes: the same config, one process
    with open_dict(single):
        single.cv.devices = None
    build_round_callbacks(single)  # a typo fails now, not after the folds
    kround = KFoldRound(single)  # assigns the folds once, before any fold process starts
    with open_dict(single):
        single.round = kround.round_index
    requested = [int(cfg.cv.fold)] if cfg.cv.get("fold") is not None else list(range(kround.n_folds))
    if any(k < 0 or k >= kround.n_folds for k in requested):
        raise KibbleError(f"cv.fold={cfg.cv.fold}: folds are numbered 0..{kround.n_folds - 1}")
    for k in range(kround.n_folds):  # a stale or foreign fold fails now, before any process starts
        kround.fold_complete(k)
        kround.resume_checkpoint(k)
    pending = [] if cfg.cv.get("assemble_only", False) else [k for k in requested if not kround.fold_complete(k)]
    out_dir = Path(cfg.paths.output_dir)

    def command_for(k: int) -> list[str]:
        settings = {"cv.fold": k, "cv.devices": None, "cv.assemble_only": False, "cv.assemble": False, "round": kround.round_index, "hydra.run.dir": str(out_dir / f"fold_{k}"), "hydra.mode": "RUN"}
        if str(cfg.data.get("num_workers")).lower() == "auto":  # the box's cores shared between the slots' loaders
            settings["data.num_workers"] = resolve_num_workers("auto", processes=len(slots) * _ranks_per_slot(cfg))
        return [sys.executable, "-m", "kibble.cli", "kfold", *single_run_overrides(task_overrides, hydra_overrides, **settings)]

    log.info("round %d: folds %s on %d device slot(s) %s", kround.round_index, pending, len(slots), slots)
    runs = run_on_devices(pending, slots, command_for, lambda k: out_dir / f"fold_{k}.log", cwd=os.getcwd())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "fold_runs.json").write_text(json.dumps([asdict(r) for r in runs], indent=2))
    message = failure_message(runs)
    if message:
        raise KibbleError(message)
    with open_dict(single):
        single.cv.assemble_only = True
    result = run_round(single)
    result["fold_runs"] = [asdict(r) for r in runs]
    return result


def _ranks_per_slot(cfg: DictConfig) -> int:
    """Training processes in one fold: its DDP ranks (trainer.devices), else 1."""
    devices = cfg.trainer.get("devices", 1)
    return int(devices) if isinstance(devices, int) and devices > 0 else 1
