"""`kibble <task> [hydra overrides]`: dispatch to the task's Hydra entry point."""

from __future__ import annotations

import importlib
import os
import sys

# task -> the action words it takes before the overrides (`kibble labelstudio push ...` -> action=push)
SUBCOMMANDS: dict[str, tuple[str, ...]] = {"labelstudio": ("push", "pull")}

# task -> (module, one-line description)
TASKS: dict[str, tuple[str, str]] = {
    "import": ("kibble.tasks.import_data", "read a source (digits, image folder, Stanford Dogs, CSV) into a workspace"),
    "train": ("kibble.tasks.train", "fine-tune a timm model on the train split, test it, save the best checkpoint"),
    "predict": ("kibble.tasks.predict", "checkpoint -> predictions Parquet for a manifest split or a folder of images"),
    "eval": ("kibble.tasks.evaluate", "per-class F1 vs targets, severity, calibration + HTML report of a checkpoint, predictions or a round"),
    "embed": ("kibble.tasks.embed", "fill the features-mode cache ahead of a round, as one job or n (shard=i/n)"),
    "kfold": ("kibble.tasks.kfold", "k-fold cross-validation: out-of-fold softmax for every train image (resumable)"),
    "queue": ("kibble.tasks.queue", "rank samples with cleaning strategies into a relabel queue (CSV + Label Studio)"),
    "merge": ("kibble.tasks.merge", "fold reviews (CSV or Label Studio export) into the label history"),
    "loop": ("kibble.tasks.loop", "run cleaning rounds end to end with a simulated annotator (mode=active: active learning vs random)"),
    "report": ("kibble.tasks.report", "(re)write a round's HTML report: test metrics, queue gallery, loop curves"),
    "labelstudio": ("kibble.tasks.labelstudio", "push a round's queue to Label Studio / pull its annotations (push|pull)"),
    "monitor": ("kibble.tasks.monitor", "drift of a new batch's predictions/embeddings vs a reference; drifted images into a queue"),
    "status": ("kibble.tasks.status", "where a workspace stands: splits, round, labels changed, queues, flags, drift, the next command"),
}


# tasks that never start a Trainer: no DDP relaunch patch, whose torch + Lightning import costs seconds
# (tests/test_cli.py checks their modules import neither)
NO_TRAINER = frozenset({"status", "merge", "import", "labelstudio", "report"})

_TASK_ENV = "KIBBLE_TASK"


def usage() -> str:
    width = max(len(t) for t in TASKS)
    lines = ["usage: kibble <task> [hydra overrides] [-m] [--help]", "", "tasks:"]
    lines += [f"  {name.ljust(width)}  {desc}" for name, (_, desc) in TASKS.items()]
    lines += ["", "Every task takes workspace=DIR. `kibble <task> --help` shows its config; `--cfg job` prints it."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    relaunched = os.environ.get(_TASK_ENV)
    if argv and argv[0] not in TASKS and relaunched in TASKS and all("=" in a or a.startswith("-") for a in argv):
        # Lightning's DDP launcher re-runs `python <sys.argv[0]> <overrides>` for ranks > 0: the task
        # name is not in that command line, so it travels in the environment.
        argv = [relaunched, *argv]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    task, rest = argv[0], argv[1:]
    if task not in TASKS:
        print(f"kibble: unknown task {task!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if rest and rest[0] in SUBCOMMANDS.get(task, ()):
        rest = [f"action={rest[0]}", *rest[1:]]
    user_wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    # Hydra re-raises instead of printing its own multi-line report; we print one line below
    os.environ["HYDRA_FULL_ERROR"] = "1"
    from kibble import output

    output.configure(verbose=output.verbose_from_overrides(rest))  # no Lightning tips (DDP ranks re-run this too)
    module = importlib.import_module(TASKS[task][0])
    os.environ[_TASK_ENV] = task
    if task not in NO_TRAINER:
        from kibble.training.distributed import install_hydra_ddp_relaunch

        # DDP ranks > 0 re-run this task as one run of the current job (no nested sweep under -m)
        install_hydra_ddp_relaunch(task)
    script = sys.argv[0] if sys.argv and os.path.basename(sys.argv[0]).startswith("kibble") else ""
    # a real, runnable argv[0] (the console script) for launchers that re-run sys.argv outside Hydra
    sys.argv = [os.path.abspath(script) if os.path.isfile(script) else f"kibble-{task}", *rest]
    from kibble import KibbleError

    try:
        with output.hold_hydra_banner() as banner:  # Hydra's "Error executing job" line: not above a user error
            module.main()
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 1
    except Exception as err:  # noqa: BLE001 - sorted into user errors (one line) and bugs (traceback)
        message = None if user_wants_traceback else _user_error(err, KibbleError)
        if message is None:
            banner.release()
            raise
        print(f"kibble {task}: error: {message}", file=sys.stderr)
        return 1
    return 0


def _user_error(err: BaseException, kibble_error: type) -> str | None:
    """The one-line message for a user's input problem (possibly wrapped by hydra.utils.instantiate) or a
    config error (bad override, missing value); None for anything else, which is a bug worth a traceback."""
    from hydra.errors import CompactHydraException
    from omegaconf.errors import OmegaConfBaseException

    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, kibble_error):
            return str(cause)
        cause = cause.__cause__
    if isinstance(err, (CompactHydraException, OmegaConfBaseException)):
        return " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return None


if __name__ == "__main__":
    sys.exit(main())
