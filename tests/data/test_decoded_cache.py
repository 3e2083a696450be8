"""The decoded image cache: built once, resumed after a crash, refreshed when a file changes, and a
loader over it yields what the cold (JPEG-decoding) loader yields."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import import_workspace
from kibble import KibbleError
from kibble.data import decoded_cache
from kibble.data.datamodule import ManifestDataModule
from kibble.data.decoded_cache import DecodedCache, decode_for_cache

SIZES = [(60, 40), (40, 60), (30, 30), (90, 45), (24, 24), (50, 70), (33, 66)]  # (width, height)


def write_jpegs(folder: Path, sizes=SIZES, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (w, h) in enumerate(sizes):
        path = folder / f"img_{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=95)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def tiny_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes x 8 JPEGs of mixed aspect ratios, imported as an image-folder workspace."""
    root = tmp_path_factory.mktemp("cache_ws")
    sizes = [(48, 36), (36, 48), (40, 40), (64, 40)] * 2
    for c, name in enumerate(["ant", "bee", "cat"]):
        write_jpegs(root / "images" / name, sizes, seed=c)
    return import_workspace(root / "ws", ["source=image_folder", f"source.root={root / 'images'}", "source.test_fraction=0.25"])


DATA_CONFIG = {"input_size": (3, 32, 32), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "crop_pct": 0.875}


def datamodule(ws: Path, **kwargs) -> ManifestDataModule:
    kwargs = {"num_workers": 0, "batch_size": 8, "inner_val_fraction": 0.0, **kwargs}
    dm = ManifestDataModule(str(ws), **kwargs).configure(DATA_CONFIG)
    dm.setup("fit")
    return dm


def test_cache_stores_each_image_upright_with_the_shorter_side_resized(tmp_path: Path):
    paths = write_jpegs(tmp_path / "img")
    cache = DecodedCache(tmp_path / "cache", side=36)
    images = cache.images_for(paths)
    assert cache.decoded == len(paths) and len(images) == len(paths)
    for (w, h), path, image in zip(SIZES, paths, images):
        assert image.dtype == np.uint8 and min(image.shape[:2]) == 36
        assert image.shape[1] / image.shape[0] == pytest.approx(w / h, rel=0.05)  # aspect kept
        np.testing.assert_array_equal(image, decode_for_cache(path, 36))
    again = DecodedCache(tmp_path / "cache", side=36)
    again.images_for(paths)
    assert again.decoded == 0  # built once
    assert len(pickle.dumps(images)) < 4096  # workers get shard names, not pixels


def test_interrupted_build_resumes_with_the_finished_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    paths = write_jpegs(tmp_path / "img")
    calls = {"n": 0}
    real = decoded_cache.decode_for_cache

    def dies_on_the_fifth(path, side):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # what a kill looks like to the build
        return real(path, side)

    monkeypatch.setattr(decoded_cache, "decode_for_cache", dies_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        DecodedCache(tmp_path / "cache", side=20, chunk_images=2).images_for(paths)
    monkeypatch.undo()
    cache_dir = tmp_path / "cache" / f"v{decoded_cache.VERSION}-side20"
    (cache_dir / "shard-crashedbeforeindex.npy").write_bytes(b"partial")  # a shard whose index write never happened

    cache = DecodedCache(tmp_path / "cache", side=20, chunk_images=2)
    images = cache.images_for(paths)
    assert cache.decoded == len(paths) - 4  # the two finished shards were kept
    assert not (cache_dir / "shard-crashedbeforeindex.npy").exists()
    for path, image in zip(paths, images):
        np.testing.assert_array_equal(image, decode_for_cache(path, 20))


def test_a_replaced_image_is_decoded_again(tmp_path: Path):
    paths = write_jpegs(tmp_path / "img")
    DecodedCache(tmp_path / "cache", side=20).images_for(paths)
    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(paths[2])
    st = os.stat(paths[2])
    os.utime(paths[2], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    cache = DecodedCache(tmp_path / "cache", side=20)
    images = cache.images_for(paths)
    assert cache.decoded == 1
    assert images[2].shape == (20, 30, 3) and abs(float(images[2].mean()) - 200) < 2
    np.testing.assert_array_equal(images[0], decode_for_cache(paths[0], 20))


def test_unreadable_image_is_one_line_naming_the_file(tmp_path: Path):
    paths = write_jpegs(tmp_path / "img")
    bad = tmp_path / "img" / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(KibbleError, match=r"broken\.jpg: image cannot be decoded .*on_bad_image=skip") as err:
        DecodedCache(tmp_path / "cache", side=20, chunk_images=2).images_for([*paths[:3], bad, *paths[3:]])
    assert "\n" not in str(err.value)
    with pytest.raises(KibbleError, match=r"gone\.jpg: image file is missing"):
        DecodedCache(tmp_path / "cache", side=20).images_for([tmp_path / "gone.jpg"])


def test_cached_loader_yields_what_the_cold_loader_yields(tiny_workspace: Path, tmp_path: Path):
    cold = datamodule(tiny_workspace)
    cached = datamodule(tiny_workspace, decoded_cache=True, decoded_cache_dir=str(tmp_path / "cache"))
    x_cold, y_cold, i_cold = next(iter(cold.test_dataloader()))
    x_cached, y_cached, i_cached = next(iter(cached.test_dataloader()))
    assert x_cold.shape == x_cached.shape == (len(y_cold), 3, 32, 32)
    assert torch.equal(y_cold, y_cached) and torch.equal(i_cold, i_cached)
    # eval: the cache holds the image at the eval resize, so the centre crop sees nearly the same pixels
    assert (x_cold - x_cached).abs().mean() < 0.05
    for loader in (cold.train_dataloader(), cached.train_dataloader()):
        xs, ys, _ = zip(*loader)
        assert torch.cat(xs).shape[1:] == (3, 32, 32) and torch.cat(xs).dtype == torch.float32
    assert sorted(torch.cat([b[1] for b in cold.train_dataloader()]).tolist()) == sorted(torch.cat(ys).tolist())
    assert (tmp_path / "cache" / f"v{decoded_cache.VERSION}-side36" / "index.parquet").is_file()


def test_cache_through_the_config_with_workers(tiny_workspace: Path, tmp_path: Path, compose):
    """data.decoded_cache=true from the real conf/, built by a worker, read by persistent workers."""
    import hydra

    cfg = compose("train", [f"workspace={tiny_workspace}", "data.num_workers=1", "data.decoded_cache=true",
                            f"data.decoded_cache_dir={tmp_path / 'cache'}", "data.normalize_on_device=true", "data.batch_size=8"])
    dm = hydra.utils.instantiate(cfg.data).configure(DATA_CONFIG)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.num_workers == 1 and loader.persistent_workers
    x, y, _ = next(iter(loader))
    assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32)
    x = dm.on_after_batch_transfer([x, y, _], 0)[0]
    assert x.dtype == torch.float32 and -3 < float(x.min()) < float(x.max()) < 3


def test_train_reads_the_cache_and_transforms_on_the_device(digits_workspace: Path, tmp_path: Path, compose):
    """kibble train through Lightning: worker-built cache, uint8 batches, jitter + normalisation in on_after_batch_transfer."""
    from helpers import TINY_MODEL, TINY_TRAIN
    from kibble.tasks import train

    seen = []
    original = ManifestDataModule.on_after_batch_transfer

    def spy(self, batch, dataloader_idx):
        out = original(self, batch, dataloader_idx)
        seen.append((batch[0].dtype, out[0].dtype, bool(self.trainer.training)))
        return out

    overrides = [f"workspace={digits_workspace}", *TINY_TRAIN, *TINY_MODEL, "data=default", "data.num_workers=1", "data.decoded_cache=true",
                 f"data.decoded_cache_dir={tmp_path / 'cache'}", "data.normalize_on_device=true", "data.augment.jitter_on_device=true"]
    ManifestDataModule.on_after_batch_transfer = spy
    try:
        result = train.run(compose("train", overrides))
    finally:
        ManifestDataModule.on_after_batch_transfer = original
    assert result["n_train"] > 0 and 0.0 <= result["test_accuracy"] <= 1.0
    assert (torch.uint8, torch.float32, True) in seen and (torch.uint8, torch.float32, False) in seen
    assert list((tmp_path / "cache").glob("v*-side*/shard-*.npy"))
