"""Shipped taxonomies: the 120 Stanford Dogs breeds and Imagewoof's 10 with breed groups, picked by import."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import DOG_BREEDS, import_workspace, write_noise_jpegs
from kibble import KibbleError
from kibble.data.classes import ClassList
from kibble.data.taxonomy import load_taxonomy, match_taxonomy, shipped_taxonomies, taxonomy_for, wnid_of
from kibble.io import read_json
from kibble.paths import Workspace

IMAGEWOOF = ["n02086240", "n02087394", "n02088364", "n02089973", "n02093754", "n02096294", "n02099601", "n02105641", "n02111889", "n02115641"]
MALAMUTE, HUSKY, SHELTIE = "n02110063", "n02110185", "n02105855"


def test_stanford_dogs_taxonomy():
    dogs = load_taxonomy("stanford_dogs")
    assert len(dogs) == 120 and len(set(dogs.names)) == 120 and all(wnid_of(n) == n for n in dogs.names)
    groups = {c.group for c in dogs.classes}
    assert groups == {"toy", "hound", "terrier", "sporting", "working", "herding", "non_sporting", "spitz", "wild"}
    by_name = {c.display_name: c for c in dogs.classes}
    assert by_name["malamute"].group == by_name["Siberian husky"].group == by_name["Samoyed"].group == "spitz"
    assert by_name["Shetland sheepdog"].group == by_name["collie"].group == "herding"
    assert by_name["golden retriever"].group == "sporting" and by_name["Chihuahua"].group == "toy"
    cost = dogs.severity_matrix()
    i = dogs.index
    assert cost[i[MALAMUTE], i[HUSKY]] < cost[i[MALAMUTE], i[SHELTIE]]
    assert all(c.weight == 1.0 for c in dogs.classes) and dogs.targets == {"per_class_f1": 0.8, "weighted_f1": 0.85}


def test_imagewoof_taxonomy_agrees_with_stanford_dogs():
    woof, dogs = load_taxonomy("imagewoof"), load_taxonomy("stanford_dogs")
    assert sorted(woof.names) == IMAGEWOOF
    full = {c.name: c for c in dogs.classes}
    for c in woof.classes:
        assert (c.display_name, c.group) == (full[c.name].display_name, full[c.name].group)
    assert set(shipped_taxonomies()) >= {"stanford_dogs", "imagewoof"}


def test_matching_by_wnid_or_folder_name():
    name, matched = match_taxonomy(sorted(IMAGEWOOF))
    assert name == "imagewoof" and matched.names == sorted(IMAGEWOOF)  # exact match wins over the superset
    folders = ["n02110063-malamute", "n02110185-Siberian_husky", "n02105855-Shetland_sheepdog"]
    name, matched = match_taxonomy(folders)
    assert name == "stanford_dogs" and matched.names == folders  # imported names and order are kept
    assert [c.group for c in matched.classes] == ["spitz", "spitz", "herding"]
    assert [c.display_name for c in matched.classes] == ["malamute", "Siberian husky", "Shetland sheepdog"]
    assert match_taxonomy(["cat", "dog"]) is None
    assert match_taxonomy(["n02110063", "n99999999"]) is None  # not every class is a known breed
    plain, used = taxonomy_for(["n02110063", "n02110185"], taxonomy="none")
    assert used is None and plain.classes[0].group is None


def test_explicit_taxonomy(tmp_path: Path):
    custom = tmp_path / "mine.yaml"
    custom.write_text("classes:\n- {name: cat, group: felid, weight: 2}\n- {name: dog, group: canid, weight: 1}\n")
    classes, used = taxonomy_for(["cat", "dog"], taxonomy=str(custom))
    assert used == str(custom) and [c.weight for c in classes.classes] == [2.0, 1.0]
    with pytest.raises(KibbleError, match=r"taxonomy=stanford_dogs: imported classes \['cat'\] are not in it"):
        taxonomy_for(["cat", "n02110063"], taxonomy="stanford_dogs")
    with pytest.raises(KibbleError, match="neither a shipped taxonomy"):
        taxonomy_for(["cat"], taxonomy=str(tmp_path / "nope.yaml"))


def test_import_uses_the_matching_taxonomy(stanford_dogs_tree, tmp_path: Path):
    root = stanford_dogs_tree(per_breed=3, n_test=1)
    ws = import_workspace(tmp_path / "dogs", ["source=stanford_dogs", f"source.root={root}", "source.val_fraction=0"])
    classes = ClassList.load(Workspace(ws).classes)
    assert classes.names == [b.split("-")[0] for b in DOG_BREEDS]
    assert [c.group for c in classes.classes] == ["toy", "toy", "toy"]
    assert read_json(ws / "import_report.json")["taxonomy"] == "stanford_dogs"
    # Imagewoof as an image folder (class folders named by wnid): the 10-breed taxonomy
    folder = tmp_path / "woof"
    for i, wnid in enumerate(IMAGEWOOF):
        write_noise_jpegs(folder / "train" / wnid, ["a.jpg"], seed=i)
        write_noise_jpegs(folder / "val" / wnid, ["b.jpg"], seed=100 + i)
    ws = import_workspace(tmp_path / "woof_ws", ["source=image_folder", f"source.root={folder}"])
    classes = ClassList.load(Workspace(ws).classes)
    assert read_json(ws / "import_report.json")["taxonomy"] == "imagewoof"
    assert classes.classes[classes.index["n02111889"]].group == "spitz" and classes.classes[0].display_name == "Shih-Tzu"
    # opting out
    ws = import_workspace(tmp_path / "plain_ws", ["source=image_folder", f"source.root={folder}", "taxonomy=none"])
    assert ClassList.load(Workspace(ws).classes).classes[0].group is None
