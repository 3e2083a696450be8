"""The features-mode embedding cache: a killed embedding resumes after its last chunk, replaced
images are embedded again, copies and old caches are not; device and precision choices."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import kibble.data.features as features
from helpers import write_noise_jpegs
from kibble import KibbleError
from kibble.data.features import Embedder

N_IMAGES = 10


def make_embedder(**kwargs) -> Embedder:
    """A tiny random-init backbone, the same weights every time (seeded), on the CPU unless told."""
    torch.manual_seed(0)
    embedder = Embedder("test_resnet", "none", input_size=32, batch_size=2, num_workers=0, **{"device": "cpu", **kwargs})
    embedder.model  # built now, under the seed
    return embedder


@pytest.fixture
def images(tmp_path: Path) -> tuple[pd.DataFrame, Path]:
    root = tmp_path / "images"
    names = [f"img_{i:02d}.jpg" for i in range(N_IMAGES)]
    write_noise_jpegs(root, names, size=32)
    rows = pd.DataFrame({"sample_id": [f"s{i}" for i in range(N_IMAGES)], "path": names, "label": "a"})
    return rows, root


@pytest.fixture
def embedded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the images Embedder.batches embeds (one entry per batch)."""
    counts: list[int] = []
    original = Embedder.batches

    def counting(self, rows, data_root):
        for out in original(self, rows, data_root):
            counts.append(len(out))
            yield out

    monkeypatch.setattr(Embedder, "batches", counting)
    return counts


def cache_folder(cache: Path) -> Path:
    (folder,) = [p for p in cache.iterdir() if p.is_dir()]
    return folder


def test_killed_embedding_resumes_after_its_last_chunk(images, embedded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    rows, root = images
    reference_ids, reference = make_embedder().features_for(rows, root, tmp_path / "reference", progress=False)

    original_write = features.write_chunk
    calls = []

    def crash_on_second_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the kill arrives while the second chunk is being written
        return original_write(*args, **kwargs)

    monkeypatch.setattr(features, "write_chunk", crash_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        make_embedder(chunk_size=4).features_for(rows, root, tmp_path / "cache", progress=False)
    folder = cache_folder(tmp_path / "cache")
    assert len(list((folder / "chunks").glob("*.npz"))) == 1 and not (folder / "features.npy").exists()

    monkeypatch.setattr(features, "write_chunk", original_write)
    embedded.clear()
    ids, matrix = make_embedder(chunk_size=4).features_for(rows, root, tmp_path / "cache", progress=False)
    assert sum(embedded) == N_IMAGES - 4  # only what the first chunk did not hold
    assert ids == reference_ids
    np.testing.assert_allclose(matrix, reference, rtol=1e-5, atol=1e-6)
    # consolidated into the plain layout, chunks gone, and a further run embeds nothing
    assert not list((folder / "chunks").glob("*.npz"))
    assert pd.read_parquet(folder / "sample_ids.parquet")["sample_id"].tolist() == ids
    embedded.clear()
    _, again = make_embedder().features_for(rows, root, tmp_path / "cache", progress=False)
    assert sum(embedded) == 0
    np.testing.assert_array_equal(again, matrix)


def test_replaced_image_is_embedded_again(images, embedded, tmp_path: Path):
    rows, root = images
    _, before = make_embedder().features_for(rows, root, tmp_path / "cache", progress=False)
    write_noise_jpegs(root, ["img_03.jpg"], size=48, seed=7)  # same sample_id, another picture
    embedded.clear()
    _, after = make_embedder().features_for(rows, root, tmp_path / "cache", progress=False)
    assert sum(embedded) == 1
    assert not np.allclose(after[3], before[3])
    np.testing.assert_array_equal(np.delete(after, 3, axis=0), np.delete(before, 3, axis=0))


def test_same_image_with_a_new_mtime_is_not_embedded_again(images, embedded, tmp_path: Path):
    """`cp -r` of a workspace gives every file a new mtime; the fingerprint shows nothing changed."""
    rows, root = images
    make_embedder().features_for(rows, root, tmp_path / "cache", progress=False)
    for path in root.iterdir():
        os.utime(path, ns=(1_000_000_000_123_456_789, 1_000_000_000_123_456_789))
    embedded.clear()
    make_embedder().features_for(rows, root, tmp_path / "cache", progress=False)
    assert sum(embedded) == 0
    stored = pd.read_parquet(cache_folder(tmp_path / "cache") / "sample_ids.parquet")
    assert (stored["file_mtime_ns"] == 1_000_000_000_123_456_789).all()  # recorded exactly: next time a stat suffices


def test_cache_written_before_chunks_is_read_and_gets_file_stats(images, embedded, tmp_path: Path):
    rows, root = images
    embedder = make_embedder()
    folder = tmp_path / "cache" / embedder.cache_key(str(root.resolve()))
    folder.mkdir(parents=True)
    old = np.arange(N_IMAGES * embedder.model.num_features, dtype=np.float32).reshape(N_IMAGES, -1)
    np.save(folder / "features.npy", old)
    rows[["sample_id"]].to_parquet(folder / "sample_ids.parquet", index=False)

    ids, matrix = embedder.features_for(rows.iloc[::-1], root, tmp_path / "cache", progress=False)
    assert sum(embedded) == 0
    np.testing.assert_array_equal(matrix, old[::-1])
    stored = pd.read_parquet(folder / "sample_ids.parquet")
    assert stored["file_size"].notna().all() and stored["file_fingerprint"].notna().all()


def test_bf16_autocast_on_cpu_gives_close_embeddings(images):
    rows, root = images
    fp32 = make_embedder(precision="32").embed(rows, root, progress=False)
    bf16 = make_embedder(precision="bf16").embed(rows, root, progress=False)
    assert make_embedder(precision="bf16").precision_name == "bf16"
    assert np.abs(bf16 - fp32).max() <= 0.05 * np.abs(fp32).max()


def test_auto_device_and_precision_resolve_to_cpu_fp32_without_a_gpu(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    embedder = Embedder("test_resnet", device="auto", precision="auto")
    assert embedder.device.type == "cpu" and embedder.dtype is None


def test_bad_device_or_precision_names_the_fix(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(KibbleError, match="embedder.device=cuda: torch sees no GPU"):
        Embedder("test_resnet", device="cuda")
    with pytest.raises(KibbleError, match="embedder.device='tpu'"):
        Embedder("test_resnet", device="tpu")
    with pytest.raises(KibbleError, match="embedder.precision='half': use auto, 32, bf16 or 16"):
        Embedder("test_resnet", precision="half")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_embedding_uses_autocast_and_matches_the_cpu(images, tmp_path: Path):
    rows, root = images
    gpu = make_embedder(device="auto")
    assert gpu.device.type == "cuda" and gpu.dtype in (torch.bfloat16, torch.float16)
    _, on_gpu = gpu.features_for(rows, root, tmp_path / "gpu", progress=False)
    cpu = make_embedder(device="cpu").embed(rows, root, progress=False)
    assert np.abs(on_gpu - cpu).max() <= 0.05 * np.abs(cpu).max()
