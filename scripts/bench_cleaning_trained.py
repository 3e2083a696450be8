"""Label cleaning where noise hurts: a CNN trained end to end on noisy labels, before and after kibble's loop.

Issue 14, item 5. A frozen-feature head barely feels label noise; a network trained end to end on the
labels memorises them. For each noise rate and seed this script trains the same CNN, with the same
training seed, on:

- noisy labels (uniform flips, kibble.noise.uniform_flips: exactly rate x n_train train labels flipped);
- clean labels (the truth);
- the labels after 1 and after R rounds of the real `kibble loop` (kibble.tasks.loop.run: k-fold round
  in features mode -> queue built by the SHIPPED conf/strategy/default.yaml, only its budget set ->
  simulated annotator answering from true_label -> merge);
- the labels after 1 and after R rounds of random relabelling: each round the same budget of random,
  not yet reviewed train samples, answered by the same simulated annotator and merged the same way
  (SimulatedAnnotator + kibble.labels.merge.merge_reviews).

Budget per round: ceil(budget_share x the number of wrong train labels at the start), the same count
every round and in both arms. Gap closed = (acc_arm - acc_noisy) / (acc_clean - acc_noisy), per seed.
Targets (issue 14): where the noisy-to-clean gap is >= 5 points, cleaning closes >= 80 % of it, and at
least 2x the share random relabelling closes.

    python scripts/bench_cleaning_trained.py                      # digits, 32 px, 20 % and 40 %, seeds 0 1 2
    python scripts/bench_cleaning_trained.py --rates 0.4          # what fits a shared 2-core CPU in ~40 min
    python scripts/bench_cleaning_trained.py --quick --doc /tmp/b.md   # smoke test (tests/scripts/)
    python scripts/bench_cleaning_trained.py --gpu                # Imagewoof at 224 px on one GPU

Results of finished (rate, seed) groups are kept in <workdir>/results.json, so an interrupted run
resumes where it stopped (--fresh starts over).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle OpenMP threads sleep (docs/benchmarks.md)

import pandas as pd  # noqa: E402

from kibble.benchmarks import PROJECT_ROOT, record, shared_imagewoof  # noqa: E402
from kibble.benchmarks.cleaning_trained import (  # noqa: E402
    TITLE, Settings, label_noise, load_results, loop_overrides, make_workspace, noisy_train_labels, notes_for, random_rounds,
    save_results, shipped_strategy, summarise, train_overrides,
)

# Settings, make_workspace, noisy_train_labels, label_noise and random_rounds stay importable from here (tests/scripts).
# What runs kibble's tasks lives here, not in the library (nothing under src/kibble imports kibble.tasks).


def import_clean(work: Path, settings: Settings) -> Path:
    """The clean workspace, imported once (digits: the built-in source at settings.size px; Imagewoof: the shared copy)."""
    from kibble.config import compose_config
    from kibble.tasks import import_data

    ws = work / "imported"
    if (ws / "manifest.parquet").is_file():
        return ws
    if settings.data == "digits":
        source = ["source=digits", f"source.size={settings.size}"]
    else:
        root = shared_imagewoof()
        if root is None:
            raise SystemExit("../shared/data/imagewoof not found (set KIBBLE_IMAGEWOOF)")
        source = ["source=image_folder", f"source.root={root}"]
    import_data.run(compose_config("import", [f"workspace={ws}", "overwrite=true", "seed=0", *source], output_dir=work / "runs" / "import"))
    return ws


def train_accuracy(ws: Path, work: Path, settings: Settings, seed: int, name: str) -> float:
    from kibble.config import compose_config
    from kibble.tasks import train

    out = work / "runs" / name
    shutil.rmtree(out, ignore_errors=True)
    result = train.run(compose_config("train", train_overrides(ws, work, settings, seed), output_dir=out))
    shutil.rmtree(out, ignore_errors=True)
    return float(result["test_accuracy"])


def run_loop(ws: Path, work: Path, settings: Settings, seed: int, rounds: int, budget: int) -> list[dict]:
    from kibble.config import compose_config
    from kibble.tasks import loop

    out = work / "runs" / f"loop_{ws.parent.name}"
    return loop.run(compose_config("loop", loop_overrides(ws, work, settings, seed, rounds, budget), output_dir=out))["rounds"]


def run_group(imported: Path, work: Path, settings: Settings, rate: float, seed: int) -> dict:
    """Every arm but `clean` for one (rate, seed): accuracies, label noise left, queue precision, seconds."""
    start = time.perf_counter()
    group = work / f"rate{round(rate * 100):02d}_seed{seed}"
    labels = noisy_train_labels(imported, rate, seed)
    noisy_ws = make_workspace(imported, group / "noisy", labels)
    noise0, wrong0 = label_noise(noisy_ws)
    budget = math.ceil(settings.budget_share * wrong0)
    out: dict = {"rate": rate, "seed": seed, "budget": budget, "n_wrong": wrong0, "arms": {}}
    out["arms"]["noisy"] = {"acc": train_accuracy(noisy_ws, work, settings, seed, "noisy"), "noise": noise0, "reviews": 0}
    print(f"[{rate:.0%} seed {seed}] noisy: acc {out['arms']['noisy']['acc']:.4f}, budget {budget}/round", flush=True)
    for arm, runner in (("loop", run_loop), ("random", random_rounds)):
        ws = make_workspace(imported, group / arm, labels)
        rows: list[dict] = []
        for rounds, key in ((1, f"{arm}_1"), (settings.rounds, f"{arm}_R")):
            new = runner(ws, work, settings, seed, rounds, budget)
            rows = [r for r in rows if r["round"] not in {n["round"] for n in new}] + new  # the loop returns every round, random the new ones
            acc = train_accuracy(ws, work, settings, seed, key)
            noise, _ = label_noise(ws)
            precision = [float(r["queue_precision"]) for r in rows]
            out["arms"][key] = {"acc": acc, "noise": noise, "reviews": budget * rounds, "precision": precision}
            print(f"[{rate:.0%} seed {seed}] {key}: acc {acc:.4f}, label noise {noise:.4f}, queue precision {[round(p, 3) for p in precision]}", flush=True)
    out["seconds"] = time.perf_counter() - start
    shutil.rmtree(group, ignore_errors=True)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", choices=["digits", "imagewoof"], default=None, help="default digits (imagewoof with --gpu)")
    p.add_argument("--size", type=int, default=None, help="train px (digits 32; imagewoof 64, or 224 with --gpu)")
    p.add_argument("--rates", type=float, nargs="+", default=[0.2, 0.4])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=None, help="end-to-end training epochs (digits 30)")
    p.add_argument("--backbone", default="test_resnet", help="timm backbone trained from scratch on digits")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--budget-share", type=float, default=0.5, help="reviews per round = ceil(share x wrong train labels at the start)")
    p.add_argument("--gpu", action="store_true", help="accelerator=gpu, Imagewoof at 224 px")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 seed, 40 %% noise, 2 rounds, a few batches")
    p.add_argument("--workdir", type=Path, default=PROJECT_ROOT / "workspaces" / "bench" / "cleaning_trained")
    p.add_argument("--doc", type=Path, default=None, help="where to record the section (default docs/benchmarks.md; --quick: nowhere)")
    p.add_argument("--fresh", action="store_true", help="ignore results of an earlier, interrupted run")
    p.add_argument("--note", action="append", default=[], help="an extra line for the section's notes")
    p.add_argument("--deadline-s", type=float, default=None,
                   help="start no new seed after this many seconds; record the seeds finished by then (a time-boxed GPU lease)")
    p.add_argument("--record-only", action="store_true",
                   help="start nothing: record the seeds an earlier, stopped run finished (results.json of the same settings)")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    data = args.data or ("imagewoof" if args.gpu else "digits")
    size = args.size or (32 if data == "digits" else 224 if args.gpu else 64)
    epochs = args.epochs or (30 if data == "digits" else 15)
    if args.quick:
        return Settings(data=data, size=size, backbone=args.backbone, epochs=1, head_epochs=2, embed_size=32, rounds=2,
                        budget_share=args.budget_share, gpu=args.gpu, limit_batches=3)
    return Settings(data=data, size=size, backbone=args.backbone, epochs=epochs, embed_size=96 if data == "digits" else None,
                    rounds=args.rounds, budget_share=args.budget_share, gpu=args.gpu)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = parse_args(argv)
    if args.quick:
        args.rates, args.seeds = [0.4], [0]
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    settings = settings_from(args)
    from dataclasses import replace

    settings = replace(settings, strategy=shipped_strategy(work))
    print(f"settings: {settings}", flush=True)
    results_path = work / "results.json"
    results = {"groups": {}, "clean": {}} if args.fresh else load_results(results_path, settings)
    reused = bool(results["groups"] or results["clean"])
    imported = import_clean(work, settings)
    for seed in args.seeds:
        if args.record_only or (args.deadline_s is not None and time.perf_counter() - start > args.deadline_s):
            print("--record-only: no seed started" if args.record_only else f"deadline of {args.deadline_s:.0f} s passed: no seed from {seed} on",
                  flush=True)
            break
        if str(seed) not in results["clean"]:
            t = time.perf_counter()
            results["clean"][str(seed)] = train_accuracy(imported, work, settings, seed, "clean")
            results.setdefault("clean_seconds", {})[str(seed)] = time.perf_counter() - t
            save_results(results_path, settings, results)
        print(f"[seed {seed}] clean: acc {results['clean'][str(seed)]:.4f}", flush=True)
        for rate in args.rates:
            key = f"{rate}:{seed}"
            if key not in results["groups"]:
                results["groups"][key] = run_group(imported, work, settings, rate, seed)
                save_results(results_path, settings, results)
    done = [s for s in args.seeds if str(s) in results["clean"] and all(f"{r}:{s}" in results["groups"] for r in args.rates)]
    if not done:
        print("no seed finished: nothing to record", flush=True)
        return pd.DataFrame()
    if done != args.seeds:
        how = "recorded after the run was stopped (--record-only)" if args.record_only else f"--deadline-s {args.deadline_s:.0f}"
        args.note.append(f"Time-boxed run ({how}): seeds {done} finished of the {args.seeds} asked for.")
        args.seeds = done
    table, verdicts, _ = summarise(results, args.rates, args.seeds, settings.rounds)
    wall = time.perf_counter() - start
    print(table.to_markdown(index=False))
    for v in verdicts:
        print(v)
    doc = args.doc if args.doc is not None else (None if args.quick else PROJECT_ROOT / "docs" / "benchmarks.md")
    if doc is not None:
        notes = notes_for(settings, args, args.seeds, args.rates, wall, (load_before, os.getloadavg()[0]), results, reused)
        title = TITLE.format(data="digits" if settings.data == "digits" else f"Imagewoof, {settings.size} px")
        record(title, table, verdicts + notes, path=doc)
        print(f"recorded: {doc}")
    return table


if __name__ == "__main__":
    main(sys.argv[1:])
