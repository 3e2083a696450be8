"""Where things live: the Hydra config tree and the files of a workspace (DESIGN §3)."""

from __future__ import annotations

from pathlib import Path


def config_dir() -> Path:
    """The `conf/` tree: packaged inside the wheel, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"kibble's conf/ tree was not found next to {here}; reinstall kibble")


class Workspace:
    """Names of the files in a workspace directory; creates nothing by itself."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.parquet"

    @property
    def classes(self) -> Path:
        return self.root / "classes.yaml"

    @property
    def label_events(self) -> Path:
        return self.root / "label_events.parquet"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def round_dir(self, round_index: int) -> Path:
        return self.root / "rounds" / f"{int(round_index):03d}"

    def current_round(self) -> int:
        """The round `kibble kfold` works on: 0 in a new workspace, advanced by `kibble merge`."""
        return int(self.read_state().get("round", 0))

    def set_current_round(self, round_index: int) -> None:
        self.update_state(round=int(round_index))

    def read_state(self) -> dict:
        import json

        from kibble.io import current_path

        state = current_path(self.state)  # inside a transaction that wrote it: the staged version
        return json.loads(state.read_text()) if state.is_file() else {}

    def update_state(self, **values) -> None:
        import json

        from kibble.io import atomic_write_text

        state = {**self.read_state(), **values}
        atomic_write_text(self.state, json.dumps(state, indent=2))

    @property
    def data_root(self) -> Path:
        """Where manifest paths are relative to (recorded by `kibble import`; relative = inside the workspace)."""
        root = Path(self.read_state().get("data_root", "."))
        return root if root.is_absolute() else self.root / root

    @property
    def feature_root_id(self) -> str:
        """The image root's part of feature-cache keys (kibble.data.features): the recorded data_root,
        or `feature_root_id` in the state where a copy reads another workspace's images and cache
        (the loop's baseline arm, kibble.loop.baseline), so the images are embedded once."""
        state = self.read_state()
        return str(state.get("feature_root_id") or state.get("data_root", self.data_root))

    def require(self) -> "Workspace":
        """Fail clearly when the workspace has not been imported yet; finish an interrupted transaction."""
        from kibble import KibbleError
        from kibble.transaction import settle

        settle(self.root)  # a killed writer's committed transaction is finished first (kibble.transaction)
        if not self.manifest.is_file():
            raise KibbleError(
                f"{self.manifest}: no manifest in workspace {self.root}; "
                f"run `kibble import workspace={self.root}` first"
            )
        return self
