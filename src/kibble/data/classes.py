"""classes.yaml: the ordered class list; the order is the index in every probability array.

People edit this file by hand (weights, groups, guidelines, targets), so a mistake in it is reported
as one line with the file and the line number (bad YAML, an entry that is not a mapping, an entry
without a name), never as a parser traceback. A missing file in an imported workspace is not fixed
by importing again: the advice says how to restore it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import yaml

from kibble import KibbleError
from kibble.io import atomic_write_yaml

log = logging.getLogger(__name__)
DEFAULT_TARGETS = {"per_class_f1": 0.80, "weighted_f1": 0.85}
DEFAULT_SEVERITY = {"same_group": 0.5, "other_group": 1.0}


def _weight(value: Any, path: Path, name: str) -> float:
    """An importance weight: a finite number >= 0 (one clear line otherwise)."""
    try:
        weight = float(value)
    except (TypeError, ValueError):
        weight = float("nan")
    if not np.isfinite(weight) or weight < 0:
        raise KibbleError(f"{path}: class {name!r} has weight {value!r}; weights must be numbers >= 0")
    return weight


_warned: set[tuple[str, tuple[str, ...]]] = set()


def unknown_target_classes(targets: dict[str, Any], names: list[str]) -> list[str]:
    """Names in `targets.class_f1` that are not classes (a gate would silently skip them)."""
    per_class = targets.get("class_f1") or {}
    return sorted(str(k) for k in (per_class if isinstance(per_class, dict) else {}) if str(k) not in set(names))


def _warn_unknown_targets(path: Path, targets: dict[str, Any], names: list[str]) -> None:
    """A `targets.class_f1` entry naming no class would be ignored by the gate: say so, once per file and set
    (`kibble eval`, the gate itself, refuses it)."""
    unknown = tuple(unknown_target_classes(targets, names))
    if unknown and (str(path), unknown) not in _warned:
        _warned.add((str(path), unknown))
        log.warning("%s: targets.class_f1 names unknown class(es) %s; their targets are ignored (use names from `classes:`)",
                    path, list(unknown[:5]))


@dataclass
class ClassInfo:
    name: str
    display_name: str | None = None
    weight: float = 1.0
    group: str | None = None
    guideline: str | None = None  # annotator guidance for this class (Label Studio hint, gallery)
    examples: list[str] = field(default_factory=list)  # example image paths for annotators


@dataclass
class ClassList:
    classes: list[ClassInfo]
    severity: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_SEVERITY))
    targets: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TARGETS))

    @classmethod
    def from_names(cls, names: Iterable[str], display_names: dict[str, str] | None = None) -> "ClassList":
        display_names = display_names or {}
        return cls([ClassInfo(str(n), display_names.get(str(n), str(n))) for n in names])

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def index(self) -> dict[str, int]:
        return {c.name: i for i, c in enumerate(self.classes)}

    def codes(self, labels: Any) -> np.ndarray:
        """Class index of each label (-1 for a missing or unknown one), hashed column-wise, not per row in Python."""
        return pd.Categorical(np.asarray(labels, dtype=object), categories=self.names).codes.astype(np.int64)

    @property
    def display_names(self) -> dict[str, str]:
        """name -> display name (the name itself when none is set)."""
        return {c.name: c.display_name or c.name for c in self.classes}

    def shown_names(self) -> dict[str, str]:
        """name -> what humans are shown: the display name, or `display name (id)` where the display name alone
        would not say which class (two classes share it, or it is another class's id)."""
        return shown_names(self.names, self.display_names)

    def __len__(self) -> int:
        return len(self.classes)

    def severity_matrix(self, base_dir: str | Path | None = None) -> np.ndarray:
        """K x K cost of predicting column j for true class i (0 on the diagonal).

        From `severity.matrix` (a K x K CSV with class names as header and index, relative to
        base_dir) when given, else from groups: `same_group` cost within a group, `other_group`
        across groups or for ungrouped classes.
        """
        names = self.names
        matrix_path = self.severity.get("matrix")
        if matrix_path:
            path = Path(matrix_path)
            if not path.is_absolute() and base_dir is not None:
                path = Path(base_dir) / path
            if not path.is_file():
                raise KibbleError(f"severity matrix {path} not found (classes.yaml `severity.matrix`)")
            frame = pd.read_csv(path, index_col=0)
            frame.index = frame.index.astype(str)
            frame.columns = frame.columns.astype(str)
            if sorted(frame.index) != sorted(names) or sorted(frame.columns) != sorted(names):
                raise KibbleError(f"{path}: rows and columns must be exactly the {len(names)} class names of classes.yaml")
            cost = frame.loc[names, names].to_numpy(dtype=float)
            if not np.isfinite(cost).all() or (cost < 0).any():
                raise KibbleError(f"{path}: costs must be finite and >= 0")
        else:
            same = float(self.severity.get("same_group", DEFAULT_SEVERITY["same_group"]))
            other = float(self.severity.get("other_group", DEFAULT_SEVERITY["other_group"]))
            groups = np.array([c.group if c.group is not None else f"\0{i}" for i, c in enumerate(self.classes)], dtype=object)
            cost = np.where(groups[:, None] == groups[None, :], same, other).astype(float)
        np.fill_diagonal(cost, 0.0)
        return cost

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": [{k: v for k, v in asdict(c).items() if v is not None and v != []} for c in self.classes],
            "severity": self.severity,
            "targets": self.targets,
        }

    def save(self, path: str | Path) -> Path:
        return atomic_write_yaml(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "ClassList":
        path = Path(path)
        if not path.is_file():
            raise KibbleError(_missing_file_advice(path))
        text, raw = _read_yaml(path)
        entries = raw.get("classes")
        if not isinstance(entries, list) or not entries:
            raise KibbleError(f"{path}{_line_of(text, 'classes')}: needs a non-empty `classes:` list of {{name: ...}} entries")
        infos = []
        for i, entry in enumerate(entries):
            if isinstance(entry, (str, int)) and not isinstance(entry, bool):
                entry = {"name": entry}
            if not isinstance(entry, dict):
                raise KibbleError(f"{path}{_line_of(text, 'classes', i)}: classes[{i}] is {_kind(entry)}, not a class; "
                                  "write `- name: <class>` (optionally with display_name, weight, group, guideline)")
            name = entry.get("name")
            if name is None or isinstance(name, (dict, list, bool)) or str(name).strip() == "":
                found = "has no `name`" if name is None or str(name).strip() == "" else f"has `name: {name!r}`, not a class name"
                raise KibbleError(f"{path}{_line_of(text, 'classes', i)}: classes[{i}] {found}; give every class a name (`- name: <class>`)")
            infos.append(
                ClassInfo(
                    name=str(name),
                    display_name=entry.get("display_name") or str(name),
                    weight=_weight(entry.get("weight", 1.0), path, name),
                    group=entry.get("group"),
                    guideline=entry.get("guideline"),
                    examples=[str(e) for e in entry.get("examples") or []],
                )
            )
        names = [c.name for c in infos]
        unweighted = [str(e["name"] if isinstance(e, dict) else e) for e in entries if not isinstance(e, dict) or e.get("weight") is None]
        if unweighted and len(unweighted) < len(entries):
            raise KibbleError(
                f"{path}: classes {unweighted[:5]}{' ...' if len(unweighted) > 5 else ''} have no `weight` while others do; "
                "give every class an importance weight (or none, for equal weights)"
            )
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise KibbleError(f"{path}: duplicate class names {dupes}; each class must appear once")
        for key in ("targets", "severity"):
            if raw.get(key) is not None and not isinstance(raw.get(key), dict):
                raise KibbleError(f"{path}{_line_of(text, key)}: `{key}:` is {_kind(raw[key])}; it must be a mapping (e.g. {key}: {{...}})")
        targets = {**DEFAULT_TARGETS, **(raw.get("targets") or {})}
        if targets.get("class_f1") is not None and not isinstance(targets["class_f1"], dict):
            raise KibbleError(f"{path}: `targets.class_f1` is {_kind(targets['class_f1'])}; use a mapping of class name -> F1 target")
        _warn_unknown_targets(path, targets, names)
        return cls(infos, severity=dict(raw.get("severity") or DEFAULT_SEVERITY), targets=targets)


def _fold(text: str) -> str:
    """A display name as matched from human input: case and runs of spaces ignored."""
    return " ".join(str(text).split()).casefold()


def shown_names(names: list[str], display_names: Mapping[str, str] | None = None) -> dict[str, str]:
    """name -> the label humans see (queue.csv name columns, Label Studio buttons and header, reports): the
    display name, unless two classes share it (case ignored) or it is another class's id; then `display (id)`."""
    display = {n: str((display_names or {}).get(n) or n) for n in names}
    folded = pd.Series([_fold(d) for d in display.values()], dtype=object)
    shared = set(folded[folded.duplicated(keep=False)])
    ids = set(names)
    return {n: f"{d} ({n})" if d != n and (_fold(d) in shared or d in ids) else d for n, d in display.items()}


def class_lookup(values: Iterable[Any], names: list[str], display_names: Mapping[str, str] | None = None
                 ) -> tuple[dict[str, str], dict[str, list[str]]]:
    """What humans typed -> class ids, for the distinct `values` only (call it on `pd.unique` of a column).

    A value is a class id (exact match, surrounding spaces ignored) or a display name (case and spacing ignored;
    `display (id)` as `shown_names` writes it works too). Returns (value -> id for every value that names one
    class, value -> [ids] for display names that several classes share); other values are in neither.
    """
    ids = set(names)
    by_name: dict[str, list[str]] = {}
    for name in names:
        display = str((display_names or {}).get(name) or name)
        for key in {_fold(display), _fold(f"{display} ({name})")}:
            hits = by_name.setdefault(key, [])
            if name not in hits:
                hits.append(name)
    found: dict[str, str] = {}
    ambiguous: dict[str, list[str]] = {}
    for value in values:
        if not isinstance(value, str):
            continue
        text = value.strip()
        if text in ids:
            found[value] = text
            continue
        hits = by_name.get(_fold(text), [])
        if len(hits) == 1:
            found[value] = hits[0]
        elif hits:
            ambiguous[value] = hits
    return found, ambiguous


def _kind(value: Any) -> str:
    return {list: "a list", dict: "a mapping", float: "a number", bool: "a boolean"}.get(type(value), f"a {type(value).__name__}")


def _read_yaml(path: Path) -> tuple[str, dict[str, Any]]:
    """(text, top-level mapping) of a classes file; one line with the line number when it is not valid YAML."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise KibbleError(f"{path}: not UTF-8 text (byte {err.start}); save classes.yaml as UTF-8") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        opened = getattr(err, "context_mark", None)
        if mark is not None and opened is not None and opened.line != mark.line:
            where += f" (in what opens at line {opened.line + 1})"
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise KibbleError(f"{path}{where}: not valid YAML ({problem}); fix that line (indentation, quotes around names with `:`)") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise KibbleError(f"{path} line 1: the file is {_kind(raw)}; classes.yaml is a mapping with a `classes:` list of {{name: ...}} entries")
    return text, raw


def _line_of(text: str, key: str, item: int | None = None) -> str:
    """' line N' of top-level `key` (or of its item-th list entry) in the YAML text; '' when not found."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return ""
    if not isinstance(root, yaml.MappingNode):
        return ""
    for key_node, value in root.value:
        if key_node.value != key:
            continue
        node = key_node
        if item is not None and isinstance(value, yaml.SequenceNode) and item < len(value.value):
            node = value.value[item]
        return f" line {node.start_mark.line + 1}"
    return ""


def _missing_file_advice(path: Path) -> str:
    """What to do about a missing classes.yaml: import a new workspace, but never re-import an imported one
    (the class order is the index of every stored prediction; the file is restored, not regenerated)."""
    if not (path.parent / "manifest.parquet").is_file():
        return f"{path}: classes file not found; run `kibble import workspace={path.parent}` to create the workspace"
    sidecars = sorted(path.parent.glob("rounds/*/oof.meta.json"))
    order = f" ({sidecars[-1]} lists it as class_names)" if sidecars else ""
    return (f"{path}: classes file not found in the imported workspace {path.parent}; restore it from a backup or version "
            f"control, keeping the class order{order}; re-importing is not needed")
