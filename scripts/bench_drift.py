"""Benchmark `kibble monitor`'s drift tests on Imagewoof (../shared/data/imagewoof), offline effnet-lite0.

    python scripts/bench_drift.py [--workdir workspaces/bench] [--trials 20] [--subset 1200] [--reference 1500]

The model: scikit-learn LogisticRegression ("sklearn-LR head") on the frozen effnet-lite0 embeddings
of the train split (shared feature cache); its softmax and the embeddings feed the monitor exactly as
`kibble predict save_embeddings=true` output would. Per trial, a random reference of val images
(never from the corruption subset) is compared with a current batch of 100, 300 or 1000 images:
- i.i.d.: random clean val images -> false-alarm rate (target <= 5 % at the default thresholds);
- prior: one random breed 5x as frequent as each other breed (capped by the val images left);
- brightness/contrast and blur: a fixed subset of val images corrupted with albumentations on the
  image, then embedded for real by the frozen backbone (cached under <workdir>/drift/);
detection rate target >= 95 % at 300 images for the corruptions. Baseline in the same run: the same
tests without the Bonferroni correction (each at p <= 0.05). Also times `kibble monitor` (run(cfg):
load stores, tests, queue, report) on 1,000 current images given cached embeddings.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from kibble.benchmarks import imagewoof_bench, record
from kibble.config import compose_config

SIZES = (100, 300, 1000)
SCENARIOS = ("iid", "prior", "brightness_contrast", "blur")


def corruptions():
    import albumentations as A

    return {
        "brightness_contrast": A.RandomBrightnessContrast(brightness_limit=(0.35, 0.35), contrast_limit=(-0.35, -0.35), p=1.0),
        "blur": A.GaussianBlur(blur_limit=(0, 0), sigma_limit=(3.0, 3.0), p=1.0),
    }


def embed_corrupted(embedder, rows: pd.DataFrame, data_root: Path, corruption, cache: Path) -> np.ndarray:
    """Corrupt each image (albumentations, full resolution), then embed it with the frozen backbone; cached."""
    ids_file = cache.with_suffix(".ids.txt")
    if cache.is_file() and ids_file.is_file() and ids_file.read_text().split("\n") == rows["sample_id"].astype(str).tolist():
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
    ids_file.write_text("\n".join(rows["sample_id"].astype(str)))
    return matrix


def sklearn_head(train_x: np.ndarray, train_y: np.ndarray):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=300)).fit(train_x, train_y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("workspaces/bench"))
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--subset", type=int, default=1200, help="val images embedded per corruption")
    parser.add_argument("--reference", type=int, default=1500, help="reference images per trial")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corruptions-only", action="store_true", help="only embed (and cache) the corrupted subset")
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="BLAS threads for the trials (1 avoids oversubscription on a shared 2-core machine)")
    args = parser.parse_args()
    bench = imagewoof_bench(args.workdir, "imagewoof_drift")
    if bench is None:
        return
    import hydra

    from kibble.monitor.checks import Batch, Settings, run_checks
    from kibble.tasks import import_data
    from kibble.training.build import attach_features

    root, work, ws = bench.root, bench.work, bench.workspace
    common = bench.overrides
    if not (ws / "manifest.parquet").is_file():
        import_data.run(compose_config("import", ["source=image_folder", f"source.root={root}", *common]))
    cfg = compose_config("kfold", [*common, "model=features", "round_callbacks.queue=null", "cv.progress=false"])
    dm = hydra.utils.instantiate(cfg.data)
    manifest = dm.manifest.reset_index(drop=True)
    labels = manifest["label"].astype(str).to_numpy()
    train = np.flatnonzero(manifest["split"].to_numpy() == "train")
    val = np.flatnonzero(manifest["split"].to_numpy() == "val")
    rng = np.random.default_rng(args.seed)
    subset = np.sort(rng.choice(len(val), args.subset, replace=False))  # positions within val
    outside = np.setdiff1d(np.arange(len(val)), subset)
    embedder = hydra.utils.instantiate(cfg.embedder)
    corrupted_emb = {
        name: embed_corrupted(embedder, manifest.iloc[val[subset]], dm.workspace.data_root, transform,
                              work / "drift" / f"{name}_{args.subset}_{args.seed}.npy")
        for name, transform in corruptions().items()
    }
    if args.corruptions_only:
        return
    attach_features(cfg, dm)  # the shared cache: a read when warm
    features = dm.matrix.numpy()[[dm.features[s] for s in manifest["sample_id"]]]

    start = time.perf_counter()
    head = sklearn_head(features[train], labels[train])
    head_seconds = time.perf_counter() - start
    class_names = [str(c) for c in head.classes_]
    val_probs = head.predict_proba(features[val])
    val_acc = float((head.classes_[val_probs.argmax(1)] == labels[val]).mean())

    corrupted = {name: (head.predict_proba(emb), emb) for name, emb in corrupted_emb.items()}
    val_emb = features[val]

    def current(scenario: str, n: int, ref_rows: np.ndarray, trial_rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
        if scenario in corrupted:
            pick = trial_rng.choice(len(subset), n, replace=False)
            probs, emb = corrupted[scenario]
            return probs[pick], emb[pick], float("nan")
        pool = np.setdiff1d(np.arange(len(val)), ref_rows)
        if scenario == "iid":
            pick = trial_rng.choice(pool, n, replace=False)
            return val_probs[pick], val_emb[pick], float("nan")
        breed = trial_rng.choice(class_names)
        in_breed = pool[labels[val][pool] == breed]
        others = pool[labels[val][pool] != breed]
        want = int(round(n * 5 / (5 + len(class_names) - 1)))
        take = min(want, len(in_breed))
        pick = np.r_[trial_rng.choice(in_breed, take, replace=False), trial_rng.choice(others, n - take, replace=False)]
        ratio = (take / n) / ((n - take) / n / (len(class_names) - 1))
        return val_probs[pick], val_emb[pick], ratio

    settings = Settings(seed=args.seed)
    uncorrected = Settings(seed=args.seed, correction="none")
    records = []
    from rich.progress import track

    from threadpoolctl import threadpool_limits

    threadpool_limits(args.blas_threads)
    jobs = [(t, n, s) for t in range(args.trials) for n in SIZES for s in SCENARIOS]
    refs = {t: np.random.default_rng(1000 + t).choice(outside, args.reference, replace=False) for t in range(args.trials)}
    for t, n, scenario in track(jobs, description="drift trials"):
        trial_rng = np.random.default_rng([t, n, SCENARIOS.index(scenario)])
        ref_rows = refs[t]
        probs, emb, ratio = current(scenario, n, ref_rows, trial_rng)
        s = Settings(**{**settings.__dict__, "seed": t})
        started = time.perf_counter()
        result = run_checks(Batch(val_probs[ref_rows], val_emb[ref_rows]), Batch(probs, emb), class_names, s)
        seconds = time.perf_counter() - started
        p = {c["name"]: c["p_value"] for c in result["checks"] if c["p_value"] is not None}
        rec = {"trial": t, "n": n, "scenario": scenario, "drift": result["drifted"], "seconds": seconds,
               "uncorrected": any(v <= uncorrected.alpha for v in p.values()), "prior_ratio": ratio}
        rec.update({f"{k}": v <= result["per_test_threshold"] for k, v in p.items()})
        records.append(rec)
    frame = pd.DataFrame(records)
    (work / "drift").mkdir(parents=True, exist_ok=True)
    frame.to_csv(work / "drift" / "trials.csv", index=False)

    tests = ["chi_square", "ks_confidence", "ks_entropy", "mmd", "domain_classifier"]
    rows = []
    for (scenario, n), g in frame.groupby(["scenario", "n"], sort=False):
        target = 0.05 if scenario == "iid" else (0.95 if scenario in corrupted and n >= 300 else None)
        rate = float(g["drift"].mean())
        row = {"scenario": scenario, "batch": n, "trials": len(g), "flagged (verdict)": rate,
               "target": ("<= 0.05" if scenario == "iid" else (">= 0.95" if target else "-")),
               "ratio vs target": (rate / 0.05 if scenario == "iid" else (rate / 0.95 if target else float("nan"))),
               "baseline: uncorrected, each p<=0.05": float(g["uncorrected"].mean())}
        row.update({t_: float(g[t_].mean()) for t_ in tests if t_ in g})
        if scenario == "prior":
            row["achieved breed ratio"] = float(g["prior_ratio"].mean())
        rows.append(row)
    table = pd.DataFrame(rows)
    order = {s: i for i, s in enumerate(SCENARIOS)}
    table = table.sort_values(["scenario", "batch"], key=lambda c: c.map(order) if c.name == "scenario" else c).reset_index(drop=True)

    # end-to-end: `kibble monitor` (run(cfg)) on 1,000 current images given cached embeddings
    from kibble.predictions.store import make_frame, write_store
    from kibble.tasks import monitor

    e2e = work / "drift" / "e2e"
    shutil.rmtree(e2e, ignore_errors=True)
    ref_rows = refs[0]
    cur_rows = np.random.default_rng(7).choice(subset, 1000, replace=False)
    probs_b, emb_b = corrupted["blur"][0][np.searchsorted(subset, cur_rows)], corrupted["blur"][1][np.searchsorted(subset, cur_rows)]
    meta = {"class_names": class_names, "complete": True}
    for name, rows_, p_, e_ in (("reference", ref_rows, val_probs[ref_rows], val_emb[ref_rows]), ("current", cur_rows, probs_b, emb_b)):
        ids = manifest.iloc[val[rows_]]["sample_id"].tolist()
        f = make_frame(ids, p_, embeddings=e_)
        f["path"] = manifest.iloc[val[rows_]]["path"].tolist()
        write_store(e2e / f"{name}.parquet", f, meta)
    started = time.perf_counter()
    result = monitor.run(compose_config("monitor", [f"workspace={ws}", f"reference={e2e / 'reference.parquet'}",
                                                    f"current={e2e / 'current.parquet'}", f"out_dir={e2e / 'out'}"], output_dir=e2e / "run"))
    e2e_seconds = time.perf_counter() - started
    checks_1000 = frame[frame["n"] == 1000]["seconds"].median()

    pd.set_option("display.width", 250)
    print(table.to_string(index=False))
    print(f"sklearn-LR head: val accuracy {val_acc:.4f} (fit {head_seconds:.1f} s); drift tests on 1000 vs {args.reference}: "
          f"median {checks_1000:.2f} s; kibble monitor end to end (blurred batch, verdict {result['verdict']}): {e2e_seconds:.2f} s")
    record(
        "Drift monitoring (Imagewoof val, effnet-lite0 embeddings, sklearn-LR head)",
        table,
        notes=[
            f"Model: scikit-learn LogisticRegression (C=0.05) on the frozen effnet-lite0 train embeddings (shared cache); val accuracy {val_acc:.4f}.",
            f"Per trial: reference = {args.reference} random val images outside the corruption subset; current = a batch from the rest of val "
            f"(i.i.d., prior) or from the {args.subset}-image corruption subset, corrupted with albumentations on the image and embedded by "
            "the backbone (brightness +0.35 / contrast -0.35; Gaussian blur sigma 3 at full resolution).",
            "Prior shift: one random breed 5x as frequent as each other breed; at 1,000 images the breed is capped by the val images "
            "left outside the reference (achieved ratio in the table).",
            "Verdict: Bonferroni over chi-square, KS(max prob), KS(entropy), MMD, domain classifier at alpha = 0.05 (each p <= 0.01); "
            "per-test columns are detection rates at that per-test threshold. Baseline column: the same tests uncorrected (any p <= 0.05).",
            f"Time: drift tests for 1,000 current vs {args.reference} reference images, median {checks_1000:.2f} s; "
            f"`kibble monitor` end to end on 1,000 current images given cached embeddings (stores -> tests, queue, monitor.html): {e2e_seconds:.2f} s "
            f"({args.blas_threads} BLAS thread(s); the machine is shared, so times are upper bounds).",
        ],
    )


if __name__ == "__main__":
    main()
