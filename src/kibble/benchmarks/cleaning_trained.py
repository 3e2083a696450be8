"""Label cleaning where noise hurts (issue 14, item 5): the settings, workspaces, cleaning arms and recorded
section of scripts/bench_cleaning_trained.py.

Library code of the benchmark: what builds its workspaces and overrides, the random-relabelling arm
(merged through kibble.labels.merge, as `kibble loop` merges), the cache of finished (rate, seed) groups,
and the table, verdicts and notes it records. What runs kibble's tasks (the import, `kibble train`,
`kibble loop`) stays in the script: nothing under src/kibble imports kibble.tasks (STYLE.md).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ARMS = ["noisy", "clean", "loop_1", "loop_R", "random_1", "random_R"]
TITLE = "Label cleaning where noise hurts: a CNN trained end to end ({data})"
GAP_MIN, CLOSE_TARGET, RATIO_TARGET = 0.05, 0.80, 2.0
# How the digits settings were fixed, before any cleaning arm ran (noisy vs clean only, seed 0's noise draw, one run each).
PILOT = ("Training length chosen on a pilot before the run (seed 0's noise draw, noisy and clean arms only): test_resnet, last epoch, "
         "40 % noise: 12 / 20 / 30 epochs gave a gap of 0.8 / 5.3 / 12.8 points (20 % noise: 2.2 at 20 epochs, 5.6 at 30); 30 epochs is the "
         "shortest that makes noise hurt. The demo's own recipe hides most of it: resnet10t, 15 epochs, checkpoint picked on an inner "
         "split of the noisy labels gave 96.4 % vs 99.2 % at 40 % noise (2.8 points), and took ~200 s a run on this loaded machine, "
         "hence the smaller test_resnet (~2 min a run at 30 epochs).")


@dataclass(frozen=True)
class Settings:
    """Everything that defines a result; a cached group counts only under the same settings."""

    data: str = "digits"
    size: int = 32
    backbone: str = "test_resnet"
    epochs: int = 30
    head_epochs: int = 15
    embed_size: int | None = 96
    rounds: int = 3
    budget_share: float = 0.5
    gpu: bool = False
    limit_batches: int | None = None
    strategy: str = ""  # the shipped queue config, as composed (it may change between runs)


def arm_label(arm: str, rounds: int) -> str:
    return {"noisy": "noisy labels", "clean": "clean labels", "loop_1": "kibble loop, 1 round", "loop_R": f"kibble loop, {rounds} rounds",
            "random_1": "random relabel, 1 round", "random_R": f"random relabel, {rounds} rounds"}[arm]


# ---------------------------------------------------------------- workspaces


def weights_path(work: Path) -> Path:
    from kibble.models.weights import convert_effnet_lite0

    path = work / "weights" / "tf_efficientnet_lite0.pth"
    return path if path.is_file() else convert_effnet_lite0(path)



def make_workspace(imported: Path, dest: Path, labels: dict[str, str]) -> Path:
    """A fresh workspace over the imported images whose train labels are `labels` (by sample_id); truth in true_label."""
    from kibble.data.manifest import load_manifest, save_manifest
    from kibble.io import atomic_write_parquet
    from kibble.labels.history import initial_events
    from kibble.paths import Workspace

    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for f in ("classes.yaml", "import_report.json"):
        shutil.copy2(imported / f, dest / f)
    (dest / "state.json").write_text(json.dumps({"round": 0, "data_root": str(Workspace(imported).data_root.resolve())}))
    frame = load_manifest(imported / "manifest.parquet")
    frame["true_label"] = frame["label"]
    hit = frame["sample_id"].isin(list(labels))
    frame.loc[hit, "label"] = frame.loc[hit, "sample_id"].map(labels).to_numpy()
    save_manifest(frame, dest / "manifest.parquet")
    atomic_write_parquet(dest / "label_events.parquet", initial_events(frame))  # the noisy label is the import's
    return dest


def noisy_train_labels(imported: Path, rate: float, seed: int) -> dict[str, str]:
    from kibble.data.classes import ClassList
    from kibble.data.datamodule import trainable_rows
    from kibble.data.manifest import load_manifest
    from kibble.noise import uniform_flips

    names = ClassList.load(imported / "classes.yaml").names
    frame = load_manifest(imported / "manifest.parquet", names)
    train = frame[trainable_rows(frame)]
    index = {n: i for i, n in enumerate(names)}
    noisy, _ = uniform_flips(train["label"].map(index).to_numpy(), len(names), rate, seed=seed)
    return dict(zip(train["sample_id"].astype(str), (names[i] for i in noisy)))


def label_noise(ws: Path) -> tuple[float, int]:
    """Share and count of trainable train labels that differ from the truth."""
    from kibble.data.datamodule import trainable_rows
    from kibble.data.manifest import load_manifest

    frame = load_manifest(ws / "manifest.parquet")
    rows = frame[trainable_rows(frame)]
    wrong = int((rows["label"] != rows["true_label"]).sum())
    return wrong / len(rows), wrong


# ---------------------------------------------------------------- the arms


def train_overrides(ws: Path, work: Path, settings: Settings, seed: int) -> list[str]:
    """`kibble train` of the end-to-end CNN: fixed epochs, the last epoch's weights tested (no early
    stopping, no checkpoint pick on an inner split of the noisy labels: every train label is trained on)."""
    if settings.data == "digits":
        model = ["model=small", f"model.backbone={settings.backbone}", "model.pretrained=none", f"model.input_size={settings.size}", "data=digits"]
    else:  # Imagewoof: effnet-lite0 fine-tuned from the offline ImageNet weights
        model = ["experiment=dogs_gpu" if settings.gpu else "experiment=imagewoof", f"model.input_size={settings.size}",
                 f"paths.effnet_lite0={weights_path(work)}"]
    hardware = ["trainer.accelerator=gpu", "model.compile=false"] if settings.gpu else ["trainer=cpu", "data.num_workers=0"]
    limit = [f"++trainer.limit_train_batches={settings.limit_batches}", f"++trainer.limit_test_batches={settings.limit_batches}"] if settings.limit_batches else []
    return [f"workspace={ws}", *model, *hardware, f"trainer.max_epochs={settings.epochs}", "callbacks=quiet", "callbacks.early_stopping=null",
            "callbacks.model_checkpoint=null", "data.inner_val_fraction=0", "data.decoded_cache=true",
            f"data.decoded_cache_dir={work / 'decoded'}", "logger=none", f"seed={seed}", *limit]



def loop_overrides(ws: Path, work: Path, settings: Settings, seed: int, rounds: int, budget: int) -> list[str]:
    """`kibble loop` as the README's main job runs it (conf/experiment/demo_loop.yaml: features mode, 3 folds,
    effnet-lite0 embeddings, model=features_lite0 also for Imagewoof), except that the queue is the shipped conf/strategy/default.yaml with a count budget."""
    if settings.data == "digits":
        mode = ["model=features_lite0", f"embedder.input_size={settings.embed_size}", "embedder.num_workers=0"]
    else:
        mode = ["experiment=imagewoof_features", "model=features_lite0"]
    return [f"workspace={ws}", *mode, "cv=kfold3", "cv.progress=false", f"trainer.max_epochs={settings.head_epochs}",
            f"paths.cache_dir={work / 'cache'}", f"paths.effnet_lite0={weights_path(work)}", "logger=none",
            f"rounds={rounds}", f"seed={seed}", f"strategy.budget={budget}", "round_callbacks.report=null"]


def shipped_strategy(work: Path) -> str:
    """The queue the loop builds: conf/strategy/default.yaml as composed now (strategies, quotas, params)."""
    from kibble.config import compose_config, plain

    cfg = compose_config("loop", [], output_dir=work / "runs" / "compose")
    s = plain(cfg.strategy)
    parts = [f"strategies={s.get('strategies')}"]
    parts += [f"{k}={s[k]}" for k in ("quotas", "params") if s.get(k)]
    return ", ".join(parts)



def random_rounds(ws: Path, work: Path, settings: Settings, seed: int, rounds: int, budget: int) -> list[dict]:
    """Random relabelling up to `rounds` rounds: each round `budget` random train samples not reviewed before,
    answered by the loop's own annotator config and merged with the loop's policy, as kibble loop merges."""
    import hydra

    from kibble.config import compose_config, plain
    from kibble.data.classes import ClassList
    from kibble.data.datamodule import trainable_rows
    from kibble.data.manifest import load_manifest
    from kibble.labels.merge import merge_reviews
    from kibble.paths import Workspace

    cfg = compose_config("loop", loop_overrides(ws, work, settings, seed, rounds, budget), output_dir=work / "runs" / "random")
    annotator = hydra.utils.instantiate(cfg.annotator)  # SimulatedAnnotator (conf/annotator/simulated.yaml)
    workspace = Workspace(ws).require()
    names = ClassList.load(workspace.classes).names
    rng = np.random.default_rng([seed, 7])
    rows = []
    while workspace.current_round() < rounds:
        rnd = workspace.current_round()
        manifest = load_manifest(workspace.manifest, names)
        reviewed = set()
        events_path = workspace.label_events
        if events_path.is_file():
            events = pd.read_parquet(events_path)
            reviewed = set(events.loc[events["source"].astype(str) != "import", "sample_id"].astype(str))
        pool = manifest[trainable_rows(manifest) & ~manifest["sample_id"].astype(str).isin(reviewed)]
        picked = pool.iloc[np.sort(rng.choice(len(pool), size=min(budget, len(pool)), replace=False))]
        queue = pd.DataFrame({"sample_id": picked["sample_id"].astype(str), "given_label": picked["label"].astype(str), "round": rnd})
        noisy_before = int((picked["label"] != picked["true_label"]).sum())
        reviews = annotator.review(queue, manifest, names)
        merge_reviews(workspace, reviews, source="simulated", round_index=rnd, policy=plain(cfg.policy),
                      origin="random relabel", quality=plain(cfg.get("quality")), task="bench random relabel")
        if workspace.current_round() == rnd:
            workspace.set_current_round(rnd + 1)
        rows.append({"round": rnd, "queue_size": len(queue), "queue_precision": noisy_before / max(len(queue), 1)})
    return rows



# ---------------------------------------------------------------- results and the section


def load_results(path: Path, settings: Settings) -> dict:
    if not path.is_file():
        return {"groups": {}, "clean": {}}
    saved = json.loads(path.read_text())
    if saved.get("settings") == asdict(settings):
        return saved["results"]
    kept = path.with_name(f"results-{time.strftime('%Y%m%d-%H%M%S')}.json")
    path.rename(kept)  # other settings (another shipped queue, epochs...): start over, keep the old numbers beside
    print(f"{path}: saved under other settings, moved to {kept.name}; starting over", flush=True)
    return {"groups": {}, "clean": {}}


def save_results(path: Path, settings: Settings, results: dict) -> None:
    from kibble.io import atomic_write_json

    atomic_write_json(path, {"settings": asdict(settings), "results": results})


def mean_std(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    v = np.asarray(values, dtype=float) * scale
    if not len(v):
        return "-"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else f"{v.mean():.{digits}f}"


def summarise(results: dict, rates: list[float], seeds: list[int], rounds: int) -> tuple[pd.DataFrame, list[str], list[dict]]:
    """The table (one row per rate and arm), verdict lines and per-rate figures."""
    from scipy import stats

    rows, verdicts, figures = [], [], []
    for rate in rates:
        groups = [results["groups"][f"{rate}:{s}"] for s in seeds if f"{rate}:{s}" in results["groups"]]
        if not groups:
            continue
        done = [g["seed"] for g in groups]
        clean = [results["clean"][str(s)] for s in done]
        noisy = [g["arms"]["noisy"]["acc"] for g in groups]
        gaps = [c - n for c, n in zip(clean, noisy)]
        closed: dict[str, list[float]] = {}
        for arm in ARMS:
            accs = clean if arm == "clean" else [g["arms"][arm]["acc"] for g in groups]
            closed[arm] = [(a - n) / gap if gap > 0 else float("nan") for a, n, gap in zip(accs, noisy, gaps)]
            noise = [0.0] * len(groups) if arm == "clean" else [g["arms"][arm]["noise"] for g in groups]
            precision = [np.mean(round_precision(g, arm, rounds)) for g in groups] if arm[-2:] in ("_1", "_R") else []
            rows.append({
                "noise": f"{rate:.0%}", "arm": arm_label(arm, rounds), "seeds": len(groups),
                "reviews": "-" if arm in ("noisy", "clean") else str(groups[0]["arms"][arm]["reviews"]),
                "label noise left %": mean_std(noise, 100),
                "queue precision %": mean_std(precision, 100) if precision else "-",
                "test acc %": mean_std(accs, 100),
                "gap closed %": "-" if arm in ("noisy", "clean") else mean_std(closed[arm], 100, 0),
                "per seed": ", ".join(f"{a * 100:.1f}" for a in accs),
            })
        fig = {"rate": rate, "seeds": done, "gap": gaps, "budget": groups[0]["budget"], "n_wrong": groups[0]["n_wrong"], "closed": closed}
        figures.append(fig)
        gap_mean = float(np.mean(gaps))
        line = [f"**{rate:.0%} noise** ({len(done)} seeds; budget {groups[0]['budget']} reviews/round = ceil(0.5 x {groups[0]['n_wrong']} wrong labels)): "
                f"noisy-to-clean gap {mean_std(gaps, 100)} points"]
        if gap_mean < GAP_MIN:
            line.append("below the 5-point threshold, so the targets do not apply here (reported only)")
        for r, loop_key, rand_key in ((1, "loop_1", "random_1"), (rounds, "loop_R", "random_R")):
            lc, rc = _mean(closed[loop_key]), _mean(closed[rand_key])
            ratio = lc / rc if rc > 0 else float("inf") if lc > 0 else float("nan")
            loop_acc = [g["arms"][loop_key]["acc"] for g in groups]
            rand_acc = [g["arms"][rand_key]["acc"] for g in groups]
            p = float(stats.ttest_rel(loop_acc, rand_acc).pvalue) if len(groups) > 1 and np.ptp(np.subtract(loop_acc, rand_acc)) > 0 else float("nan")
            part = (f"after {r} round{'s' if r > 1 else ''}: kibble closes {_pct(lc)} of the gap, random relabelling {_pct(rc)} "
                    f"({ratio:.1f}x; paired t-test on accuracy p={p:.3g})")
            if gap_mean >= GAP_MIN:
                part += (f"; >= 80 % target: {'PASS' if lc >= CLOSE_TARGET else 'FAIL'}, >= 2x random target: "
                         f"{'PASS' if ratio >= RATIO_TARGET else 'FAIL'}")
            line.append(part)
        verdicts.append("; ".join(line) + ".")
        for r, loop_key, rand_key in ((1, "loop_1", "random_1"), (rounds, "loop_R", "random_R")):
            pairs = [(g["arms"][loop_key], g["arms"][rand_key]) for g in groups]
            worse = sum(lp["acc"] < rd["acc"] for lp, rd in pairs)
            if worse * 2 > len(pairs) and np.mean([lp["noise"] for lp, _ in pairs]) < np.mean([rd["noise"] for _, rd in pairs]):
                verdicts.append(
                    f"At {rate:.0%} noise after {r} round{'s' if r > 1 else ''}, kibble's labels are less noisy than random relabelling's "
                    f"({mean_std([lp['noise'] for lp, _ in pairs], 100)} vs {mean_std([rd['noise'] for _, rd in pairs], 100)} % wrong) "
                    f"yet train a worse network in {worse} of {len(pairs)} seeds: the number of wrong labels left does not set the damage. "
                    "Not measured here why; a likely cause is which errors are left: the loop corrects those a frozen-feature model sees "
                    "through and keeps those it finds plausible (look-alike digits, atypical images), while random relabelling leaves "
                    "uniform noise, which a network trained to memorisation tolerates better per wrong label.")
    return pd.DataFrame(rows), verdicts, figures


def round_precision(group: dict, arm: str, rounds: int) -> list[float]:
    """Queue precision of every round up to the arm's last (results of an earlier version kept the random arm's new rounds only)."""
    values = list(group["arms"][arm]["precision"])
    if arm.endswith("_R") and len(values) < rounds:
        values = group["arms"][arm.replace("_R", "_1")]["precision"] + values
    return values


def _mean(values: list[float]) -> float:
    v = np.asarray(values, dtype=float)
    return float(v[~np.isnan(v)].mean()) if (~np.isnan(v)).any() else float("nan")


def _pct(x: float) -> str:
    return "n/a (no gap)" if math.isnan(x) else f"{x:.0%}"


def notes_for(settings: Settings, args, seeds: list[int], rates: list[float], wall: float, load: tuple, results: dict, reused: bool) -> list[str]:
    rounds = settings.rounds
    group_seconds = [g["seconds"] for g in results["groups"].values()]
    compute = sum(group_seconds) + sum(results.get("clean_seconds", {}).values())
    group = next(iter(results["groups"].values()), None)
    noise0 = group["arms"]["noisy"]["noise"] if group else 0  # share of wrong train labels; n_wrong is their count
    n_train = f"{round(group['n_wrong'] / noise0):,}" if noise0 else "the"
    batch = 64 if settings.data == "digits" else 128 if settings.gpu else 32
    data = ("built-in digits (scikit-learn's 1,797 8x8 digits as 32 px PNGs; 1,438 train / 359 test, stratified, split seed 0)"
            if settings.data == "digits" else f"Imagewoof (KIBBLE_IMAGEWOOF, else the shared copy; train / val as test) at {settings.size} px")
    model = (f"timm `{settings.backbone}` from scratch at {settings.size} px (model=small, data=digits augmentation), {settings.epochs} epochs"
             if settings.data == "digits" else f"tf_efficientnet_lite0 fine-tuned from the offline ImageNet weights at {settings.size} px, {settings.epochs} epochs")
    notes = [
        f"Protocol: per noise rate and seed, the same CNN is trained ({model}, AdamW + warmup-cosine, batch {batch}) with the same training seed on "
        f"noisy labels, clean labels, and the labels after 1 and {rounds} rounds of each cleaning arm; its test accuracy on the untouched test split "
        "is reported. No early stopping and no checkpoint pick on an inner split of the (noisy) train labels: every train label is trained on and "
        "the last epoch is tested, as a training run that trusts its labels would.",
        f"Data: {data}. Noise: uniform flips (kibble.noise.uniform_flips), exactly rate x {n_train} train labels, each to a random wrong class; "
        f"seeds {', '.join(map(str, seeds))} draw the noise, the fold split, the annotator, the random picks and the training run.",
        f"kibble loop arm: the real `kibble loop` (kibble.tasks.loop.run) as the README's main job configures it (conf/experiment/demo_loop.yaml): "
        f"features mode, frozen tf_efficientnet_lite0 (offline ImageNet weights) embeddings at {settings.embed_size or 224} px, a head per fold "
        f"(cv=kfold3, {settings.head_epochs} max epochs), then the queue of the SHIPPED conf/strategy/default.yaml "
        f"({settings.strategy}; only strategy.budget set), the simulated annotator (conf/annotator/simulated.yaml, error rate 0) answering from "
        "true_label, and the merge. The HTML round report is switched off (round_callbacks.report=null).",
        "Random relabel arm: each round the same number of train samples, drawn at random among those not reviewed before, answered by the same "
        "annotator config and merged with the same policy (SimulatedAnnotator + kibble.labels.merge.merge_reviews).",
        f"Budget per round: ceil({settings.budget_share} x the wrong train labels at the start), the same count in every round and both arms "
        f"(so {rounds} rounds review {settings.budget_share * rounds:.1f}x as many samples as there are wrong labels). Gap closed = "
        "(acc_arm - acc_noisy) / (acc_clean - acc_noisy) per seed, then mean ± sample std over seeds; the ratio to random is of the means. "
        "queue precision = share of the reviewed samples whose label was wrong (mean over rounds).",
        "Targets (issue 14): where the gap is >= 5 points, cleaning closes >= 80 % of it and >= 2x what random relabelling closes at the same budget.",
        f"Run time {compute / 60:.1f} min in all ({'; '.join(f'{s / 60:.1f}' for s in group_seconds)} min per (rate, seed) group, plus "
        f"{sum(results.get('clean_seconds', {}).values()) / 60:.1f} min of clean-label runs)"
        + (f"; this invocation {wall / 60:.1f} min, the rest reused from earlier invocations of the same settings (results.json)" if reused else "")
        + "; "
        f"1-min load average {load[0]:.1f} before, {load[1]:.1f} after, on {os.cpu_count()} cores shared with other benchmarks "
        f"(torch's default threads, OMP_WAIT_POLICY=PASSIVE).",
    ]
    missing = [r for r in (0.2, 0.4) if r not in rates]
    if missing and not settings.limit_batches:
        notes.append(f"Not in this run: {', '.join(f'{r:.0%}' for r in missing)} noise (cut to fit ~40 min on this shared machine; "
                     "`--rates 0.2 0.4` adds it, reusing the finished groups kept in the work dir's results.json).")
    if settings.data == "digits" and not settings.limit_batches:
        notes.append(PILOT)
    if args.note:
        notes += args.note
    if not settings.gpu:
        notes.append("`--gpu` (accelerator=gpu, Imagewoof at 224 px: effnet-lite0 fine-tuned with conf/experiment/dogs_gpu.yaml's settings) is wired "
                     "but was not run: this machine has no GPU; its figures are to be recorded when one is available.")
    return notes

