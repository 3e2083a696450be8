"""Compose kibble's real Hydra configs from Python (scripts, notebooks, tests) as `kibble <task>` does."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from kibble.paths import config_dir


def compose_config(config_name: str, overrides: list[str] | None = None, output_dir: str | Path | None = None) -> DictConfig:
    """Compose conf/<config_name>.yaml with Hydra `overrides`; the run's output dir is `output_dir`
    (a fresh temp dir by default), set both in HydraConfig and `paths.output_dir`."""
    output_dir = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix=f"kibble-{config_name}-"))
    output_dir.mkdir(parents=True, exist_ok=True)
    with initialize_config_dir(str(config_dir()), version_base="1.3", job_name=config_name):
        cfg = compose(config_name=config_name, overrides=list(overrides or []), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    from kibble import output

    output.configure(verbose=bool(cfg.get("verbose", False)))  # as `kibble <task>` does: no Lightning tips
    return cfg


def plain(value: Any) -> Any:
    """A config node as plain Python (dicts and lists, interpolations resolved); any other value unchanged,
    so a task hands library code the same thing whether it was composed by Hydra or passed from Python."""
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value
