"""Shipped class taxonomies (classes.yaml files with groups, weights and targets) and matching them.

`kibble import` calls `taxonomy_for(names, ...)`: when the imported class names are WordNet ids
(`n02085620`, as `source=stanford_dogs` names them) or Stanford Dogs folder names
(`n02085620-Chihuahua`, as `source=image_folder` names them) and all of them are in a shipped
taxonomy, the workspace's classes.yaml takes that taxonomy's display names, breed groups (so error
severity knows that malamute -> Siberian husky is milder than malamute -> Shetland sheepdog),
weights, severity and targets. The imported names and their order are kept: they index every
probability array.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from kibble import KibbleError
from kibble.data.classes import ClassList

TAXONOMY_DIR = Path(__file__).resolve().parent / "taxonomies"
_WNID = re.compile(r"^(n\d{8})(?:-.*)?$")


def shipped_taxonomies() -> dict[str, Path]:
    """name -> path of every shipped taxonomy (e.g. stanford_dogs, imagewoof)."""
    return {p.stem: p for p in sorted(TAXONOMY_DIR.glob("*.yaml"))}


def load_taxonomy(name_or_path: str | Path) -> ClassList:
    """A shipped taxonomy by name, or any classes.yaml by path."""
    shipped = shipped_taxonomies()
    if str(name_or_path) in shipped:
        return ClassList.load(shipped[str(name_or_path)])
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise KibbleError(f"taxonomy={name_or_path}: neither a shipped taxonomy {sorted(shipped)} nor an existing classes.yaml")
    return ClassList.load(path)


def wnid_of(name: str) -> str | None:
    """The WordNet id of a class name `n02085620` or `n02085620-Chihuahua`; None for other names."""
    match = _WNID.match(str(name))
    return match.group(1) if match else None


def apply_taxonomy(names: Sequence[str], taxonomy: ClassList, key=lambda n: n) -> ClassList | None:
    """The taxonomy's entries renamed to `names` (in that order), or None unless every name is covered."""
    by_key = {key(c.name): c for c in taxonomy.classes}
    keys = [key(n) for n in names]
    if any(k is None or k not in by_key for k in keys):
        return None
    classes = [replace(by_key[k], name=str(n)) for n, k in zip(names, keys)]
    return ClassList(classes, severity=dict(taxonomy.severity), targets=dict(taxonomy.targets))


def match_taxonomy(names: Sequence[str]) -> tuple[str, ClassList] | None:
    """(taxonomy name, class list) of the smallest shipped taxonomy covering every name, else None.

    Exact matches win (Imagewoof's 10 breeds match imagewoof.yaml); a subset of the 120 Stanford
    Dogs breeds still gets that taxonomy's groups.
    """
    if not names or any(wnid_of(n) is None for n in names):
        return None
    candidates = []
    for name, path in shipped_taxonomies().items():
        taxonomy = ClassList.load(path)
        matched = apply_taxonomy(names, taxonomy, key=wnid_of)
        if matched is not None:
            candidates.append((len(taxonomy), name, matched))
    if not candidates:
        return None
    _, name, matched = min(candidates, key=lambda c: c[0])
    return name, matched


def taxonomy_for(names: Sequence[str], display_names: dict[str, str] | None = None, taxonomy: str | None = "auto") -> tuple[ClassList, str | None]:
    """The workspace's ClassList for imported `names`: `taxonomy=auto` (a matching shipped one, else plain),
    `none` (plain names), or a shipped name / classes.yaml path that must cover every name."""
    plain = ClassList.from_names(names, display_names)
    if taxonomy in (None, "none", "null", False):
        return plain, None
    if taxonomy == "auto":
        found = match_taxonomy(names)
        return (found[1], found[0]) if found else (plain, None)
    chosen = load_taxonomy(str(taxonomy))
    matched = apply_taxonomy(names, chosen) or apply_taxonomy(names, chosen, key=wnid_of)
    if matched is None:
        known = set(chosen.names)
        missing = [n for n in names if n not in known and wnid_of(n) not in known]
        raise KibbleError(f"taxonomy={taxonomy}: imported classes {missing[:5]} are not in it; fix the taxonomy or use taxonomy=auto")
    return matched, str(taxonomy)
