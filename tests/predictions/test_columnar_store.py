"""The columnar prediction store: fixed-size list columns round-trip, float16 storage, the legacy layout still reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kibble import KibbleError
from kibble.io import atomic_write_json
from kibble.predictions import store
from kibble.predictions.oof import ensemble_mean
from kibble.predictions.store import make_frame, read_store, sidecar_path, stack, write_store

K = 6
NAMES = [f"c{i}" for i in range(K)]
META = {"class_names": NAMES, "complete": True}


def softmax_rows(n: int = 50, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(K), size=n).astype(np.float32)


def frame_of(probs: np.ndarray, **extra) -> pd.DataFrame:
    ids = [f"img_{i:03d}" for i in range(len(probs))]
    return make_frame(ids, probs, [NAMES[i % K] for i in range(len(probs))], 1, **extra)


def write_legacy(path, probs: np.ndarray, embeddings: np.ndarray | None = None) -> None:
    """A store as write_store wrote it before the columnar layout: list columns of per-row numpy arrays."""
    frame = pd.DataFrame({"sample_id": [f"img_{i:03d}" for i in range(len(probs))], "fold": 0,
                          "given_label": [NAMES[0]] * len(probs), "probs": list(probs)})
    if embeddings is not None:
        frame["embedding"] = list(embeddings)
    frame.to_parquet(path, index=False)
    atomic_write_json(sidecar_path(path), META)


def test_float32_store_round_trips_exactly_as_fixed_size_lists(tmp_path):
    probs = softmax_rows()
    emb = np.random.default_rng(1).normal(size=(len(probs), 3)).astype(np.float32)
    path = write_store(tmp_path / "p.parquet", frame_of(probs, logits=np.log(probs), embeddings=emb), META)
    schema = pq.read_schema(path)
    assert schema.field("probs").type == pa.list_(pa.field("element", pa.float32()), K)
    frame, meta = read_store(path, NAMES)
    assert meta["dtype"] == "float32"
    out = stack(frame)
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == probs.shape
    np.testing.assert_array_equal(out, probs)
    np.testing.assert_array_equal(stack(frame, "embedding"), emb)
    np.testing.assert_array_equal(stack(frame, "logits"), np.log(probs))
    assert np.shares_memory(stack(frame), stack(frame))  # a view of the column, not a copy per call
    assert frame["sample_id"].tolist() == [f"img_{i:03d}" for i in range(len(probs))]


def test_float16_storage_halves_the_file_and_reads_back_as_float32(tmp_path):
    probs = softmax_rows(400)
    full = write_store(tmp_path / "f32.parquet", frame_of(probs), META)
    half = write_store(tmp_path / "f16.parquet", frame_of(probs), {**META, "dtype": "float16"})
    assert pq.read_schema(half).field("probs").type.value_type == pa.float16()
    frame, meta = read_store(half, NAMES)
    assert meta["dtype"] == "float16"
    out = stack(frame)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, probs, rtol=2 ** -11, atol=1e-7)
    assert half.stat().st_size < 0.7 * full.stat().st_size
    with pytest.raises(KibbleError, match="float16's range"):
        write_store(tmp_path / "big.parquet", frame_of(probs, logits=np.full(probs.shape, 1e5)), META, dtype="float16")
    with pytest.raises(KibbleError, match="dtype='float64'"):
        write_store(tmp_path / "x.parquet", frame_of(probs), META, dtype="float64")


def test_legacy_list_store_still_reads_and_is_upgraded_in_memory(tmp_path):
    probs = softmax_rows()
    emb = np.random.default_rng(2).normal(size=(len(probs), 4)).astype(np.float32)
    write_legacy(tmp_path / "old.parquet", probs, emb)
    assert pa.types.is_list(pq.read_schema(tmp_path / "old.parquet").field("probs").type)
    frame, _ = read_store(tmp_path / "old.parquet", NAMES)
    assert pa.types.is_fixed_size_list(frame["probs"].dtype.pyarrow_dtype)
    np.testing.assert_array_equal(stack(frame), probs)
    np.testing.assert_array_equal(stack(frame, "embedding"), emb)


def test_legacy_store_with_ragged_rows_fails_with_one_line(tmp_path):
    frame = pd.DataFrame({"sample_id": ["a", "b"], "probs": [np.full(K, 1 / K, np.float32), np.full(K - 1, 1 / (K - 1), np.float32)]})
    frame.to_parquet(tmp_path / "ragged.parquet", index=False)
    atomic_write_json(sidecar_path(tmp_path / "ragged.parquet"), META)
    with pytest.raises(KibbleError, match="different numbers of values") as err:
        read_store(tmp_path / "ragged.parquet")
    assert "\n" not in str(err.value)


def test_plain_pandas_still_opens_a_store_and_per_row_frames_still_write(tmp_path):
    probs = softmax_rows()
    path = write_store(tmp_path / "p.parquet", frame_of(probs), META)
    plain = pd.read_parquet(path)  # what a user (or a test) does without kibble
    np.testing.assert_array_equal(np.stack(plain["probs"].tolist()), probs)
    plain["probs"] = list(stack(plain))  # a frame of per-row arrays, as code written before the columnar store makes
    again = write_store(tmp_path / "again.parquet", plain, META)
    np.testing.assert_array_equal(stack(read_store(again)[0]), probs)


def test_validation_names_the_row_and_sample(tmp_path):
    probs = softmax_rows()
    bad = probs.copy()
    bad[7, 2] = np.nan
    with pytest.raises(KibbleError, match=r"row 7 \(sample_id 'img_007'\) has NaN"):
        write_store(tmp_path / "nan.parquet", frame_of(bad), META)
    off = probs.copy()
    off[3] *= 2
    with pytest.raises(KibbleError, match="row 3 probabilities sum to 2.0000"):
        write_store(tmp_path / "off.parquet", frame_of(off), META)
    with pytest.raises(KibbleError, match=r"expected \(N, 5\)"):
        write_store(tmp_path / "k.parquet", frame_of(probs), {**META, "class_names": NAMES[:5]})
    assert not list(tmp_path.glob("*.parquet"))


def test_many_row_groups_and_chunks_read_back_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "_ROW_GROUP_BYTES", 10 * 4 * K)  # groups of 1024 rows (the floor)
    probs = softmax_rows(5000, seed=3)
    path = write_store(tmp_path / "p.parquet", frame_of(probs), META)
    assert pq.ParquetFile(path).num_row_groups == 5
    frame, _ = read_store(path, NAMES)
    np.testing.assert_array_equal(stack(frame), probs)
    # concatenated, re-ordered frames (the OOF assembly) stack to the matching rows
    joined = pd.concat([frame.iloc[2500:], frame.iloc[:2500]], ignore_index=True).sort_values("sample_id").reset_index(drop=True)
    order = np.argsort(frame["sample_id"].to_numpy(dtype=str), kind="stable")
    np.testing.assert_array_equal(stack(joined), probs[order])


def test_empty_store_and_fold_ensemble(tmp_path):
    probs = softmax_rows()
    frame = frame_of(probs)
    path = write_store(tmp_path / "empty.parquet", frame.iloc[:0], META)
    empty, _ = read_store(path, NAMES)
    assert len(empty) == 0 and stack(empty).shape == (0, K)
    other = frame_of(softmax_rows(seed=9))
    mean = ensemble_mean([frame.iloc[::-1], other])
    expected = (probs.astype(np.float64) + stack(other)) / 2
    np.testing.assert_allclose(stack(mean), expected / expected.sum(1, keepdims=True), atol=1e-7)
    assert stack(mean).dtype == np.float32 and pa.types.is_fixed_size_list(mean["probs"].dtype.pyarrow_dtype)
