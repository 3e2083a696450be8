"""The measuring part of scripts/gpu_check.sh (which installs, checks the GPU, then calls this).

    python scripts/gpu_check_run.py --data DIR --work DIR --out DIR [--profile gpu|smoke] [--accelerator cuda|cpu]
                                    [--epochs N] [--batch N] [--workers N] [--repeats N] [-- extra train overrides]

Steps, each a separate process as a user runs them: `kibble import` of the image folder; the offline
effnet-lite0 weights (gpu profile); (a) scripts/gpu_check_plain.py and (b) `kibble train` with the
same overrides, timed by gpu_check_timer (validation and test off in both); (c) `kibble kfold cv=kfold3
trainer.max_epochs=1` (full fine-tune) with its queue. Writes <out>/gpu_check.json and prints a summary.
Optional, after those: (d) `--own-folder`: scripts/time_own_folder.py --gpu on the data's train images (the
README's five commands, timed); (e) `--cleaning-trained-until S`: scripts/bench_cleaning_trained.py --gpu on
the data, seeds started until S seconds after this driver's start. Both record their sections into
<out>/benchmarks.md (a copy of docs/benchmarks.md) and never fail the check.
Profiles: gpu = experiment=dogs_gpu (tf_efficientnet_lite0, offline ImageNet weights, 224 px, bf16-mixed,
channels_last, batch 128, loaders from the CPU count) with model.compile=false unless --compile;
10 epochs per train run (the first not timed), 2 runs per arm;
smoke = timm's test_resnet from scratch at 32 px, fp32, batch 16, no workers, 3 epochs, 1 run (CPU, CI).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
TARGET_RATIO = 0.95

PROFILES: dict[str, dict[str, Any]] = {
    "gpu": {"epochs": 10, "batch": 128, "px": 224, "backbone": "tf_efficientnet_lite0", "repeats": 2},
    "smoke": {"epochs": 3, "batch": 16, "px": 32, "backbone": "test_resnet", "workers": 0, "repeats": 1},
}


class StepFailed(RuntimeError):
    pass


def model_overrides(args, weights: Path | None) -> list[str]:
    """Model, data, trainer: what the three runs share."""
    if args.profile == "gpu":
        # the shipped one-GPU preset: effnet-lite0 (offline weights), bf16-mixed, cuDNN benchmark, channels_last,
        # loaders sized from the CPU count, pinned; compile off unless --compile (it costs ~1 min per process)
        shared = ["experiment=dogs_gpu", f"paths.effnet_lite0={weights}", f"model.compile={'auto' if args.compile else 'false'}",
                  f"trainer.accelerator={'gpu' if args.accelerator == 'cuda' else 'cpu'}"]
    else:
        shared = ["model=small", f"model.backbone={args.backbone}", "model.pretrained=none", "trainer=cpu"]
    if args.workers is not None:
        shared.append(f"data.num_workers={args.workers}")
    return [*shared, f"model.input_size={args.px}", f"data.batch_size={args.batch}", *args.extra]


def throughput_overrides(args) -> list[str]:
    """Training throughput only: no validation or test inside `kibble train` (the plain loop has none)."""
    return [
        f"trainer.max_epochs={args.epochs}",
        "++trainer.limit_val_batches=0",
        "++trainer.num_sanity_val_steps=0",
        "callbacks.early_stopping=null",
        "callbacks.model_checkpoint.monitor=train/loss",  # checkpointing stays, on the train loss
        "callbacks.model_checkpoint.mode=min",
        "test=false",
    ]


def run_step(name: str, cmd: list[str], env: dict[str, str], timings: dict[str, float], timeout: float | None = None) -> None:
    print(f"\n=== gpu_check: {name}\n$ {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        timings[name] = round(time.perf_counter() - t0, 2)
        raise StepFailed(f"{name} stopped after {timeout:.0f} s (its time box)") from None
    timings[name] = round(time.perf_counter() - t0, 2)
    if proc.returncode != 0:
        raise StepFailed(f"{name} failed (exit {proc.returncode}); its output is above")


def kibble(*args: str) -> list[str]:
    return [sys.executable, "-m", "kibble.cli", *args]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def check_round(workspace: Path) -> dict[str, Any]:
    """OOF coverage and queue of the workspace's round 0."""
    import pandas as pd

    from kibble.data.datamodule import trainable_rows
    from kibble.data.manifest import load_manifest
    from kibble.paths import Workspace

    ws = Workspace(workspace)
    rdir = ws.round_dir(0)
    train_ids = set(load_manifest(ws.manifest).loc[lambda m: trainable_rows(m), "sample_id"])
    oof = pd.read_parquet(rdir / "oof.parquet", columns=["sample_id", "fold"])
    queue = pd.read_csv(rdir / "queue.csv") if (rdir / "queue.csv").is_file() else None
    info: dict[str, Any] = {
        "round_dir": str(rdir),
        "train_samples": len(train_ids),
        "oof_rows": len(oof),
        "oof_folds": sorted(int(f) for f in oof["fold"].unique()),
        "oof_covers_train_once": bool(len(oof) == len(train_ids) and set(oof["sample_id"]) == train_ids and oof["sample_id"].is_unique),
        "queue_rows": None if queue is None else len(queue),
        "queue_strategies": None if queue is None else sorted(queue["strategy"].dropna().unique().tolist()),
    }
    if (rdir / "metrics.json").is_file():
        info["round_metrics"] = read_json(rdir / "metrics.json")
        keep = ("fold", "device", "seconds", "train_images_per_second", "predict_images_per_second", "peak_device_memory_mb")
        info["fold_costs"] = [{k: c.get(k) for k in keep} for c in info["round_metrics"].get("fold_costs") or []]
    return info


def optional_steps(args, data: Path, work: Path, out: Path, env: dict[str, str], timings: dict[str, float],
                   summary: dict[str, Any], t_start: float) -> None:
    """(d) and (e): benchmarks that record their own sections into <out>/benchmarks.md; a failure is noted, not fatal."""
    doc = out / "benchmarks.md"
    shutil.copy2(ROOT / "docs" / "benchmarks.md", doc)
    weights = work / "weights" / "tf_efficientnet_lite0.pth"
    gpu = args.accelerator == "cuda"
    if args.own_folder:
        cmd = [sys.executable, str(SCRIPTS / "time_own_folder.py"), "--source", str(data), "--workdir", str(work / "own_folder"),
               "--doc", str(doc), "--override", f"paths.effnet_lite0={weights}", "--override", f"paths.cache_dir={work / 'own_cache'}"]
        if gpu:
            cmd.append("--gpu")
        try:
            run_step("own_folder", cmd, env, timings)
        except StepFailed as err:
            summary["own_folder_error"] = str(err)
    if args.cleaning_trained_until:
        left = args.cleaning_trained_until - (time.perf_counter() - t_start)
        if left < 60:
            summary["cleaning_trained_error"] = f"skipped: {left:.0f} s left before --cleaning-trained-until"
            return
        bench = work / "cleaning_trained"
        bench.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-u", str(SCRIPTS / "bench_cleaning_trained.py"), "--data", "imagewoof", "--workdir", str(bench),
               "--doc", str(doc), "--rates", *map(str, args.cleaning_rates), "--seeds", "0", "1", "2", "--deadline-s", str(int(left)),
               "--note", f"Data: {data.name}, a stratified subset of Imagewoof ({summary['data'].get('train', '?')} train images; "
               "scripts/gpu_check_data.py), run by scripts/gpu_check.sh --cleaning-trained-until; the training length "
               "(15 epochs) was not piloted on this data."]
        if gpu:
            cmd.append("--gpu")
        else:
            cmd += ["--quick"]
        bench_env = {**env, "KIBBLE_IMAGEWOOF": str(data)}
        hard = None if args.hard_stop is None else max(10.0, args.hard_stop - (time.perf_counter() - t_start))
        try:
            run_step("cleaning_trained", cmd, bench_env, timings, timeout=hard)
        except StepFailed as err:
            summary["cleaning_trained_error"] = str(err)
            if "time box" in str(err):  # record the seeds it finished (cached in results.json): no new seed is started
                try:
                    run_step("cleaning_trained_record", [*cmd, "--record-only"], bench_env, timings, timeout=60)
                except StepFailed as again:
                    summary["cleaning_trained_error"] += f"; {again}"
        results = bench / "results.json"
        if results.is_file():
            shutil.copy2(results, out / "cleaning_trained_results.json")


def write_summary(summary: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(path)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "lightning", "timm", "albumentations", "hydra", "numpy"):
        try:
            out[name] = __import__(name).__version__
        except Exception as err:  # noqa: BLE001 - reported, not fatal
            out[name] = f"unavailable ({type(err).__name__})"
    return out


def summarise(summary: dict) -> str:
    arms = summary.get("arms", {})
    lines = [f"\n=== gpu_check summary ({summary['profile']} profile, {summary.get('device', '?')})"]
    cfg = summary["config"]
    workers = arms.get("kibble", arms.get("plain", {})).get("num_workers", cfg["workers"])
    lines.append(f"{cfg['backbone']} @ {cfg['px']} px, batch {cfg['batch']}, {workers} workers, {cfg['epochs']} epochs "
                 f"({summary['data'].get('train', '?')} train images), precision {arms.get('kibble', arms.get('plain', {})).get('precision', '?')}")
    lines.append(f"{'arm':<16}{'images/s':>12}{'window img/s':>14}{'img/CPU-s':>11}{'peak MiB':>11}")
    for name, label in (("plain", "plain PyTorch"), ("kibble", "kibble train")):
        if name in arms:
            a = arms[name]
            cpu = f"{a['images_per_cpu_s']:>11.1f}" if a.get("images_per_cpu_s") else f"{'-':>11}"
            lines.append(f"{label:<16}{a['images_per_s']:>12.1f}{a['images_per_s_window']:>14.1f}{cpu}{a['peak_mem_mib']:>11.0f}")
    if "ratio" in summary:
        verdict = {True: "met", False: "MISSED", None: "not judged on a CPU"}[summary["target_met"]]
        cpu = f", {summary['ratio_cpu']:.3f}x per CPU-s" if "ratio_cpu" in summary else ""
        lines.append(f"kibble / plain: {summary['ratio']:.3f}x steady, {summary['ratio_window']:.3f}x window{cpu} (target >= {TARGET_RATIO} steady: {verdict})")
    if "kfold" in summary:
        k = summary["kfold"]
        lines.append(f"kfold: {len(k['oof_folds'])} folds x 1 epoch in {summary['timings_s'].get('kfold', 0):.1f} s; OOF {k['oof_rows']}/{k['train_samples']} "
                     f"train samples (each once: {k['oof_covers_train_once']}); queue {k['queue_rows']} rows")
        for c in k.get("fold_costs", []):
            lines.append(f"  fold {c['fold']}: {c['seconds']} s, train {c['train_images_per_second']} img/s, predict "
                         f"{c['predict_images_per_second']} img/s, peak device memory {c['peak_device_memory_mb']} MB ({c['device']})")
    lines.append(f"timings (s): {summary['timings_s']}")
    if summary.get("error"):
        lines.append(f"ERROR: {summary['error']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="image folder with train/<class>/ and val/<class>/")
    parser.add_argument("--work", type=Path, required=True, help="scratch dir (replaced): workspace, weights, runs")
    parser.add_argument("--out", type=Path, required=True, help="where gpu_check.json goes")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="gpu")
    parser.add_argument("--accelerator", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the timed train arms (the first is warm-up)")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (gpu profile: data.num_workers=auto, from the CPU count)")
    parser.add_argument("--compile", action="store_true", help="gpu profile: model.compile=auto in all runs (adds ~1 min per process)")
    parser.add_argument("--px", type=int, default=None)
    parser.add_argument("--backbone", default=None, help="smoke profile only (gpu: tf_efficientnet_lite0, the offline weights)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per train arm, interleaved (plain, kibble, kibble, plain, ...); median")
    parser.add_argument("--no-kfold", action="store_true")
    parser.add_argument("--setup-s", type=float, default=None, help="gpu_check.sh's checks + install time (recorded)")
    parser.add_argument("--own-folder", action="store_true", help="(d) time the README's own-folder commands on the GPU")
    parser.add_argument("--cleaning-trained-until", type=float, default=None,
                        help="(e) run bench_cleaning_trained --gpu, starting seeds until this many seconds after the driver's start")
    parser.add_argument("--cleaning-rates", type=float, nargs="+", default=[0.4])
    parser.add_argument("--hard-stop", type=float, default=None,
                        help="(e) is killed this many seconds after the driver's start; the seeds it finished are then recorded")
    parser.add_argument("extra", nargs="*", help="extra Hydra overrides for all three runs (after --)")
    args = parser.parse_args()
    prof = PROFILES[args.profile]
    args.epochs = args.epochs or prof["epochs"]
    args.batch = args.batch or prof["batch"]
    args.px = args.px or prof["px"]
    args.backbone = args.backbone or prof["backbone"]
    args.repeats = args.repeats or prof["repeats"]
    args.workers = args.workers if args.workers is not None else prof.get("workers")
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is warm-up and not timed)")

    t_start = time.perf_counter()
    data, work, out = args.data.resolve(), args.work.resolve(), args.out.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)
    workspace = work / "ws"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(SCRIPTS), os.environ.get("PYTHONPATH")]))}
    env.pop("HYDRA_FULL_ERROR", None)
    timings: dict[str, float] = {}
    if args.setup_s is not None:
        timings["setup"] = round(args.setup_s, 2)
    summary: dict[str, Any] = {
        "profile": args.profile, "accelerator": args.accelerator, "target_ratio": TARGET_RATIO,
        "config": {"backbone": args.backbone, "px": args.px, "batch": args.batch, "workers": args.workers, "epochs": args.epochs, "compile": args.compile,
                   "repeats": args.repeats, "extra_overrides": args.extra},
        "data": {"dir": str(data)}, "versions": versions(), "host": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "timings_s": timings, "arms": {},
    }
    summary_path = out / "gpu_check.json"
    try:
        run_step("import", kibble("import", "source=image_folder", f"source.root={data}", f"workspace={workspace}", "overwrite=true",
                                  f"hydra.run.dir={work / 'runs' / 'import'}"), env, timings)
        import pandas as pd

        split_counts = pd.read_parquet(workspace / "manifest.parquet", columns=["split"])["split"].value_counts()
        summary["data"].update({k: int(v) for k, v in split_counts.items()})
        weights = None
        if args.profile == "gpu":
            weights = work / "weights" / "tf_efficientnet_lite0.pth"
            run_step("weights", [sys.executable, str(SCRIPTS / "convert_effnet_lite0.py"), "--out", str(weights)], env, timings)
        shared = model_overrides(args, weights)
        train = [f"workspace={workspace}", *shared, *throughput_overrides(args)]
        runs: dict[str, list[dict]] = {"plain": [], "kibble": []}
        for r in range(args.repeats):
            for arm in (("plain", "kibble") if r % 2 == 0 else ("kibble", "plain")):
                result = work / f"{arm}_{r}.json"
                if arm == "plain":
                    cmd = [sys.executable, str(SCRIPTS / "gpu_check_plain.py"), "--out", str(result), *train]
                else:
                    timer = ["+callbacks.gpu_check_timer._target_=gpu_check_timer.TrainTimer", f"+callbacks.gpu_check_timer.out={result}"]
                    cmd = kibble("train", *train, *timer, f"hydra.run.dir={work / 'runs' / f'train_{r}'}")
                run_step(f"{arm}_{r}", cmd, env, timings)
                runs[arm].append(read_json(result))
        for arm, results in runs.items():
            best = dict(results[0])
            for key in ("images_per_s", "images_per_s_window", "images_per_cpu_s"):
                if any(x.get(key) is None for x in results):
                    continue
                best[key] = statistics.median(x[key] for x in results)
                best[f"{key}_runs"] = [x[key] for x in results]
            summary["arms"][arm] = best
        summary["device"] = summary["arms"]["kibble"]["device"]
        summary["ratio"] = summary["arms"]["kibble"]["images_per_s"] / summary["arms"]["plain"]["images_per_s"]
        summary["ratio_window"] = summary["arms"]["kibble"]["images_per_s_window"] / summary["arms"]["plain"]["images_per_s_window"]
        if summary["arms"]["kibble"].get("images_per_cpu_s") and summary["arms"]["plain"].get("images_per_cpu_s"):
            summary["ratio_cpu"] = summary["arms"]["kibble"]["images_per_cpu_s"] / summary["arms"]["plain"]["images_per_cpu_s"]
        # the target is about a GPU; on the CPU (smoke, dry runs) the ratio only shows that both arms ran
        summary["target_met"] = bool(summary["ratio"] >= TARGET_RATIO) if args.accelerator == "cuda" else None
        if not args.no_kfold:
            run_step("kfold", kibble("kfold", f"workspace={workspace}", *shared, "cv=kfold3", "trainer.max_epochs=1",
                                     f"hydra.run.dir={work / 'runs' / 'kfold'}"), env, timings)
            summary["kfold"] = check_round(workspace)
            if summary["kfold"].get("round_metrics"):
                shutil.copy2(workspace / "rounds" / "000" / "metrics.json", out / "kfold_round_metrics.json")
    except StepFailed as err:
        summary["error"] = str(err)
    if args.own_folder or args.cleaning_trained_until:
        write_summary(summary, summary_path)  # what is measured so far survives a kill during the optional steps
        optional_steps(args, data, work, out, env, timings, summary, t_start)
    timings["total_driver"] = round(time.perf_counter() - t_start, 2)
    write_summary(summary, summary_path)
    print(summarise(summary))
    print(f"summary: {summary_path}")
    if summary.get("error"):
        print(f"gpu_check: {summary['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
