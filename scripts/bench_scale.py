"""Scale: the prediction store and the cleaning strategies at 10^6 rows, against their baselines.

    python scripts/bench_scale.py [--rows 1000000] [--classes 120] [--repeats 3] [--no-record]

One run, one synthetic OOF (random softmax rows in float32: logits ~ N(0, 2^2), softmax; labels =
argmax for 80 % of rows, a random class for the rest), everything single-threaded (BLAS/OpenMP on
one thread, cleanlab with n_jobs=1):
- store: today's layout re-implemented (a Parquet list column built from per-row numpy arrays;
  read = pd.read_parquet + np.stack per row for the validation and again for the caller) vs the
  columnar store (`write_store` / `read_store` + `stack`, float32 and float16) vs a plain .npy of
  the matrix (np.save / np.load), and, for reference only, the same matrix as Parquet
  FIXED_LEN_BYTE_ARRAY rows (what a non-nested layout would cost; kibble does not use it);
- strategies: the round's one validation pass, then each strategy's worker on the validated arrays
  (what the queue runs) and the public call (validation + worker), against cleanlab's
  `get_label_quality_scores` and `find_label_issues` on the same float32 arrays, with ratios.
Times are the minimum over --repeats (wall and CPU seconds of this process); the machine is shared,
so the minimum is the least disturbed repeat. Regenerates its own section of docs/benchmarks.md.

    python scripts/bench_scale.py --part neighbors [--neighbor-rows 10000,100000,1000000]

`neighbors` at scale (its own section): synthetic clustered embeddings (N x 1,280 float32, 120
clusters, 20 % of labels replaced by a random class) at each N: wall time of the exact k-NN
(scikit-learn, the path below `exact_below`) and of the approximate one (faiss IVF after PCA), the
ANN's recall@10 against exact on a random sample of rows, and the agreement of the strategy's
scores, flags and AUPRC for finding the planted noise. --part all (the default) runs both parts.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

# after the thread variables: numpy and the BLAS it loads read them once
from kibble.benchmarks.scale import bench_store, bench_strategies, record_probs, synthetic  # noqa: E402
from kibble.benchmarks.scale_neighbors import bench_ann_libraries, bench_neighbors, record_neighbors  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="where the stores are written (default: a temp dir)")
    parser.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--part", choices=("all", "probs", "neighbors"), default="all",
                        help="probs: store + probability strategies; neighbors: exact vs approximate k-NN (own section)")
    parser.add_argument("--neighbor-rows", default="10000,100000,1000000", help="comma-separated N for --part neighbors")
    parser.add_argument("--queries", type=int, default=2000, help="rows the neighbors comparisons are made on")
    parser.add_argument("--compare-libraries", type=int, default=0, metavar="N",
                        help="also time faiss IVF vs faiss HNSW vs hnswlib at N rows (0: skip)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    if args.part in ("all", "neighbors"):
        sizes = [int(v) for v in args.neighbor_rows.split(",")]
        libraries = None
        if args.compare_libraries:
            libraries = bench_ann_libraries(args.compare_libraries, queries=args.queries)
            print(pd.DataFrame(libraries).to_string(index=False, float_format=lambda v: f"{v:.3g}"), flush=True)
        rows, info = bench_neighbors(sizes, queries=args.queries)
        info["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
        print(f"neighbors: {info}", flush=True)
        if not args.no_record:
            record_neighbors(rows, info, load, args.queries, libraries)
    if args.part in ("all", "probs"):
        bench_probs(args, load)


def bench_probs(args: argparse.Namespace, load: float) -> None:
    """The store and probability-strategy part: its own section."""
    labels, probs = synthetic(args.rows, args.classes)
    with tempfile.TemporaryDirectory(prefix="kibble-bench-scale-", dir=args.workdir) as tmp:
        store_rows, store_info = bench_store(labels, probs, Path(tmp), args.repeats)
    store = pd.DataFrame(store_rows)
    print(store.to_string(index=False, float_format=lambda v: f"{v:.3g}"), flush=True)
    strategy_rows, strategy_info = bench_strategies(labels, probs, args.repeats)
    strategies = pd.DataFrame(strategy_rows)
    print(strategies.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    print(f"checks: {store_info} {strategy_info}; peak RSS {peak_gb:.2f} GB")
    if args.no_record:
        return
    record_probs(store, strategies, store_info, strategy_info, rows=args.rows, classes=args.classes, repeats=args.repeats,
                 nbytes=probs.nbytes, load=load, peak_gb=peak_gb)


if __name__ == "__main__":
    main()
