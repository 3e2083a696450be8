"""Benchmark active learning on Imagewoof (../shared/data/imagewoof): the default strategy vs random, over pool seeds.

    python scripts/bench_active.py [--workdir workspaces/bench] [--headline margin] [--others hybrid] [--reuse] [--allow-embed]
                                   [--pool-seeds 0 1 2 3 4] [--rounds 10] [--batch 100] [--quick] [--no-record]

Protocol (docs/benchmarks.md, "Protocol (all benchmarks)"): the headline strategy is declared before the
run (`--headline`, by default the package's default active strategy, `active.strategy` in
conf/active/default.yaml); `--others` are secondary and never promoted to the headline after the fact.
For every pool seed S the Imagewoof train split is re-imported with a different labelled seed set
(`pool.seed=S`, 20 labels per class; the embeddings come from the shared feature cache, so this is
cheap), and the real `kibble loop mode=active` (experiment=active_imagewoof model=features: a linear head on
cached embeddings of the features-mode default backbone, tf_efficientnet_lite1 since 2026-11-28, trained through the package's Lightning path each round, the simulated
annotator and `merge` every round) runs each strategy and random with training seed S. Per pool seed,
each strategy is paired with random's curve of that seed: labels needed to reach random's final
accuracy (and the share of random's labels), the final accuracy gap and the gap averaged over rounds;
the section reports mean ± sample std over seeds, how many seeds reached random's accuracy, and a
paired t-test at 5 % ("tie" = the gap is within the seeds' noise). Regenerates its own section of
docs/benchmarks.md; skips without the data.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pandas as pd

from kibble.benchmarks import imagewoof_bench, record
from kibble.config import compose_config
from kibble.metrics.learning_curve import CURVE_COLUMNS, mean_curves, per_seed_savings, seed_summary

TITLE = "Active learning on Imagewoof: the default strategy vs random, over pool seeds (scripts/bench_active.py)"
MODEL = "features"  # the features-mode default (lite1); the run of 2026-11-28 04:00 (git history) was on lite0
TARGET_SHARE = 0.6  # the target: reach random's final accuracy with <= 60 % of its labels


def default_strategy() -> str:
    """The package's default active strategy: `active.strategy` of conf/active/default.yaml."""
    value = compose_config("loop", []).active.strategy
    return str(value if isinstance(value, str) else value[0])


def pm(mean: float, std: float, fmt: str = "{:.3f}") -> str:
    if mean != mean:
        return "n/a"
    return fmt.format(mean) + ("" if std != std else " ± " + fmt.replace("+", "").format(std))


def run_settings(strategies: list[str], args) -> dict:
    return {"strategies": [*strategies, "random"], "rounds": args.rounds, "batch": args.batch, "labels_per_class": args.labels_per_class,
            "model": MODEL}  # a run on another backbone is not reused


def reusable(ws: Path, strategies: list[str], args) -> tuple[pd.DataFrame, float] | None:
    """(curves, minutes) of a finished run of this pool seed with the same settings (--reuse), else None."""
    meta, path = ws / "active" / "bench_active.json", ws / "active" / "curves.csv"
    if not (meta.is_file() and path.is_file()):
        return None
    info = json.loads(meta.read_text())
    if {k: info.get(k) for k in run_settings(strategies, args)} != run_settings(strategies, args):
        return None
    curves = pd.read_csv(path)[CURVE_COLUMNS]
    if len(curves) != len(info["strategies"]) * (args.rounds + 1):
        return None
    return curves.assign(n_seed_labels=info["n_seed_labels"]), float(info["minutes"])


def missing_embeddings(overrides: list[str], model: str = MODEL) -> tuple[str, int, int]:
    """(cache key, images missing from the shared feature cache, images) for the workspace in `overrides`:
    the loop would embed the missing ones, which a benchmark sharing the cache must not start by surprise."""
    import hydra

    from kibble.data.classes import ClassList
    from kibble.data.feature_files import read_cache, stale_rows
    from kibble.data.manifest import load_manifest, resolve_image_path
    from kibble.paths import Workspace

    cfg = compose_config("loop", [*overrides, "mode=active", "experiment=active_imagewoof", f"model={model}"])
    ws = Workspace(cfg.workspace)
    key = hydra.utils.instantiate(cfg.embedder).cache_key(str(ws.read_state().get("data_root", ws.data_root)))
    rows = load_manifest(ws.manifest, ClassList.load(ws.classes).names).drop_duplicates("sample_id").reset_index(drop=True)
    cached, _, _ = read_cache(Path(cfg.paths.cache_dir) / "features" / key)
    todo, _, _ = stale_rows(cached, rows, [resolve_image_path(p, ws.data_root) for p in rows["path"]])
    return key, int(todo.sum()), len(rows)


def composed_embedder(model: str = MODEL):
    """The embedder config `kibble loop mode=active experiment=active_imagewoof model=...` composes."""
    return compose_config("loop", ["mode=active", "experiment=active_imagewoof", f"model={model}"]).embedder


def embedder_name() -> str:
    """The backbone and input size `model=MODEL` composes (the notes name what was measured)."""
    embedder = composed_embedder()
    size = embedder.get("input_size")
    return f"{embedder.backbone}" + (f" ({size} px)" if size else " (its pretrained input size)")


def run_pool_seed(bench, seed: int, strategies: list[str], args) -> tuple[pd.DataFrame, float, bool]:
    """Re-import with seed set `seed`, run `kibble loop mode=active` with training seed `seed`: (curves, minutes, reused)."""
    from kibble.tasks import import_data, loop

    ws = bench.workspace / f"pool{seed}"
    if args.reuse and (done := reusable(ws, strategies, args)) is not None:
        return (*done, True)
    start = time.perf_counter()
    common = [f"workspace={ws}", f"paths.cache_dir={bench.cache}", f"paths.effnet_lite0={bench.weights}"]
    import_data.run(compose_config("import", ["source=image_folder", f"source.root={bench.root}", "overwrite=true",
                                              f"pool.labels_per_class={args.labels_per_class}", f"pool.seed={seed}", *common]))
    key, missing, total = missing_embeddings(common)
    if missing and not args.allow_embed:
        raise SystemExit(f"the feature cache {bench.cache}/features/{key} lacks {missing} of {total} embeddings for pool seed {seed}; "
                         "the loop would embed them. Let the run that fills the shared cache finish, or pass --allow-embed")
    overrides = [*common, "mode=active", "experiment=active_imagewoof", f"model={MODEL}", "logger=none", "active.progress=false",
                 f"active.strategy=[{','.join(strategies)}]", "active.baseline=random", f"active.seeds=[{seed}]",
                 f"active.rounds={args.rounds}", f"active.batch_size={args.batch}"]
    result = loop.run(compose_config("loop", overrides))
    minutes = (time.perf_counter() - start) / 60
    curves = pd.read_csv(ws / "active" / "curves.csv")[CURVE_COLUMNS]
    info = {**run_settings(strategies, args), "n_seed_labels": result["n_seed_labels"], "minutes": round(minutes, 2)}
    (ws / "active" / "bench_active.json").write_text(json.dumps(info, indent=1))
    return curves.assign(n_seed_labels=result["n_seed_labels"]), minutes, False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("workspaces/bench"))
    parser.add_argument("--headline", default=None, help="the strategy the headline reports (default: conf/active/default.yaml)")
    parser.add_argument("--others", nargs="*", default=["hybrid"], help="secondary strategies, shown but never the headline")
    parser.add_argument("--pool-seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--labels-per-class", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="smoke test: 3 pool seeds, 2 rounds of 50, no secondary strategies, its own workspaces, no record")
    parser.add_argument("--reuse", action="store_true", help="reuse pool seeds already run with the same settings (W/imagewoof_active/poolS/active/)")
    parser.add_argument("--allow-embed", action="store_true", help="let the loop embed images missing from the shared feature cache")
    parser.add_argument("--no-record", action="store_true", help="print, do not touch docs/benchmarks.md")
    args = parser.parse_args()
    if args.quick:
        args.pool_seeds, args.rounds, args.batch, args.others, args.no_record = args.pool_seeds[:3], 2, 50, [], True
    headline = args.headline or default_strategy()
    if headline == "random":
        raise SystemExit("--headline random: random is the baseline; name a strategy to compare with it")
    if len(args.pool_seeds) < 3 and not args.quick:
        print(f"warning: {len(args.pool_seeds)} pool seeds; the protocol asks for at least 3")
    strategies = list(dict.fromkeys([headline, *[s for s in args.others if s != "random"]]))
    print(f"headline (declared before the run): {headline}; secondary: {strategies[1:] or 'none'}; pool seeds {args.pool_seeds}")

    bench = imagewoof_bench(args.workdir, "imagewoof_active_quick" if args.quick else "imagewoof_active")
    if bench is None:
        return
    load_start, start = os.getloadavg()[0], time.perf_counter()
    parts, per_seed_minutes, reused = [], [], []
    for seed in args.pool_seeds:
        curves, seed_minutes, was_reused = run_pool_seed(bench, seed, strategies, args)
        parts.append(curves)
        per_seed_minutes.append(seed_minutes)
        reused += [seed] if was_reused else []
        print(f"pool seed {seed}: {seed_minutes:.1f} min" + (" (reused)" if was_reused else ""))
    minutes, load_end = (time.perf_counter() - start) / 60, os.getloadavg()[0]

    curves = pd.concat(parts, ignore_index=True)
    per_seed = per_seed_savings(curves[CURVE_COLUMNS])
    summary = seed_summary(per_seed).set_index("strategy")
    bench.workspace.mkdir(parents=True, exist_ok=True)
    curves.to_csv(bench.workspace / "curves_all_pool_seeds.csv", index=False)
    per_seed.to_csv(bench.workspace / "per_seed.csv", index=False)

    order = [*strategies, "random"]
    role = {s: ("headline (declared)" if s == headline else "random" if s == "random" else "secondary") for s in order}
    rows = []
    for s in order:
        r = summary.loc[s]
        rows.append({
            "strategy": s, "role": role[s], "seeds": int(r["n_seeds"]), "reached": f"{int(r['n_reached'])}/{int(r['n_seeds'])}",
            "labels to reach random's final": pm(r["labels_to_reach_random_final_mean"], r["labels_to_reach_random_final_std"], "{:.0f}"),
            "share of random's labels": pm(r["share_of_random_labels_mean"], r["share_of_random_labels_std"], "{:.2f}"),
            "final accuracy": pm(r["final_accuracy_mean"], r["final_accuracy_std"], "{:.4f}"),
            "final gap vs random (points)": "" if s == "random" else pm(100 * r["accuracy_gap_mean"], 100 * r["accuracy_gap_std"], "{:+.2f}"),
            "final gap p / verdict": "" if s == "random" else f"{r['accuracy_gap_p']:.3f} / {r['accuracy_gap_verdict']}",
            "mean gap over rounds (points)": "" if s == "random" else pm(100 * r["mean_accuracy_gap_mean"], 100 * r["mean_accuracy_gap_std"], "{:+.2f}"),
            "mean gap p / verdict": "" if s == "random" else f"{r['mean_accuracy_gap_p']:.3f} / {r['mean_accuracy_gap_verdict']}",
        })
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))

    h, rnd = summary.loc[headline], summary.loc["random"]
    n = int(h["n_seeds"])
    mine = per_seed[per_seed["strategy"] == headline].set_index("seed")
    each = ", ".join(f"{seed}: {'never' if not mine.loc[seed, 'reached'] else format(mine.loc[seed, 'share_of_random_labels'], '.0%')}"
                     f" ({100 * mine.loc[seed, 'accuracy_gap']:+.1f} pt)" for seed in mine.index)
    reached_all = int(h["n_reached"]) == n
    share_ok = reached_all and (mine["share_of_random_labels"] <= TARGET_SHARE).all()
    gap_tie = h["accuracy_gap_verdict"] == "tie"
    mean = mean_curves(curves[CURVE_COLUMNS])
    marks = sorted(mean["n_labels"].unique())
    marks = [marks[0], marks[len(marks) // 2], marks[-1]]
    curve_line = "; ".join(
        f"{s}: " + " / ".join(f"{mean[(mean['strategy'] == s) & (mean['n_labels'] == m)]['accuracy'].iloc[0]:.4f}" for m in marks)
        for s in order)
    start_acc = float(mean[mean["n_labels"] == marks[0]]["accuracy"].mean())
    room = 100 * (float(summary["final_accuracy_mean"].max()) - float(rnd["final_accuracy_mean"]))
    headline_line = (
        f"Headline, {headline} (declared before the run: the package's default active strategy, `active.strategy` in "
        f"conf/active/default.yaml): reaches random's final accuracy in {int(h['n_reached'])}/{n} pool seeds, with "
        f"{pm(h['share_of_random_labels_mean'], h['share_of_random_labels_std'], '{:.0%}')} of random's labels "
        f"({pm(h['labels_to_reach_random_final_mean'], h['labels_to_reach_random_final_std'], '{:.0f}')} of "
        f"{int(mine['final_labels'].iloc[0])}; mean ± sample std over the seeds that reached it). Final accuracy "
        f"{pm(h['final_accuracy_mean'], h['final_accuracy_std'], '{:.4f}')} vs random's {pm(rnd['final_accuracy_mean'], rnd['final_accuracy_std'], '{:.4f}')}: "
        f"gap {pm(100 * h['accuracy_gap_mean'], 100 * h['accuracy_gap_std'], '{:+.2f}')} points, paired t-test p={h['accuracy_gap_p']:.3f} "
        + ("-- within the seeds' noise (tie)." if gap_tie else f"({h['accuracy_gap_verdict']} than random at 5 %).")
        + f" Averaged over rounds 1-{args.rounds} the gap is {pm(100 * h['mean_accuracy_gap_mean'], 100 * h['mean_accuracy_gap_std'], '{:+.2f}')} "
        f"points (p={h['mean_accuracy_gap_p']:.3f}, {h['mean_accuracy_gap_verdict']}). Target (<= {TARGET_SHARE:.0%} of random's labels in every seed): "
        + ("PASS." if share_ok else "FAIL.")
    )
    embedder = embedder_name()
    notes = [
        headline_line,
        f"Per pool seed ({headline}: share of random's labels, final gap): {each}.",
        f"Secondary strategies ({', '.join(strategies[1:]) or 'none'}) are shown for context, not as a pick: choosing the best of "
        "them after seeing this table would be an oracle on the split they are scored on.",
        f"Protocol: pool seeds {args.pool_seeds}; each re-imports Imagewoof's train split with a different labelled seed set "
        f"({args.labels_per_class}/class = {int(curves['n_seed_labels'].iloc[0])} labels, `pool.seed=S`) and runs "
        f"`kibble loop mode=active experiment=active_imagewoof model={MODEL}` with training seed S for every arm, {args.batch} new labels/round, "
        f"{args.rounds} rounds; a linear FeatureClassifier head on cached {embedder} embeddings, trained with Lightning "
        "for a fixed 20 epochs each round; accuracy on Imagewoof's val split. Each strategy is paired with random's curve of the "
        "same pool seed; labels to reach random's final accuracy are interpolated linearly between rounds (`reached` counts the "
        "seeds where the curve got there; the share's mean ± std is over those). Gaps: paired t-test over seeds at 5 %, "
        "otherwise \"tie\" (kibble.metrics.learning_curve.per_seed_savings / seed_summary).",
        f"Noise floor: random itself first touches its own final accuracy at {pm(rnd['share_of_random_labels_mean'], rnd['share_of_random_labels_std'], '{:.0%}')} "
        "of its labels (its curve is noisy on its plateau), so a share near that is not all due to selection.",
        f"Mean accuracy at {' / '.join(str(int(m)) for m in marks)} labels: {curve_line}.",
        f"Caveats: the curves are flat -- frozen {embedder} features already give {start_acc:.3f} at {int(marks[0])} labels and random "
        f"ends at {rnd['final_accuracy_mean']:.3f}, so the whole room between strategies is about {room:.1f} accuracy point(s), and a label "
        "count \"saved\" is read off a nearly horizontal curve. About "
        "96 % of Imagewoof's images are ImageNet-train images the backbone was trained on, so these embeddings are unusually good "
        "for them; expect smaller accuracies and different savings on images the backbone never saw.",
        f"Wall time {sum(per_seed_minutes):.1f} min ({', '.join(f'{m:.1f}' for m in per_seed_minutes)} per pool seed"
        + (f"; pool seeds {reused} reused from an earlier run of the same settings (--reuse), this run {minutes:.1f} min" if reused else "")
        + "); 1-min load average "
        f"{load_start:.1f} at the start, {load_end:.1f} at the end, on {os.cpu_count()} cores"
        + (" (a shared machine: other jobs ran at the same time)." if max(load_start, load_end) > 0.75 * (os.cpu_count() or 1) else "."),
    ]
    print("\n".join(notes))
    if not args.no_record:
        record(TITLE, table, notes)


if __name__ == "__main__":
    main()
