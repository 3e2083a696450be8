"""Headless Chromium for the report tests, and a real k-fold round on digits to report on.

`chromium(html, out_dir, query="")` loads a report from disk (file://, as a user would open it),
returns the screenshot path, the DOM after the scripts ran (--dump-dom) and the page's console
messages (Chromium logs them to stderr as `INFO:CONSOLE`). Tests skip when `chromium` is not on PATH
(`apt-get install chromium`; .ci/run installs it).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from kibble.config import compose_config

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--allow-file-access-from-files", "--enable-logging=stderr", "--v=0",
]


def _chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., dict]:
    binary = _chromium_binary()
    if binary is None:
        pytest.skip("chromium is not on PATH (apt-get install chromium); the HTML report is not rendered")
    counter = iter(range(10_000))

    def render(html: Path, out_dir: Path, query: str = "", width: int = 1280, height: int = 2400) -> dict:
        n = next(counter)
        url = Path(html).resolve().as_uri() + query
        profile = tmp_path_factory.mktemp(f"chromium_profile_{n}")
        base = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]
        png = Path(out_dir) / f"screenshot_{n}.png"
        shot = subprocess.run([*base, f"--screenshot={png}", url], capture_output=True, text=True, timeout=180)
        dom = subprocess.run([*base, "--virtual-time-budget=5000", "--dump-dom", url], capture_output=True, text=True, timeout=180)
        console = [line for line in (shot.stderr + dom.stderr).splitlines() if ":CONSOLE" in line or "Uncaught" in line]
        assert png.is_file(), f"chromium wrote no screenshot:\n{shot.stderr[-2000:]}"
        return {"png": png, "dom": dom.stdout, "console": console}

    return render


@pytest.fixture(scope="session")
def digits_round(digits_workspace: Path, digits_feature_cache: Path, effnet_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Round 0 of `kibble kfold` (features mode, 3 folds) on a copy of the digits workspace: OOF, fold
    ensemble on the test split, queue and the round report written by the round callback."""
    from kibble.tasks import kfold

    root = tmp_path_factory.mktemp("report_round")
    ws = root / "ws"
    shutil.copytree(digits_workspace, ws, ignore=shutil.ignore_patterns("runs", "multiruns"))
    shutil.copytree(digits_feature_cache, ws / "cache", dirs_exist_ok=True)
    overrides = [
        f"workspace={ws}", "model=features_lite0", f"paths.effnet_lite0={effnet_weights}", "embedder.input_size=32", "embedder.num_workers=0",
        "trainer.max_epochs=8", "logger=none", "cv=kfold3", "cv.progress=false", "strategy.budget=40",
        "strategy.strategies=[kfold,self_confidence]",  # two strategies: the report's per-strategy filter has something to hide
    ]
    result = kfold.run(compose_config("kfold", overrides, output_dir=root / "kfold_out"))
    return {"ws": ws, "round_dir": Path(result["round_dir"]), "result": result, "root": root}
