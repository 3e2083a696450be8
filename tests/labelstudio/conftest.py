"""A REAL Label Studio server for the round-trip test: `.venv-labelstudio` (made by `make labelstudio`),
127.0.0.1, a free port, a temporary data directory, a known admin and legacy API token. Stopped at the end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LABEL_STUDIO = REPO / ".venv-labelstudio" / "bin" / "label-studio"
ADMIN = "admin@kibble.test"
PASSWORD = "kibble-test-password"
TOKEN = "kibble0test0token0123456789"
STARTUP_TIMEOUT = 150  # seconds; 30-90 s on a loaded 2-core machine (database migrations on first start)


@dataclass
class Server:
    url: str
    token: str
    document_root: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group (start_new_session): it and its children
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def labelstudio_server(tmp_path_factory: pytest.TempPathFactory):
    if not LABEL_STUDIO.exists():
        pytest.skip(f"{LABEL_STUDIO} not found: run `make labelstudio` to install Label Studio in its own venv")
    base = tmp_path_factory.mktemp("labelstudio")
    data_dir, document_root = base / "data", base / "files"
    data_dir.mkdir()
    document_root.mkdir()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "DJANGO_"))}
    env.update({
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",  # the known token below is a legacy token
        "LATEST_VERSION_CHECK": "false",  # no call to pypi.org: traffic stays on 127.0.0.1
        "COLLECT_ANALYTICS": "false",
        "FEATURE_FLAGS_OFFLINE": "true",
    })
    log = base / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(LABEL_STUDIO), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
             "--username", ADMIN, "--password", PASSWORD, "--user-token", TOKEN, "--enable-legacy-api-token"],
            env=env, cwd=base, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _healthy(url):
            if proc.poll() is not None:
                pytest.fail(f"label-studio exited with {proc.returncode} before it was healthy:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"label-studio not healthy after {STARTUP_TIMEOUT} s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield Server(url, TOKEN, document_root, log)
    finally:
        _stop(proc)
