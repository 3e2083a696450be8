"""`kibble monitor`: has what the model sees or says drifted from a reference? Queue what drifted.

    kibble monitor reference=REF.parquet current=(CUR.parquet | DIR ckpt_path=CKPT) [workspace=W]
                   [monitor.fail_on_drift=true] [out_dir=DIR]

reference: a prediction store with embeddings (e.g. `kibble predict split=val save_embeddings=true`),
or an earlier production batch. current: a prediction store, or a folder of images predicted here
exactly as `kibble predict images=DIR save_embeddings=true` would. Writes into out_dir (default the
run directory): monitor.json, monitor.html (+ figures/), current.parquet when predicted here, and
the labeling queue (queue.csv, queue.labelstudio.json, labeling_config.xml) of the least confident
and most atypical current images. Prints one verdict line; with monitor.fail_on_drift=true a drift
verdict exits with status 3 (1 stays "error"), so a scheduled job can alert on it.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
from omegaconf import DictConfig, OmegaConf, open_dict

from kibble import KibbleError
from kibble.data.classes import ClassList
from kibble.io import atomic_write_json
from kibble.monitor.checks import Batch, Settings, run_checks, verdict_line
from kibble.monitor.triage import monitor_queue, triage_scores
from kibble.paths import Workspace, config_dir
from kibble.predictions.store import read_store, stack, write_store
from kibble.progress import Progress

log = logging.getLogger(__name__)

DRIFT_EXIT_CODE = 3


def predict_folder(folder: Path, cfg: DictConfig, out: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Predict a folder of images with embeddings, the `kibble predict images=DIR` path; store it at out."""
    from kibble.training.build import load_classifier
    from kibble.tasks.predict import drop_bad_images, folder_rows, model_class_names, model_outputs, prediction_frame

    if not cfg.get("ckpt_path"):
        raise KibbleError(f"current={folder} is a folder of images: give ckpt_path=CKPT to predict it (or pass a predictions Parquet)")
    model = load_classifier(cfg.ckpt_path)
    from kibble.data.images import DEFAULT_MAX_PIXELS, set_max_image_pixels

    set_max_image_pixels(cfg.get("max_image_pixels", DEFAULT_MAX_PIXELS))
    rows, root = folder_rows(folder)
    rows, skipped = drop_bad_images(rows, root, cfg.get("on_bad_image", "fail"))
    names = model_class_names(model)
    with open_dict(cfg):
        cfg.save_embeddings = True
    frame = prediction_frame(rows, model_outputs(model, rows, root, names, cfg), names, given=False)
    meta = {"class_names": names, "images": str(root), "split": None, "skipped": skipped, "n": len(frame), "complete": True,
            "ckpt_path": str(Path(cfg.ckpt_path).expanduser().resolve()), "model": type(model).__name__}
    write_store(out, frame, meta)
    return frame, meta


def load_side(spec: Any, role: str, cfg: DictConfig, out_dir: Path) -> tuple[pd.DataFrame, dict[str, Any], str]:
    """A prediction store (Parquet) or, for a folder, its predictions made now."""
    if spec is None or str(spec) in ("", "???"):
        raise KibbleError(f"{role}= is required: a predictions Parquet (kibble predict ... save_embeddings=true) or a folder of images")
    path = Path(str(spec)).expanduser()
    if path.is_dir():
        frame, meta = predict_folder(path.resolve(), cfg, out_dir / f"{role}.parquet")
    elif path.is_file():
        frame, meta = read_store(path, require_complete=True)
    else:
        raise KibbleError(f"{role}={path}: no such predictions file or image folder")
    if len(frame) == 0:
        raise KibbleError(f"{role}={path}: empty batch (0 predictions); nothing to monitor")
    return frame, meta, str(path.resolve())


def to_batch(frame: pd.DataFrame, role: str, source: str, require_embeddings: bool) -> Batch:
    has = "embedding" in frame.columns and frame["embedding"].notna().all()
    if require_embeddings and not has:
        raise KibbleError(f"{role}={source}: no `embedding` column; re-run `kibble predict ... save_embeddings=true` "
                          "(or set require_embeddings=false to skip the embedding tests)")
    embeddings = None
    if has:
        sizes = {len(v) for v in frame["embedding"]}
        if len(sizes) > 1:
            raise KibbleError(f"{role}={source}: embeddings of mixed sizes {sorted(sizes)}; predict the batch with one model")
        embeddings = stack(frame, "embedding")
    return Batch(stack(frame), embeddings, name=f"{role}={source}")


def check_sides(ref_meta: dict, cur_meta: dict, ref_src: str, cur_src: str, reference: Batch, current: Batch) -> list[str]:
    ref_names, cur_names = list(ref_meta.get("class_names") or []), list(cur_meta.get("class_names") or [])
    if ref_names != cur_names:
        extra = [c for c in cur_names if c not in ref_names][:5]
        missing = [c for c in ref_names if c not in cur_names][:5]
        detail = f"current-only {extra}, reference-only {missing}" if extra or missing else "same names in a different order"
        raise KibbleError(f"current={cur_src}: class list ({len(cur_names)} classes) differs from reference={ref_src} "
                          f"({len(ref_names)}; {detail}); predict both with the same model")
    if reference.embeddings is not None and current.embeddings is not None and reference.embeddings.shape[1] != current.embeddings.shape[1]:
        raise KibbleError(f"current={cur_src}: embeddings have {current.embeddings.shape[1]} dimensions, reference={ref_src} has "
                          f"{reference.embeddings.shape[1]}; embed both with the same model")
    return ref_names


def image_root(cur_meta: dict, ws: Workspace | None) -> Path | None:
    if cur_meta.get("images"):
        return Path(cur_meta["images"])
    return ws.data_root if ws is not None and ws.state.is_file() else None


def write_queue(queue: pd.DataFrame, out_dir: Path, class_names: list[str], ws: Workspace | None, root: Path | None,
                qcfg: DictConfig) -> dict[str, str]:
    from kibble.queue.formats import write_queue_files

    classes = ClassList.load(ws.classes) if ws is not None and ws.classes.is_file() else ClassList.from_names(class_names)
    if classes.names != class_names:
        classes = ClassList.from_names(class_names)
    image_url = OmegaConf.to_container(qcfg.image_url, resolve=True) if qcfg.get("image_url") else None
    paths = write_queue_files(queue, out_dir, classes, image_url, data_root=root, model_version="kibble-monitor")
    written = {k: str(v) for k, v in paths.items()}
    if qcfg.get("copy_to"):
        target = Path(str(qcfg.copy_to)).expanduser()
        if (target / "queue.csv").exists():
            raise KibbleError(f"monitor.queue.copy_to={target}: already holds a queue.csv; choose a new round directory")
        write_queue_files(queue, target, classes, image_url, data_root=root, model_version="kibble-monitor")
        written["copy_to"] = str(target)
    return written


def run(cfg: DictConfig) -> dict[str, Any]:
    started = time.perf_counter()
    out_dir = Path(cfg.out_dir).expanduser() if cfg.get("out_dir") else Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ws = Workspace(cfg.workspace) if cfg.get("workspace") and Path(str(cfg.workspace)).expanduser().is_dir() else None
    mon = OmegaConf.to_container(cfg.monitor, resolve=True)
    fail_on_drift = bool(mon.pop("fail_on_drift", False))
    settings = Settings.from_mapping(mon)
    require = bool(cfg.get("require_embeddings", True))

    report = bool(cfg.get("report", True))
    # steps, for progress: the current batch may be a folder to predict (its own progress, in images)
    with Progress("monitor", 5 + report, "steps", logger=log) as bar:
        ref_frame, ref_meta, ref_src = load_side(cfg.get("reference"), "reference", cfg, out_dir)
        bar.advance(note="reference read")
        cur_frame, cur_meta, cur_src = load_side(cfg.get("current"), "current", cfg, out_dir)
        bar.advance(note="current batch read")
        reference = to_batch(ref_frame, "reference", ref_src, require)
        current = to_batch(cur_frame, "current", cur_src, require)
        class_names = check_sides(ref_meta, cur_meta, ref_src, cur_src, reference, current)

        result = run_checks(reference, current, class_names, settings)
        bar.advance(note="drift tests done")
        qcfg = cfg.queue
        scores = triage_scores(reference.confidence, current.confidence, reference.embeddings, current.embeddings,
                               k=int(qcfg.knn), max_reference=int(qcfg.max_reference), seed=settings.seed)
        bar.advance(note="images scored for the queue")
        predicted = [class_names[i] for i in current.predicted]
        paths = cur_frame["path"].astype(str).tolist() if "path" in cur_frame.columns else cur_frame["sample_id"].astype(str).tolist()
        queue = monitor_queue(cur_frame["sample_id"].astype(str).tolist(), paths, predicted, scores, int(qcfg.budget),
                              float(qcfg.min_score), qcfg.get("round"))
        root = image_root(cur_meta, ws)
        written = write_queue(queue, out_dir, class_names, ws, root, qcfg)

        result.update(reference=ref_src, current=cur_src, out_dir=str(out_dir), fail_on_drift=fail_on_drift,
                      queue={"n": int(len(queue)), "files": written, "budget": int(qcfg.budget), "min_score": float(qcfg.min_score)},
                      seconds=round(time.perf_counter() - started, 3))
        atomic_write_json(out_dir / "monitor.json", result)
        bar.advance(note="queue and monitor.json written")
        ref_dist = {"confidence": reference.confidence, "entropy": reference.entropy}
        cur_dist = {"confidence": current.confidence, "entropy": current.entropy}
        if "knn_distance" in scores:
            ref_dist["knn_distance"] = scores.attrs["reference_knn_distance"]
            cur_dist["knn_distance"] = scores["knn_distance"].to_numpy()
        if report:
            from kibble.report.monitor import write_monitor_report

            write_monitor_report(out_dir / "monitor.html", result, ref_dist, cur_dist, queue, root)
            bar.advance(note="report written")
    print(verdict_line(result))
    print(f"wrote {out_dir / 'monitor.json'}, monitor.html and a queue of {len(queue)} images ({out_dir / 'queue.csv'})")
    return result


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="monitor")
def main(cfg: DictConfig) -> None:
    result = run(cfg)
    if result["drifted"] and result["fail_on_drift"]:
        sys.exit(DRIFT_EXIT_CODE)
