"""Benchmark `kibble monitor`'s drift verdict on Imagewoof under a dev/test protocol (offline effnet-lite0).

    python scripts/bench_drift.py [--workdir workspaces/bench] [--seed 0] [--quick]

Protocol (the numbers a skeptic can check):
- The pool: all Imagewoof images (train + val), split by `--seed` into a dev half and a test half.
  Not val alone: half of val (~1,960 images) cannot hold a 2,000-image reference plus a batch.
  The model is a scikit-learn LogisticRegression on the frozen effnet-lite0 embeddings (model=features_lite0), cross-fitted:
  each half's probabilities come from a head trained on the other half, so every image is scored
  out of sample (a head trained on some of the pool would make its own train images look different).
- Per trial a random reference of R images (R = 200, 500, 1,000, 2,000) and a current batch of 200,
  drawn from one half only: i.i.d. (random images, the false-alarm rate), prior (one breed 5x as
  frequent as each other), brightness/contrast and blur (a fixed subset of the half corrupted with
  albumentations on the image, then embedded by the backbone; never in the reference).
- Dev: every candidate projection (components fitted on reference + current pooled, 16-128
  components; the old reference-only fit with 64) is run; the admissible ones keep the false-alarm
  rate <= alpha at every R; of those, the best worst-case detection rate (over drift kinds, mean over
  R) wins. Test: the chosen candidate and the old default (the baseline), on the same draws, many
  more trials; false-alarm rate with a Clopper-Pearson 95 % interval, detection rate per kind.
Writes only its own section of docs/benchmarks.md (replaced, not appended); `--quick` records nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd

SCENARIOS = ("iid", "prior", "brightness_contrast", "blur")
DRIFTS = SCENARIOS[1:]
BASELINE = "reference-fit 64"  # what kibble shipped before this benchmark: components of the reference alone
CANDIDATES = {BASELINE: ("reference", 64), "pooled 16": ("pooled", 16), "pooled 32": ("pooled", 32),
              "pooled 64": ("pooled", 64), "pooled 128": ("pooled", 128)}
TITLE = "Drift monitoring (Imagewoof, effnet-lite0 embeddings, sklearn-LR head, dev/test protocol)"
OLD_TITLE = "Drift monitoring (Imagewoof val, effnet-lite0 embeddings, sklearn-LR head)"  # before the protocol


# ---- protocol helpers: pure functions (tests/scripts/test_bench_drift.py) ----

def split_halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(dev, test) row indices: a seeded random half each (dev gets the smaller half when n is odd), sorted."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2:])


def binomial_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson (exact) interval for a rate of k events in n trials."""
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def promise(k: int, n: int, alpha: float) -> str:
    """The false-alarm promise (rate <= alpha) against k alarms in n i.i.d. trials."""
    low, high = binomial_ci(k, n)
    if high <= alpha:
        return "holds"  # even the upper bound is within alpha
    return "broken" if low > alpha else "not contradicted"


def summarise(trials: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """One row per (arm, reference size, scenario): trials, alarms, rate, its 95 % interval and, for i.i.d., the promise."""
    rows = []
    for (arm, ref, scenario), g in trials.groupby(["arm", "reference", "scenario"], sort=False):
        k, n = int(g["drift"].sum()), len(g)
        low, high = binomial_ci(k, n)
        rows.append({"arm": arm, "reference": int(ref), "scenario": scenario, "trials": n, "alarms": k, "rate": k / n,
                     "ci_low": low, "ci_high": high, "promise": promise(k, n, alpha) if scenario == "iid" else "-"})
    return pd.DataFrame(rows)


def choose(summary: pd.DataFrame, alpha: float) -> tuple[str, pd.DataFrame]:
    """(chosen arm, scoreboard) from DEV results: admissible = i.i.d. alarm rate <= alpha at every reference size;
    then the best worst-case (over drift kinds) detection rate averaged over sizes; ties: better mean, then listing order.
    With no admissible arm the lowest worst false-alarm rate wins (and the board says so)."""
    arms = list(dict.fromkeys(summary["arm"]))
    iid = summary[summary["scenario"] == "iid"].groupby("arm")["rate"].max()
    power = summary[summary["scenario"] != "iid"].groupby(["arm", "scenario"])["rate"].mean().unstack()
    board = pd.DataFrame({"worst false alarm": iid.reindex(arms), "worst power": power.min(axis=1).reindex(arms),
                          "mean power": power.mean(axis=1).reindex(arms), "order": range(len(arms))}, index=arms)
    board["admissible"] = board["worst false alarm"] <= alpha
    keys = (["admissible", "worst power", "mean power", "order"], [False, False, False, True])
    if not board["admissible"].any():
        keys = (["worst false alarm", "order"], [True, True])
    board = board.sort_values(keys[0], ascending=keys[1]).drop(columns="order")
    return str(board.index[0]), board


def draw_current(scenario: str, n: int, pool: np.ndarray, labels: np.ndarray, corrupt_rows: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Rows of one current batch: from `pool` (i.i.d., prior) or positions in the corrupted subset; and the achieved
    breed ratio for prior (nan otherwise)."""
    if scenario in ("brightness_contrast", "blur"):
        return rng.choice(len(corrupt_rows), n, replace=False), float("nan")
    if scenario == "iid":
        return rng.choice(pool, n, replace=False), float("nan")
    classes = np.unique(labels)
    breed = rng.choice(classes)
    in_breed, others = pool[labels[pool] == breed], pool[labels[pool] != breed]
    take = min(int(round(n * 5 / (5 + len(classes) - 1))), len(in_breed))
    rows = np.r_[rng.choice(in_breed, take, replace=False), rng.choice(others, n - take, replace=False)]
    return rows, (take / n) / ((n - take) / n / (len(classes) - 1))


# ---- data: embeddings, corrupted embeddings, cross-fitted head ----

def corruptions():
    import albumentations as A

    return {
        "brightness_contrast": A.RandomBrightnessContrast(brightness_limit=(0.35, 0.35), contrast_limit=(-0.35, -0.35), p=1.0),
        "blur": A.GaussianBlur(blur_limit=(0, 0), sigma_limit=(3.0, 3.0), p=1.0),
    }


def embed_corrupted(embedder, rows: pd.DataFrame, data_root: Path, corruption, cache: Path) -> np.ndarray:
    """Corrupt each image (albumentations, full resolution), then embed it with the frozen backbone; cached by ids."""
    if cache.is_file():
        return np.load(cache)
    import torch
    from rich.progress import track
    from torch.utils.data import DataLoader

    from kibble.data.dataset import ManifestDataset
    from kibble.data.transforms import build_transform

    base = build_transform(embedder.data_config, train=False)
    dataset = ManifestDataset(rows, data_root, [], lambda image: base(corruption(image=image)["image"]))
    out = []
    with torch.no_grad():
        for x, _, _ in track(DataLoader(dataset, batch_size=64), description=f"embedding {len(rows)} corrupted images ({cache.stem})"):
            out.append(embedder.model(x).float().numpy())
    matrix = np.concatenate(out)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, matrix)
    return matrix


def sklearn_head(train_x: np.ndarray, train_y: np.ndarray):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=300)).fit(train_x, train_y)


def load_pool(args) -> dict | None:
    """Embeddings and labels of every image, cross-fitted probabilities, the halves and their corrupted subsets."""
    from kibble.benchmarks import imagewoof_bench

    bench = imagewoof_bench(args.workdir, "imagewoof_drift")
    if bench is None:
        return None
    import hydra

    from kibble.config import compose_config
    from kibble.tasks import import_data
    from kibble.training.build import attach_features

    if not (bench.workspace / "manifest.parquet").is_file():
        import_data.run(compose_config("import", ["source=image_folder", f"source.root={bench.root}", *bench.overrides]))
    cfg = compose_config("kfold", [*bench.overrides, "model=features_lite0", "round_callbacks.queue=null", "cv.progress=false"])
    dm = hydra.utils.instantiate(cfg.data)
    manifest = dm.manifest.reset_index(drop=True)
    attach_features(cfg, dm)  # the shared cache: a read when warm
    emb = dm.matrix.numpy()[[dm.features[s] for s in manifest["sample_id"]]].astype(np.float64)
    labels = manifest["label"].astype(str).to_numpy()
    halves = dict(zip(("dev", "test"), split_halves(len(manifest), args.seed)))
    rng = np.random.default_rng([args.seed, 1])
    subsets = {h: np.sort(rng.choice(rows, args.subset, replace=False)) for h, rows in halves.items()}
    embedder = hydra.utils.instantiate(cfg.embedder)
    corrupted_rows = np.r_[subsets["dev"], subsets["test"]]
    key = hashlib.blake2b(",".join(manifest["sample_id"].iloc[corrupted_rows]).encode(), digest_size=6).hexdigest()
    corrupted = {name: embed_corrupted(embedder, manifest.iloc[corrupted_rows], dm.workspace.data_root, t,
                                       bench.work / "drift" / f"{name}_{key}.npy").astype(np.float64)
                 for name, t in corruptions().items()}
    probs, corrupted_probs, started = np.zeros((len(manifest), len(set(labels)))), {}, time.perf_counter()
    for h, other in (("dev", "test"), ("test", "dev")):  # cross-fitting: each half scored by the other half's head
        head = sklearn_head(emb[halves[other]], labels[halves[other]])
        probs[halves[h]] = head.predict_proba(emb[halves[h]])
        at = slice(0, args.subset) if h == "dev" else slice(args.subset, None)
        for name, matrix in corrupted.items():
            corrupted_probs.setdefault(name, {})[h] = (head.predict_proba(matrix[at]), matrix[at])
    accuracy = float((np.asarray(head.classes_)[probs.argmax(1)] == labels).mean())
    return {"emb": emb, "labels": labels, "probs": probs, "halves": halves, "subsets": subsets, "corrupted": corrupted_probs,
            "class_names": [str(c) for c in head.classes_], "accuracy": accuracy, "head_seconds": time.perf_counter() - started}


# ---- trials ----

def run_phase(data: dict, half: str, counts: dict[str, tuple[int, int]], sizes: list[int], batch: int, seed: int,
              alpha: float, shared_projection: bool = False) -> pd.DataFrame:
    """Arms on the same draws from one half: a row per (arm, reference size, scenario, trial). counts[arm] = (i.i.d.,
    drift) trials: an arm runs on the first that many draws. shared_projection (dev): the pooled arms take their first
    k components of one pooled fit with the most components instead of a fit each (the same subspace, 1 fit not 4)."""
    from rich.progress import track

    from kibble.monitor.checks import Batch, Settings, project, run_checks

    rows, subset = data["halves"][half], data["subsets"][half]
    clean = np.setdiff1d(rows, subset)  # references never hold an image whose corrupted copy may be the batch
    emb, probs, labels = data["emb"], data["probs"], data["labels"]
    most = (max(v[0] for v in counts.values()), max(v[1] for v in counts.values()))
    jobs = [(r, s, t) for r in sizes for s in SCENARIOS for t in range(most[s != "iid"])]
    records = []
    for r, scenario, t in track(jobs, description=f"{half}: {len(jobs)} draws, arms {list(counts)}"):
        rng = np.random.default_rng([seed, 0 if half == "dev" else 1, r, SCENARIOS.index(scenario), t])
        ref = rng.choice(clean, r, replace=False)
        cur, ratio = draw_current(scenario, batch, np.setdiff1d(clean, ref), labels, subset, rng)
        if scenario in data["corrupted"]:
            cur_probs, cur_emb = (m[cur] for m in data["corrupted"][scenario][half])
        else:
            cur_probs, cur_emb = probs[cur], emb[cur]
        arms = [a for a, n in counts.items() if t < n[scenario != "iid"]]
        pooled = max((CANDIDATES[a][1] for a in arms if CANDIDATES[a][0] == "pooled"), default=0)
        shared = project(emb[ref], cur_emb, pooled, "pooled") if shared_projection and pooled else None
        for arm in arms:
            fit, components = CANDIDATES[arm]
            ref_emb, now_emb = emb[ref], cur_emb
            if shared is not None and fit == "pooled":
                (ref_emb, now_emb), components = (z[:, :components] for z in shared), None
            s = Settings(alpha=alpha, pca_fit=fit, pca_components=components, seed=t)
            started = time.perf_counter()
            result = run_checks(Batch(probs[ref], ref_emb), Batch(cur_probs, now_emb), data["class_names"], s)
            rec = {"half": half, "arm": arm, "reference": r, "scenario": scenario, "trial": t, "drift": result["drifted"],
                   "seconds": time.perf_counter() - started, "prior_ratio": ratio}
            rec.update({c["name"]: c["drifted"] for c in result["checks"] if c["p_value"] is not None})
            records.append(rec)
    return pd.DataFrame(records)


def test_table(summary: pd.DataFrame, chosen: str) -> pd.DataFrame:
    """Wide: one row per (arm, reference size); false-alarm rate with its interval, trials, promise, power per drift kind."""
    out = []
    for (arm, ref), g in summary.groupby(["arm", "reference"], sort=False):
        iid = g[g["scenario"] == "iid"].iloc[0]
        row = {"arm": arm + (" (chosen on dev)" if arm == chosen else " (baseline)" if arm == BASELINE else ""),
               "reference": ref, "false alarms": f"{iid['alarms']}/{iid['trials']}", "false-alarm rate": iid["rate"],
               "95 % CI": f"[{iid['ci_low']:.3f}, {iid['ci_high']:.3f}]", "promise (<= alpha)": iid["promise"]}
        for _, d in g[g["scenario"] != "iid"].iterrows():
            row[f"power: {d['scenario']}"] = d["rate"]
        row["drift trials"] = int(g[g["scenario"] != "iid"]["trials"].iloc[0])
        out.append(row)
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("workspaces/bench"))
    parser.add_argument("--seed", type=int, default=0, help="the dev/test split, corrupted subsets and every draw")
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 500, 1000, 2000], help="reference sizes")
    parser.add_argument("--batch", type=int, default=200, help="current images per trial")
    parser.add_argument("--subset", type=int, default=400, help="images per half embedded under each corruption")
    parser.add_argument("--dev-trials", type=int, nargs=2, default=[30, 5], metavar=("IID", "DRIFT"), help="per R and kind")
    parser.add_argument("--test-trials", type=int, nargs=2, default=[200, 20], metavar=("IID", "DRIFT"), help="chosen arm")
    parser.add_argument("--baseline-trials", type=int, nargs=2, default=[100, 10], metavar=("IID", "DRIFT"),
                        help="the old default, on the first of the same test draws")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--quick", action="store_true", help="smoke run: sizes 200 500, a few trials, records nothing")
    parser.add_argument("--blas-threads", type=int, default=1, help="1 avoids oversubscription on a shared 2-core machine")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.subset, args.dev_trials, args.test_trials, args.baseline_trials = [200, 500], 200, [4, 2], [8, 2], [4, 2]
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.blas_threads)
    started = time.perf_counter()
    data = load_pool(args)
    if data is None:
        return
    print(f"pool ready ({(time.perf_counter() - started) / 60:.1f} min): {len(data['labels'])} images, heads "
          f"{data['head_seconds']:.0f} s", flush=True)
    dev = run_phase(data, "dev", {a: tuple(args.dev_trials) for a in CANDIDATES}, args.sizes, args.batch, args.seed,
                    args.alpha, shared_projection=True)
    chosen, board = choose(summarise(dev, args.alpha), args.alpha)
    print(f"dev scoreboard ({(time.perf_counter() - started) / 60:.1f} min; the choice is made here, before any test draw):\n"
          + board.to_string(), flush=True)
    counts = {chosen: tuple(args.test_trials), **({BASELINE: tuple(args.baseline_trials)} if chosen != BASELINE else {})}
    test = run_phase(data, "test", counts, args.sizes, args.batch, args.seed, args.alpha)
    summary = summarise(test, args.alpha)
    table = test_table(summary, chosen)
    minutes = (time.perf_counter() - started) / 60
    out = args.workdir.resolve() / "drift"
    out.mkdir(parents=True, exist_ok=True)
    pd.concat([dev, test]).to_csv(out / "trials.csv", index=False)
    pd.set_option("display.width", 250)
    print(table.to_string(index=False))
    big = test[(test["arm"] == chosen) & (test["reference"] == max(args.sizes))]["seconds"].median()
    prior = test[test["scenario"] == "prior"]["prior_ratio"].mean()
    print(f"chosen on dev: {chosen}; {minutes:.1f} min; head accuracy {data['accuracy']:.4f}")
    if args.quick:
        return
    from kibble.benchmarks import PROJECT_ROOT, record, replace_section
    from kibble.monitor.checks import Settings

    if f"## {OLD_TITLE}\n" in (PROJECT_ROOT / "docs" / "benchmarks.md").read_text():
        replace_section(f"## {OLD_TITLE}", f"## {TITLE}\n")  # the renamed section keeps its place
    default = next((a for a, v in CANDIDATES.items() if v == (Settings().pca_fit, Settings().pca_components)), "none")
    dev_line = "; ".join(f"{a}: worst false alarm {r['worst false alarm']:.3f}, worst power {r['worst power']:.3f}"
                         f"{'' if r['admissible'] else ' (not admissible)'}" for a, r in board.iterrows())
    record(TITLE, table, notes=[
        f"Protocol: all {len(data['labels'])} Imagewoof images (train + val) split by seed {args.seed} into a dev and a test half. "
        "Each half's probabilities come from a scikit-learn LogisticRegression (C=0.05, standardised) on the frozen "
        f"effnet-lite0 embeddings of the *other* half (cross-fitted; accuracy {data['accuracy']:.4f}).",
        f"Per trial: a reference of R random images and a current batch of {args.batch}, from one half: i.i.d. (false-alarm "
        "rate), prior (one random breed 5x as frequent as each other breed; achieved ratio "
        f"{prior:.2f}), brightness/contrast (+0.35/-0.35) and Gaussian blur (sigma 3) applied with albumentations to a fixed "
        f"{args.subset}-image subset of the half at full resolution and embedded by the backbone (never in a reference).",
        f"Dev ({args.dev_trials[0]} i.i.d. and {args.dev_trials[1]} drift trials per R and kind; arms: {', '.join(CANDIDATES)}; "
        "the pooled arms share one 128-component fit per draw): "
        f"{dev_line}. Rule: false alarm <= {args.alpha} at every R, then best worst-case power. Chosen: **{chosen}**; "
        f"kibble's default (conf/monitor.yaml): {default}" + (" (the same)." if default == chosen else " (DIFFERS: update the default)."),
        f"Test: {args.test_trials[0]} i.i.d. and {args.test_trials[1]} drift trials per R and kind for the chosen arm, the "
        f"baseline on the first {args.baseline_trials[0]} and {args.baseline_trials[1]} of the same draws; "
        f"verdict = Bonferroni over chi-square, KS(max prob), KS(entropy), MMD, domain classifier at alpha = {args.alpha}. "
        "95 % CI: Clopper-Pearson. Promise: holds = upper bound <= alpha; broken = lower bound > alpha.",
        f"Time: {minutes:.1f} min in all; drift tests at R={max(args.sizes)} median {big:.2f} s per batch "
        f"({args.blas_threads} BLAS thread(s), shared 2-core machine: upper bounds). Trials: <workdir>/drift/trials.csv.",
    ])


if __name__ == "__main__":
    main()
