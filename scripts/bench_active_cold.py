"""Active learning from zero labels on Imagewoof: eight strategies at 1, 2, 5, 10 and 20 labels per class.

    python scripts/bench_active_cold.py [--workdir workspaces/bench] [--seeds 0 1 2] [--phase dev|test|both] [--reuse] [--quick] [--no-record]

Protocol, fixed before the run (docs/benchmarks.md, "Protocol (all benchmarks)"):
- Strategies, with their package defaults: random (the baseline), margin, bald, hybrid, typiclust,
  probcover, atl_uncertainty, atl_representative. The headline is `typiclust` (declared here, from the
  literature: TypiClust is the published cold-start method); the others are secondary and never promoted
  to the headline after the run.
- Imagewoof's train split is imported with zero labels (`pool.labels_per_class=0`: all 9,025 train
  images are the pool, their folder labels the simulated annotator's truth). The real
  `kibble loop mode=active experiment=active_imagewoof` (a linear head on cached embeddings of the
  features-mode default backbone, tf_efficientnet_lite1 since 2026-11-28, trained with Lightning for 20 epochs each round; accuracy on Imagewoof's val split) runs
  rounds of `active.batch_size=[10,10,30,50,100]`: 10, 20, 50, 100 and 200 labels, i.e. 1, 2, 5, 10
  and 20 labels per class.
- Round 0 has no model: the model-free strategies (typiclust, probcover, atl_representative, random)
  pick it themselves, the others at random (`active.cold_start=random`, the usual protocol of the
  cold-start papers: uncertainty sampling starts from a random batch).
- atl_uncertainty learns where the model errs from labelled images it did not train on, so its loop
  holds out 20 % of its labels each round (`data.inner_val_fraction=0.2`) and runs as its own loop
  (with its own random arm, not reported); its label counts include the held-out ones.
- Seeds: every arm runs with each training seed (`active.seeds`), which also drives the strategies'
  random streams; the zero-label pool is the same for all seeds. Each strategy is paired with random's
  curve of the same seed: accuracy gaps with a paired t-test at 5 % ("tie" within the seeds' noise), and
  the labels needed to reach random's accuracy at 10 and at 20 labels per class (linear between points).
- Targets (issue 16): at 1 and 2 labels per class the headline beats random by >= 10 accuracy points;
  it reaches random's 20-labels-per-class accuracy with <= 0.5x random's labels.
- Dev phase (`--phase dev`, before the test run): on dev seeds 100-102 (other training and strategy
  seeds than the test's) and a dev workspace whose accuracy is measured on 20 % of the train images
  (held out of its pool, stratified), never on the val split the test phase reports, typiclust and the switches typiclust:margin@N (typiclust below N labels per
  class, margin from there) for N in 2, 5, 10 run beside random; the one whose worst dev seed needs the
  smallest share of random's labels to reach random's 20-labels-per-class accuracy (never = worst) is
  written to conf/active/cold.yaml (`active=cold`). The test phase's headline is what that file holds;
  typiclust, the headline before the dev phase existed, stays as a secondary arm.
Regenerates its own section of docs/benchmarks.md; skips without the data.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench_active import composed_embedder, missing_embeddings, pm
from kibble.benchmarks import imagewoof_bench, record
from kibble.config import compose_config
from kibble.metrics.learning_curve import CURVE_COLUMNS, budget_comparison, paired_p

TITLE = "Active learning from zero labels on Imagewoof: 1 to 20 labels per class, eight strategies (scripts/bench_active_cold.py)"
DEV_TEST_SHARE = 0.2  # of the train images: the dev phase's accuracy is measured on these, never on the val split the test phase reports
SCHEDULE = [10, 10, 30, 50, 100]  # new labels per round: 10, 20, 50, 100, 200 in all
HEADLINE = "typiclust"  # the literature's cold-start method: the headline until a dev phase writes conf/active/cold.yaml
DEV_SEEDS = [100, 101, 102]
DEV_CANDIDATES = ["typiclust", "typiclust:margin@2", "typiclust:margin@5", "typiclust:margin@10"]
COLD_YAML = Path(__file__).resolve().parents[1] / "conf" / "active" / "cold.yaml"
SHARED_LOOP = ["typiclust", "probcover", "margin", "bald", "hybrid", "atl_representative"]
HELD_OUT_LOOP = ["atl_uncertainty"]  # needs data.inner_val_fraction > 0: its own loop
COLD_GAIN_POINTS, SHARE_TARGET = 10.0, 0.5
N_CLASSES = 10  # Imagewoof's breeds: a budget of B labels is B / 10 per class


class FallbackCount(logging.Handler):
    """Counts atl_uncertainty's rounds that fell back to its uncertainty score (too few held-out errors to learn from)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "instead" in record.getMessage()


def per_class(labels: int) -> str:
    return f"{labels / N_CLASSES:g}/class"


MODEL = "features"  # the features-mode default (lite1); the run of 2026-11-28 11:50 (git history) was on lite0


def backbone() -> str:
    """The embedder `model=MODEL` composes (the notes name what was measured)."""
    return str(composed_embedder(MODEL).backbone)


def loop_overrides(bench, ws: Path, strategies: list[str], seeds: list[int], schedule: list[int], extra: list[str]) -> list[str]:
    return [f"workspace={ws}", f"paths.cache_dir={bench.cache}", f"paths.effnet_lite0={bench.weights}", "mode=active",
            "experiment=active_imagewoof", f"model={MODEL}", "logger=none", "active.progress=false", f"active.strategy=[{','.join(strategies)}]",
            "active.baseline=random", "active.cold_start=random", f"active.seeds=[{','.join(map(str, seeds))}]",
            f"active.batch_size=[{','.join(map(str, schedule))}]", *extra]


def run_loop(bench, ws: Path, strategies: list[str], args, extra: list[str]) -> tuple[pd.DataFrame, float]:
    """One `kibble loop mode=active` over `strategies` (+ random) in workspace `ws`: (curves, minutes); reused with --reuse
    (then `args.reused` is set, and the minutes are the earlier run's)."""
    from kibble.tasks import loop

    meta, path = ws / "active" / "bench_active_cold.json", ws / "active" / "curves.csv"
    settings = {"strategies": strategies, "seeds": args.seeds, "schedule": args.schedule, "extra": extra}
    if args.reuse and meta.is_file() and path.is_file() and json.loads(meta.read_text())["settings"] == settings:
        args.reused = True
        return pd.read_csv(path), float(json.loads(meta.read_text())["minutes"])
    start = time.perf_counter()
    loop.run(compose_config("loop", loop_overrides(bench, ws, strategies, args.seeds, args.schedule, extra)))
    minutes = (time.perf_counter() - start) / 60
    meta.write_text(json.dumps({"settings": settings, "minutes": round(minutes, 2)}, indent=1))
    return pd.read_csv(path), minutes


def zero_label_workspace(bench, name: str, allow_embed: bool) -> Path:
    """Imagewoof imported with every train image in the pool (no labels)."""
    from kibble.tasks import import_data

    ws = bench.workspace / name
    common = [f"workspace={ws}", f"paths.cache_dir={bench.cache}", f"paths.effnet_lite0={bench.weights}"]
    import_data.run(compose_config("import", ["source=image_folder", f"source.root={bench.root}", "overwrite=true",
                                              "pool.labels_per_class=0", *common]))
    key, missing, total = missing_embeddings(common, MODEL)
    if missing and not allow_embed:
        raise SystemExit(f"the feature cache {bench.cache}/features/{key} lacks {missing} of {total} embeddings; the loop would embed "
                         "them. Let the run that fills the shared cache finish, or pass --allow-embed")
    return ws


def summary_table(curves: pd.DataFrame, order: list[str], budgets: list[int], match: list[int],
                  headline: str = HEADLINE, dev_chosen: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per strategy: accuracy per budget, gaps at the two smallest budgets, labels to reach random; per-seed rows)."""
    per_seed = budget_comparison(curves[CURVE_COLUMNS], budgets=budgets, match_at=match)
    rows = []
    for name in order:
        part = per_seed[per_seed["strategy"] == name]
        role = ("headline (dev-chosen)" if dev_chosen else "headline (declared)") if name == headline else "secondary"
        row = {"strategy": name, "role": "baseline" if name == "random" else role}
        for b in budgets:
            row[per_class(b)] = pm(part[f"acc@{b}"].mean(), part[f"acc@{b}"].std(ddof=1))
        for b in budgets[:2]:
            gaps = 100 * part[f"gap@{b}"].to_numpy(float)
            p = paired_p(gaps)
            row[f"gap @{per_class(b)} (pt), p"] = "" if name == "random" else f"{pm(gaps.mean(), gaps.std(ddof=1), '{:+.1f}')}, p={p:.3f}"
        for m in match:
            reached = part[f"need@{m}"].dropna()
            row[f"labels to reach random @{per_class(m)} ({m})"] = (
                f"{pm(reached.mean(), reached.std(ddof=1), '{:.0f}')} ({len(reached)}/{len(part)})" if len(reached) else f"never (0/{len(part)})")
        rows.append(row)
    return pd.DataFrame(rows), per_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("workspaces/bench"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--schedule", nargs="+", type=int, default=SCHEDULE, help="new labels per round (default: 1, 2, 5, 10, 20 per class)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 seeds, rounds of 10 and 10, typiclust and margin only, its own workspaces, no record")
    parser.add_argument("--reuse", action="store_true", help="reuse a loop already run with the same settings")
    parser.add_argument("--allow-embed", action="store_true", help="let the loop embed images missing from the shared feature cache")
    parser.add_argument("--no-record", action="store_true", help="print, do not touch docs/benchmarks.md")
    parser.add_argument("--phase", choices=["dev", "test", "both"], default="both",
                        help="dev: choose the headline on dev seeds and write conf/active/cold.yaml; test: the seeds' run; both: dev, then test")
    args = parser.parse_args()
    args.reused = False
    shared, held_out, candidates = SHARED_LOOP, HELD_OUT_LOOP, DEV_CANDIDATES
    if args.quick:
        args.seeds, args.schedule, args.no_record, shared, held_out = args.seeds[:2], [10, 10], True, ["typiclust", "margin"], []
        candidates = ["typiclust", "typiclust:margin@1"]
    if len(args.seeds) < 3 and not args.quick:
        print(f"warning: {len(args.seeds)} seeds; the protocol asks for at least 3")
    bench = imagewoof_bench(args.workdir, "imagewoof_active_cold_quick" if args.quick else "imagewoof_active_cold")
    if bench is None:
        return
    load_start, start = os.getloadavg()[0], time.perf_counter()
    ws = zero_label_workspace(bench, "zero", args.allow_embed)
    budgets = [int(b) for b in np.cumsum(args.schedule)]
    match = [b for b in budgets if b in (10 * N_CLASSES, 20 * N_CLASSES)] or budgets[-1:]
    board_path = bench.workspace / "dev_board.csv"
    if args.phase in ("dev", "both"):
        choice, board = dev_phase(bench, ws, candidates, args, budgets, match)
        board.to_csv(board_path, index=False)
        if not args.quick:
            write_cold_yaml(choice, board)
        print(f"dev phase: {choice} ({COLD_YAML if not args.quick else 'quick: not written'})\n{board.to_string(index=False)}")
        if args.phase == "dev":
            return
    headline = declared_headline() if not args.quick else "typiclust:margin@1"
    if headline not in shared:
        shared = [headline, *shared]
    print(f"headline (declared before the run): {headline}; schedule {args.schedule}; seeds {args.seeds}")
    fallbacks = FallbackCount()
    logging.getLogger("kibble.strategies.transfer").addHandler(fallbacks)
    parts, minutes = [], []
    if held_out:  # a copy of the zero-label workspace for the loop that holds labels out
        ws_held = bench.workspace / "zero_held_out"
        if not (args.reuse and (ws_held / "active").is_dir()):
            shutil.rmtree(ws_held, ignore_errors=True)
            shutil.copytree(ws, ws_held, ignore=shutil.ignore_patterns("active", "rounds", "runs"))
        curves, m = run_loop(bench, ws_held, held_out, args, ["data.inner_val_fraction=0.2"])
        parts.append(curves[curves["strategy"] != "random"])
        minutes.append(m)
        print(f"{held_out} loop: {m:.1f} min")
    curves, m = run_loop(bench, ws, shared, args, [])
    parts.insert(0, curves)
    minutes.insert(0, m)
    print(f"{shared} + random loop: {m:.1f} min")
    load_end = os.getloadavg()[0]
    curves = pd.concat(parts, ignore_index=True)
    bench.workspace.mkdir(parents=True, exist_ok=True)
    curves.to_csv(bench.workspace / "curves_all.csv", index=False)

    order = [*shared, *held_out, "random"]
    dev_chosen = COLD_YAML.is_file() and not args.quick
    table, per_seed = summary_table(curves, order, budgets, match, headline, dev_chosen)
    per_seed.to_csv(bench.workspace / "per_seed.csv", index=False)
    print(table.to_string(index=False))
    dev = dev_notes(pd.read_csv(board_path), headline) if board_path.is_file() and dev_chosen else []
    notes = headline_notes(per_seed, budgets, match, headline) + dev + protocol_notes(args, fallbacks.count, minutes, load_start, load_end, time.perf_counter() - start)
    print("\n".join(notes))
    if not args.no_record:
        record(TITLE, table, notes)


def dev_phase(bench, ws: Path, candidates: list[str], args, budgets: list[int], match: list[int]) -> tuple[str, pd.DataFrame]:
    """The candidates and random on the dev seeds, in a copy of the zero-label workspace: (choice, board)."""
    ws_dev = bench.workspace / "zero_dev"
    if not (args.reuse and (ws_dev / "active").is_dir()):
        shutil.rmtree(ws_dev, ignore_errors=True)
        shutil.copytree(ws, ws_dev, ignore=shutil.ignore_patterns("active", "rounds", "runs"))
        carve_dev_test(ws_dev)
    dev_args = argparse.Namespace(**{**vars(args), "seeds": DEV_SEEDS[: len(args.seeds)] if args.quick else DEV_SEEDS, "reused": False})
    curves, minutes = run_loop(bench, ws_dev, candidates, dev_args, [])
    print(f"dev loop ({candidates} + random, seeds {dev_args.seeds}): {minutes:.1f} min")
    per_seed = budget_comparison(curves[CURVE_COLUMNS], budgets=budgets, match_at=match)
    return choose_on_dev(per_seed, candidates, match[-1])


def carve_dev_test(ws: Path) -> int:
    """The dev workspace measures accuracy on DEV_TEST_SHARE of the pool (stratified by the truth, seed 0), labelled and
    moved to split test: the loop reads test before val, so the dev phase never scores on the split the test phase
    reports (Imagewoof's val; a workspace's own test rows become val first)."""
    from sklearn.model_selection import train_test_split

    from kibble.data.manifest import load_manifest, save_manifest
    from kibble.paths import Workspace

    w = Workspace(ws)
    manifest = load_manifest(w.manifest)
    manifest.loc[manifest["split"] == "test", "split"] = "val"
    pool = manifest.index[manifest["split"] == "pool"]
    _, held = train_test_split(pool, test_size=DEV_TEST_SHARE, random_state=0, stratify=manifest.loc[pool, "true_label"].to_numpy(dtype=object))
    manifest.loc[held, "split"] = "test"
    manifest.loc[held, "label"] = manifest.loc[held, "true_label"]
    save_manifest(manifest, w.manifest)
    return len(held)


def dev_notes(board: pd.DataFrame, headline: str) -> list[str]:
    rows = "; ".join(f"{r['strategy']}: worst {r['worst share']:.2f}x, mean {r['mean share']:.2f}x (per seed {r['per seed']})" for _, r in board.iterrows())
    stale = "" if board.loc[0, "strategy"] == headline else f" (the board's first, {board.loc[0, 'strategy']}, differs: a later dev run not yet written?)"
    return [f"Dev phase (before this run; seeds {DEV_SEEDS}, other training and strategy seeds than the test's; accuracy on "
            f"{DEV_TEST_SHARE:.0%} of the train images held out of the dev pool, not on the val split reported here): share of random's labels "
            f"to reach random's 20-labels-per-class accuracy, best worst seed first: {rows}. "
            f"Chosen: {headline} (conf/active/cold.yaml){stale}, this run's headline"
            + ("; typiclust, the headline before the dev phase, is secondary here." if headline != HEADLINE else ".")]


def choose_on_dev(per_seed: pd.DataFrame, candidates: list[str], last: int) -> tuple[str, pd.DataFrame]:
    """The candidate whose worst dev seed needs the smallest share of random's labels to reach random's accuracy at
    `last` labels (a seed that never gets there counts as infinitely many); ties: the smaller mean share."""
    rows = []
    for name in candidates:
        share = per_seed.loc[per_seed["strategy"] == name, f"need@{last}"].to_numpy(float) / last
        share = np.where(np.isnan(share), np.inf, share)
        rows.append({"strategy": name, "worst share": float(share.max()), "mean share": float(share.mean()),
                     "per seed": ", ".join("never" if not np.isfinite(v) else f"{v:.2f}" for v in share)})
    board = pd.DataFrame(rows).sort_values(["worst share", "mean share"], kind="stable").reset_index(drop=True)
    return str(board.loc[0, "strategy"]), board


def write_cold_yaml(choice: str, board: pd.DataFrame) -> None:
    """conf/active/cold.yaml: the default active config with the dev-chosen cold-start strategy (`active=cold`)."""
    from datetime import datetime, timezone

    from kibble.io import atomic_write_text

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    worst = board.set_index("strategy").loc[choice, "worst share"]
    atomic_write_text(COLD_YAML, 
        f"# Cold start from zero or few labels, chosen on dev seeds {DEV_SEEDS} by scripts/bench_active_cold.py --phase dev ({stamp}):\n"
        f"# of {DEV_CANDIDATES}, the one whose worst dev seed reached random's 20-labels-per-class accuracy with the smallest\n"
        f"# share of random's labels ({worst:.2f}x). docs/benchmarks.md. Use: kibble loop mode=active model=features active=cold;\n"
        "# an experiment that sets active.strategy (active_imagewoof does) overrides it: pass active.strategy=... there\n"
        "defaults:\n  - default\n  - _self_\n"
        f"strategy: {choice}\n")


def declared_headline() -> str:
    """The test phase's headline: conf/active/cold.yaml's strategy once a dev phase wrote it, else typiclust."""
    if not COLD_YAML.is_file():
        return HEADLINE
    import yaml

    return str(yaml.safe_load(COLD_YAML.read_text())["strategy"])


def headline_notes(per_seed: pd.DataFrame, budgets: list[int], match: list[int], headline: str = HEADLINE) -> list[str]:
    """The headline against the two targets, per seed too; then what the secondary strategies show."""
    h, n = per_seed[per_seed["strategy"] == headline].set_index("seed"), per_seed["seed"].nunique()
    lines = []
    for b in budgets[:2]:
        gaps = 100 * h[f"gap@{b}"]
        ok = gaps.mean() >= COLD_GAIN_POINTS
        lines.append(f"Headline {headline} at {b} labels ({per_class(b)}): {pm(gaps.mean(), gaps.std(ddof=1), '{:+.1f}')} points over random "
                     f"(per seed {', '.join(f'{g:+.1f}' for g in gaps)}; paired t-test p={paired_p(gaps.to_numpy(float)):.3f}). "
                     f"Target >= +{COLD_GAIN_POINTS:.0f} points: {'PASS' if ok else 'FAIL'}.")
    last = match[-1]
    need = h[f"need@{last}"]
    share = need / last
    ok = bool(need.notna().all() and (share <= SHARE_TARGET).all())
    lines.append(f"Headline {headline} reaches random's accuracy at {last} labels with {pm(need.mean(), need.std(ddof=1), '{:.0f}')} labels "
                 f"({need.notna().sum()}/{n} seeds reached it; per seed {', '.join('never' if v != v else f'{v:.0f}' for v in need)}), "
                 f"{pm(share.mean(), share.std(ddof=1), '{:.2f}')}x random's. Target <= {SHARE_TARGET}x in every seed: {'PASS' if ok else 'FAIL'}.")
    if len(budgets) >= 2:  # how flat the curves are where that count is read off
        a, b = budgets[-2], budgets[-1]
        rise = {name: 100 * per_seed.loc[per_seed["strategy"] == name, f"acc@{b}"].mean() - 100 * per_seed.loc[per_seed["strategy"] == name, f"acc@{a}"].mean()
                for name in (headline, "random")}
        lines.append(f"From {a} to {b} labels the headline's mean accuracy rises {rise[headline]:.1f} points and random's {rise['random']:.1f}: "
                     "the labels needed to reach random's last accuracy are read off a nearly flat stretch of curve, hence their spread.")
    return lines


def protocol_notes(args, fallbacks: int, minutes: list[float], load_start: float, load_end: float, seconds: float) -> list[str]:
    return [
        "Secondary strategies are context, not a pick: choosing the best of them after seeing this table would be an oracle on the "
        "split they are scored on.",
        f"Protocol: Imagewoof imported with zero labels (all train images in the pool); `kibble loop mode=active experiment=active_imagewoof` "
        f"with `active.batch_size=[{','.join(map(str, args.schedule))}]`, `active.cold_start=random` (round 0 of margin, bald and hybrid; "
        "atl_uncertainty too) and training seeds "
        f"{args.seeds}; a linear head on cached {backbone()} embeddings (model={MODEL}, the default), 20 epochs per round; accuracy on Imagewoof's val "
        "split (3,929 images). Cells: mean ± sample std over seeds; gaps paired with random's curve of the same seed; "
        "labels to reach random's accuracy interpolated linearly between budgets, over the seeds that reached it (n/seeds). "
        "atl_uncertainty ran in its own loop holding out 20 % of its labels (data.inner_val_fraction=0.2); with fewer than 5 "
        f"held-out errors (or correct items) it falls back to margin, its documented fallback: {fallbacks} of its "
        f"{(len(args.schedule) - 1) * len(args.seeds)} model rounds did (not counted when the loop was reused).",
        "Caveats: about 96 % of Imagewoof's images are ImageNet-train images the backbone was trained on, so 1-2 labels per class "
        "already go far on these embeddings; the 20-epoch head sees 1 batch per epoch at 10 labels.",
        f"Wall time of the loops {sum(minutes):.1f} min ({', '.join(f'{m:.1f}' for m in minutes)})"
        + (f", reused from an earlier run of the same settings (--reuse; this run {seconds / 60:.1f} min)" if args.reused else "")
        + f"; 1-min load average {load_start:.1f} at the start, {load_end:.1f} at the end, on {os.cpu_count()} cores.",
    ]


if __name__ == "__main__":
    main()
