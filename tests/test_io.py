"""kibble.io: atomic writes name their temp files for their writer and respect the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from kibble.io import atomic_path, atomic_write_parquet, atomic_write_text, host_tag, new_temp, umask


@pytest.fixture
def set_umask():
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_written_files_get_the_permissions_the_umask_allows(tmp_path: Path, set_umask, mask: int):
    set_umask(mask)
    assert umask() == mask
    text = atomic_write_text(tmp_path / "a.txt", "x")
    table = atomic_write_parquet(tmp_path / "sub" / "t.parquet", pd.DataFrame({"a": [1]}))
    folder = new_temp(tmp_path / "archive", directory=True)
    assert mode(text) == mode(table) == 0o666 & ~mask  # not mkstemp's 0600
    assert mode(folder) == 0o777 & ~mask


def test_a_temp_file_names_its_host_and_pid_and_is_gone_after_the_write(tmp_path: Path):
    with atomic_path(tmp_path / "queue.csv") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(f".queue.csv.{host_tag()}-{os.getpid()}-") and tmp.name.endswith(".tmp")
        tmp.write_text("a\n")
    assert [p.name for p in tmp_path.iterdir()] == ["queue.csv"]


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path):
    target = atomic_write_text(tmp_path / "state.json", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_is_in_and_positions_hash_text_ids_like_pandas():
    import numpy as np
    import pandas as pd

    from kibble.values import is_in, positions

    among = pd.Series(["a", "b", "é", "d d"], dtype="str")  # an Arrow-backed column, as manifests load
    values = np.array(["é", "x", None, "a", "d d"], dtype=object)
    assert is_in(values, among).tolist() == [True, False, False, True, True]
    assert positions(values, among).tolist() == [2, -1, -1, 0, 3]
    assert positions(np.array([], dtype=object), among).tolist() == [] and not is_in([], []).any()
