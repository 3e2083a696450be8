"""Importers: turn a source (digits, image folder, Stanford Dogs tree, CSV) into manifest rows.

Each returns (frame, class_names, display_names, data_root). Paths in the frame are relative to
data_root, sample_id defaults to that relative path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kibble import KibbleError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def _require_dir(root: str | Path, what: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise KibbleError(f"source.root={root}: {what} directory does not exist; point source.root at it")
    return root.resolve()


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def stratified_split(labels: pd.Series, fractions: dict[str, float], seed: int) -> np.ndarray:
    """Assign each row a split name, stratified by label; the rest goes to 'train'."""
    rng = np.random.default_rng(seed)
    out = np.array(["train"] * len(labels), dtype=object)
    for _, idx in labels.reset_index(drop=True).groupby(labels.reset_index(drop=True)).groups.items():
        idx = rng.permutation(np.asarray(idx))
        start = 0
        for name, frac in fractions.items():
            n = int(round(frac * len(idx)))
            out[idx[start : start + n]] = name
            start += n
    return out


def import_digits(root: str | Path, test_fraction: float = 0.2, val_fraction: float = 0.0, seed: int = 0, size: int = 32):
    """scikit-learn's bundled 8x8 digits, written as PNGs so the real image path is exercised."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = Path(root)
    digits = load_digits()
    rows = []
    for i, (image, target) in enumerate(zip(digits.images, digits.target)):
        rel = Path(str(target)) / f"digit_{i:04d}.png"
        out = root / rel
        if not out.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            pixels = (255 - image * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).resize((size, size), Image.BICUBIC).convert("RGB").save(out)
        rows.append({"sample_id": rel.as_posix(), "path": rel.as_posix(), "label": str(target)})
    frame = pd.DataFrame(rows)
    frame["split"] = stratified_split(frame["label"], {"test": test_fraction, "val": val_fraction}, seed)
    names = [str(i) for i in range(10)]
    return frame, names, {n: f"digit {n}" for n in names}, root


def import_image_folder(root: str | Path, test_fraction: float = 0.2, val_fraction: float = 0.0, seed: int = 0):
    """One folder per class, optionally under train/ val/ test/ subfolders."""
    root = _require_dir(root, "image folder")
    split_dirs = [d for d in ("train", "val", "test") if (root / d).is_dir()]
    rows = []
    if split_dirs:
        for split in split_dirs:
            for class_dir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
                for img in _images_under(class_dir):
                    rel = img.relative_to(root).as_posix()
                    rows.append({"sample_id": rel, "path": rel, "label": class_dir.name, "split": split})
    else:
        for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for img in _images_under(class_dir):
                rel = img.relative_to(root).as_posix()
                rows.append({"sample_id": rel, "path": rel, "label": class_dir.name})
    if not rows:
        raise KibbleError(f"source.root={root}: no images found; expected <class>/<image> or train/<class>/<image>")
    frame = pd.DataFrame(rows)
    if not split_dirs:
        frame["split"] = stratified_split(frame["label"], {"test": test_fraction, "val": val_fraction}, seed)
        frame.attrs["notes"] = [_random_split_note(frame, "no train/ val/ test/ subfolders", test_fraction, val_fraction)]
    names = sorted(frame["label"].unique())
    return frame, names, {n: n for n in names}, root


def _breed_name(folder: str) -> tuple[str, str]:
    wnid, _, breed = folder.partition("-")
    return wnid, (breed or wnid).replace("_", " ")


def _read_mat_list(path: Path) -> list[str]:
    from scipy.io import loadmat

    mat = loadmat(path)
    if "file_list" not in mat:
        raise KibbleError(f"{path}: expected a `file_list` variable (the Stanford Dogs list format)")
    return [str(np.asarray(item).ravel()[0]) for item in mat["file_list"].ravel()]


def import_stanford_dogs(root: str | Path, test_fraction: float = 0.2, val_fraction: float = 0.0, seed: int = 0):
    """The official tree Images/<wnid>-<Breed>/*.jpg, split by lists/{train,test}_list.mat if present."""
    root = _require_dir(root, "Stanford Dogs")
    images_dir = root / "Images"
    if not images_dir.is_dir():
        raise KibbleError(f"source.root={root}: no Images/ folder; expected the Stanford Dogs layout Images/<wnid>-<Breed>/")
    rows, display = [], {}
    for class_dir in sorted(p for p in images_dir.iterdir() if p.is_dir()):
        wnid, breed = _breed_name(class_dir.name)
        display[wnid] = breed
        for img in _images_under(class_dir):
            rel = img.relative_to(images_dir).as_posix()
            rows.append({"sample_id": rel, "path": f"Images/{rel}", "label": wnid, "breed_folder": class_dir.name})
    if not rows:
        raise KibbleError(f"source.root={root}: no images under Images/<wnid>-<Breed>/")
    frame = pd.DataFrame(rows)
    train_list, test_list = root / "lists" / "train_list.mat", root / "lists" / "test_list.mat"
    if train_list.is_file() and test_list.is_file():
        official = {f: "train" for f in _read_mat_list(train_list)}
        official.update({f: "test" for f in _read_mat_list(test_list)})
        frame["split"] = frame["sample_id"].map(official)
        unlisted = frame["split"].isna()
        if unlisted.any():
            raise KibbleError(
                f"{train_list.parent}: {int(unlisted.sum())} images (e.g. {frame.loc[unlisted, 'sample_id'].iloc[0]}) "
                "are in neither train_list.mat nor test_list.mat; remove them or the lists"
            )
        if val_fraction > 0:
            train = frame["split"] == "train"
            frame.loc[train, "split"] = stratified_split(frame.loc[train, "label"], {"val": val_fraction}, seed)
    else:
        frame["split"] = stratified_split(frame["label"], {"test": test_fraction, "val": val_fraction}, seed)
    names = sorted(frame["label"].unique())
    return frame, names, display, root


# manifest column -> the CSV column it is read from by default (source.<name>_column overrides it)
CSV_COLUMNS = {"path": "path", "label": "label", "split": "split", "sample_id": "sample_id", "group": "group", "true_label": "true_label"}
_TRUE_WORDS, _FALSE_WORDS = {"true", "1", "yes", "y", "t"}, {"false", "0", "no", "n", "f", ""}


def import_csv(
    path: str | Path,
    root: str | Path | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    seed: int = 0,
    path_column: str = "path",
    label_column: str = "label",
    split_column: str | None = "split",
    sample_id_column: str | None = "sample_id",
    group_column: str | None = "group",
    true_label_column: str | None = "true_label",
    valid_column: str | None = None,
):
    """A user's own table: path, label, optional sample_id/split/group/true_label and any metadata columns.

    Columns are found by name (`*_column`), so a table such as fastai's noisy_imagewoof.csv
    (`path, noisy_labels_5, ..., is_valid`) imports as it is: `label_column=noisy_labels_5
    true_label_column=noisy_labels_0 valid_column=is_valid`. An optional column left at its default name
    may be absent; a name the user chose must exist. `valid_column` (booleans) marks val rows, the rest
    train. Without a split, `test_fraction` of the labelled rows become test: frame.attrs["notes"] says so.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise KibbleError(f"source.path={path}: CSV file does not exist")
    chosen = {"path": path_column, "label": label_column, "split": split_column, "sample_id": sample_id_column,
              "group": group_column, "true_label": true_label_column}
    header = list(pd.read_csv(path, nrows=0).columns)
    wanted = _csv_columns(path, header, chosen, valid_column)
    # ids and class names are text: numeric labels stay '3' (not 3.0 once a pool row is empty), ids keep leading zeros
    frame = pd.read_csv(path, dtype={c: str for c in [*wanted.values(), valid_column] if c})
    frame = _rename_to_manifest(frame, wanted)
    notes: list[str] = []
    data_root = Path(root).expanduser().resolve() if root else path.parent.resolve()
    if "sample_id" not in frame.columns:
        frame.insert(0, "sample_id", frame["path"].astype(str))
    if valid_column:
        frame["split"] = np.where(_booleans(frame.pop(valid_column), path, valid_column), "val", "train")
        frame.loc[frame["label"].isna(), "split"] = "pool"
        notes.append(f"split from column {valid_column!r}: true -> val, false -> train (no test split; train and kfold test on val)")
    if "split" not in frame.columns:
        labelled = frame["label"].fillna("__pool__").astype(str)
        frame["split"] = stratified_split(labelled, {"test": test_fraction, "val": val_fraction}, seed)
        frame.loc[frame["label"].isna(), "split"] = "pool"
        notes.append(_random_split_note(frame, "no split column", test_fraction, val_fraction))
    names = sorted(frame["label"].dropna().astype(str).unique())
    frame.attrs["notes"] = notes
    return frame, names, {n: n for n in names}, data_root


def _csv_columns(path: Path, header: list[str], chosen: dict[str, str | None], valid_column: str | None) -> dict[str, str]:
    """manifest name -> CSV column for every column to read; one error line listing the CSV's columns."""
    listing = f"the CSV's columns: {', '.join(header)}"
    wanted: dict[str, str] = {}
    for name, column in chosen.items():
        if column in (None, ""):
            continue
        if column in header:
            wanted[name] = column
        elif name in ("path", "label") or column != CSV_COLUMNS[name]:
            raise KibbleError(f"{path}: no column {column!r} for source.{name}_column; {listing}")
    if valid_column:
        if valid_column not in header:
            raise KibbleError(f"{path}: no column {valid_column!r} for source.valid_column; {listing}")
        if "split" in wanted:
            raise KibbleError(f"{path}: both a split column ({wanted['split']!r}) and source.valid_column={valid_column}; "
                              "set source.split_column=null or drop source.valid_column")
    return wanted


def _rename_to_manifest(frame: pd.DataFrame, wanted: dict[str, str]) -> pd.DataFrame:
    """CSV columns -> manifest names; a CSV column already called like a manifest column it does not fill
    (e.g. `label` when label_column=label_clean) is kept as metadata under `csv_<name>`."""
    chosen = set(wanted.values())
    clashes = {name: f"csv_{name}" for name in wanted if name in frame.columns and wanted[name] != name and name not in chosen}
    frame = frame.rename(columns=clashes)
    return frame.rename(columns={column: name for name, column in wanted.items()})


def _booleans(values: pd.Series, path: Path, column: str) -> np.ndarray:
    words = values.fillna("").astype(str).str.strip().str.lower()
    bad = ~words.isin(_TRUE_WORDS | _FALSE_WORDS)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise KibbleError(f"{path}: row {row + 2}: column {column!r} has {values.iloc[row]!r}; expected true/false (or 1/0)")
    return words.isin(_TRUE_WORDS).to_numpy()


def _random_split_note(frame: pd.DataFrame, why: str, test_fraction: float, val_fraction: float) -> str:
    """The import summary's line for a split kibble drew at random (a user should know their test set)."""
    counts = frame.loc[frame["label"].notna(), "split"].value_counts()
    parts = [f"{int(counts.get('test', 0))} labelled images ({test_fraction:.0%}) became test (source.test_fraction)"]
    if val_fraction:
        parts.append(f"{int(counts.get('val', 0))} ({val_fraction:.0%}) val (source.val_fraction)")
    return f"{why}: " + ", ".join(parts) + ", stratified by label"


def inject_noise(frame: pd.DataFrame, class_names: list[str], rate: float, seed: int = 0) -> pd.DataFrame:
    """Flip exactly round(rate * n_train) train labels to a random other class; keep the truth in true_label."""
    if not 0.0 <= rate < 1.0:
        raise KibbleError(f"inject_noise.rate={rate}; use a fraction in [0, 1)")
    frame = frame.copy()
    if "true_label" not in frame.columns:
        frame["true_label"] = frame["label"]
    train_idx = np.flatnonzero((frame["split"] == "train").to_numpy() & frame["label"].notna().to_numpy())
    rng = np.random.default_rng(seed)
    flip = rng.choice(train_idx, size=int(round(rate * len(train_idx))), replace=False)
    for i in flip:
        current = frame.at[i, "label"]
        others = [c for c in class_names if c != current]
        frame.at[i, "label"] = others[rng.integers(len(others))]
    return frame


def make_pool(frame: pd.DataFrame, fraction: float | None = None, labels_per_class: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Turn labelled train rows into the unlabeled pool (split=pool, label null), keeping the truth in
    `true_label` for the simulated annotator. Either `labels_per_class` (keep N labelled train rows per
    class, a seed set, or none at all for a cold start; the rest go to the pool) or `fraction` (stratified share of train to the pool)."""
    if labels_per_class is not None and fraction:
        raise KibbleError("pool: give pool.fraction or pool.labels_per_class, not both")
    frame = frame.copy()
    if "true_label" not in frame.columns:
        frame["true_label"] = frame["label"]
    train = (frame["split"] == "train") & frame["label"].notna()
    idx = np.flatnonzero(train.to_numpy())
    rng = np.random.default_rng(seed)
    to_pool: list[int] = []
    if labels_per_class is not None:
        n = int(labels_per_class)
        if n < 0:
            raise KibbleError(f"pool.labels_per_class={labels_per_class}; keep 0 (a cold start: every train image to the pool) or more per class")
        by_class = pd.Series(idx).groupby(frame["label"].to_numpy()[idx])
        for label, rows in by_class:
            rows = rng.permutation(rows.to_numpy())
            if len(rows) <= n:
                raise KibbleError(f"pool.labels_per_class={n}: class {label!r} has only {len(rows)} train images; lower it")
            to_pool += rows[n:].tolist()
    elif fraction:
        if not 0.0 < float(fraction) < 1.0:
            raise KibbleError(f"pool.fraction={fraction}; use a fraction in (0, 1)")
        split = stratified_split(frame.loc[train, "label"], {"pool": float(fraction)}, seed)
        to_pool = idx[split == "pool"].tolist()
    frame.loc[to_pool, "label"] = None
    frame.loc[to_pool, "split"] = "pool"
    return frame


def pool_from_folder(folder: str | Path, class_names: list[str]) -> pd.DataFrame:
    """Every image under `folder` as a pool row (absolute path, sample_id `pool/<relative path>`).

    An image inside a subfolder named like a class gets that class as `true_label` (for simulations
    only; a model and the strategies never read it); otherwise true_label is empty.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise KibbleError(f"pool.folder={folder}: directory does not exist; point it at a folder of new images")
    folder = folder.resolve()
    images = _images_under(folder)
    if not images:
        raise KibbleError(f"pool.folder={folder}: no images found (looked for {sorted(IMAGE_SUFFIXES)})")
    known = set(class_names)
    rows = []
    for img in images:
        rel = img.relative_to(folder)
        top = rel.parts[0] if len(rel.parts) > 1 else None
        rows.append({"sample_id": f"pool/{rel.as_posix()}", "path": str(img), "label": None, "split": "pool",
                     "true_label": top if top in known else None})
    return pd.DataFrame(rows)
