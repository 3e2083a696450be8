"""A simulated annotator for benchmarks and the demo loop: answers from the manifest's `true_label`.

Only this module (and the detection metrics) may read `true_label` (DESIGN §3).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kibble import KibbleError
from kibble.values import is_missing
from kibble.labels.history import now_utc
from kibble.labels.reviews import REVIEW_COLUMNS


class SimulatedAnnotator:
    """Reviews a queue like a human with a known error rate.

    For each queued sample the answer is its `true_label` (verdict `confirmed` when that equals the
    given label, else `corrected`); with probability `error_rate` the answer is a uniformly random
    wrong class instead. A `true_label` outside the class list is answered `out_of_scope`.
    The random stream lives in the instance: successive rounds draw fresh errors, reproducibly.
    """

    def __init__(self, error_rate: float = 0.0, cost_per_item: float = 1.0, seed: int = 0, name: str = "simulated"):
        if not 0.0 <= float(error_rate) <= 1.0:
            raise KibbleError(f"annotator error_rate={error_rate}; use a probability in [0, 1]")
        if float(cost_per_item) < 0:
            raise KibbleError(f"annotator cost_per_item={cost_per_item}; use a non-negative cost")
        self.error_rate = float(error_rate)
        self.cost_per_item = float(cost_per_item)
        self.seed = int(seed)
        self.name = str(name)
        self.items_reviewed = 0
        self._rng = np.random.default_rng(self.seed)

    def cost(self, n: int) -> float:
        """What reviewing `n` items costs."""
        return float(n) * self.cost_per_item

    @property
    def total_cost(self) -> float:
        return self.cost(self.items_reviewed)

    def review(self, queue: pd.DataFrame, manifest: pd.DataFrame, class_names: list[str]) -> pd.DataFrame:
        """Answer every queued sample; returns a reviews table (`REVIEW_COLUMNS`)."""
        if "true_label" not in manifest.columns:
            raise KibbleError(
                "manifest has no true_label column; the simulated annotator needs the truth "
                "(import with inject_noise.rate > 0, or add true_label to the manifest)"
            )
        if "sample_id" not in queue.columns:
            raise KibbleError("queue has no sample_id column; pass a queue table (queue.csv)")
        truth = dict(zip(manifest["sample_id"].astype(str), manifest["true_label"]))
        current = dict(zip(manifest["sample_id"].astype(str), manifest["label"]))
        names = [str(n) for n in class_names]
        known = set(names)
        created = now_utc()
        rows = []
        for rec in queue.to_dict("records"):
            sid = str(rec["sample_id"])
            if sid not in truth:
                raise KibbleError(f"queue sample_id {sid!r} is not in the manifest; rebuild the queue from this workspace")
            true = _opt(truth[sid])
            if true is None:
                raise KibbleError(f"sample {sid!r} has no true_label; the simulated annotator can only review samples with a known truth")
            given = _opt(rec["given_label"]) if "given_label" in rec else _opt(current[sid])
            answer = true
            if true in known and len(names) > 1 and self._rng.random() < self.error_rate:
                wrong = [n for n in names if n != true]
                answer = wrong[int(self._rng.integers(len(wrong)))]
            if answer not in known:
                label, verdict = None, "out_of_scope"
            else:
                label, verdict = answer, ("confirmed" if answer == given else "corrected")
            rnd = rec.get("round")
            rows.append({
                "sample_id": sid, "label": label, "verdict": verdict, "annotator": self.name, "note": "",
                "queue_id": _opt(rec.get("queue_id")), "created_at": created, "lead_time": None,
                "round": None if _opt(rnd) is None else int(rnd),
            })
        self.items_reviewed += len(rows)
        out = pd.DataFrame(rows, columns=REVIEW_COLUMNS)
        for col in ("sample_id", "label", "verdict", "annotator", "note", "queue_id", "created_at"):
            out[col] = out[col].astype(object).where(out[col].notna(), None)
        out["note"] = out["note"].fillna("")
        out["round"] = out["round"].astype("Int64")
        out["lead_time"] = out["lead_time"].astype("float64")
        return out


def _opt(value) -> str | None:
    return None if is_missing(value) or str(value) == "" else str(value)
