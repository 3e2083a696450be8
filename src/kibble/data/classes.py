"""classes.yaml: the ordered class list; the order is the index in every probability array."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from kibble import KibbleError
from kibble.io import atomic_write_yaml

DEFAULT_TARGETS = {"per_class_f1": 0.80, "weighted_f1": 0.85}
DEFAULT_SEVERITY = {"same_group": 0.5, "other_group": 1.0}


@dataclass
class ClassInfo:
    name: str
    display_name: str | None = None
    weight: float = 1.0
    group: str | None = None


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

    def __len__(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": [asdict(c) for c in self.classes],
            "severity": self.severity,
            "targets": self.targets,
        }

    def save(self, path: str | Path) -> Path:
        return atomic_write_yaml(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "ClassList":
        path = Path(path)
        if not path.is_file():
            raise KibbleError(f"{path}: classes file not found; run `kibble import` to create it")
        raw = yaml.safe_load(path.read_text()) or {}
        entries = raw.get("classes")
        if not isinstance(entries, list) or not entries:
            raise KibbleError(f"{path}: needs a non-empty `classes:` list of {{name: ...}} entries")
        infos = []
        for i, entry in enumerate(entries):
            if isinstance(entry, str):
                entry = {"name": entry}
            if "name" not in entry:
                raise KibbleError(f"{path}: classes[{i}] has no `name`")
            infos.append(
                ClassInfo(
                    name=str(entry["name"]),
                    display_name=entry.get("display_name") or str(entry["name"]),
                    weight=float(entry.get("weight", 1.0)),
                    group=entry.get("group"),
                )
            )
        names = [c.name for c in infos]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise KibbleError(f"{path}: duplicate class names {dupes}; each class must appear once")
        return cls(
            infos,
            severity=dict(raw.get("severity") or DEFAULT_SEVERITY),
            targets={**DEFAULT_TARGETS, **(raw.get("targets") or {})},
        )
