"""`kibble labelstudio push|pull workspace=W [round=N]`: the round's queue to Label Studio and its answers back.

push creates (or reuses) the round's project and imports the queue with the model's suggestions as
predictions; pull exports the annotations and merges them exactly like `kibble merge` (pulling twice
adds nothing). Server and key: $LABEL_STUDIO_URL, $LABEL_STUDIO_API_KEY.
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from kibble import KibbleError
from kibble.labels.lock import lock_timeout_of
from kibble.labelstudio.client import LabelStudioServer
from kibble.labelstudio.sync import latest_pushed_round, pull, push
from kibble.config import plain
from kibble.paths import Workspace, config_dir

ACTIONS = ("push", "pull")


def run(cfg: DictConfig, server: LabelStudioServer | None = None) -> dict[str, Any]:
    action = None if OmegaConf.is_missing(cfg, "action") else str(cfg.action)
    if action not in ACTIONS:
        raise KibbleError(f"action={action}: use `kibble labelstudio push ...` or `kibble labelstudio pull ...`")
    ws = Workspace(cfg.workspace).require()
    server = server or LabelStudioServer.from_env(timeout=float(cfg.timeout))
    if action == "push":
        round_index = int(cfg.round) if cfg.get("round") is not None else ws.current_round()
        image_url = plain(cfg.image_url)
        result = push(ws, round_index, server, title=cfg.title, image_url=image_url, overlap=int(cfg.overlap),
                      model_version=cfg.get("model_version"), local_storage=bool(cfg.local_storage))
        verb = "created" if result["created"] else "reused"
        print(f"round {round_index}: {verb} Label Studio project {result['project_id']} {result['title']!r}, "
              f"{result['n_imported']} new tasks ({result['n_tasks']} in the queue) -> {result['url']}")
        return result
    round_index = int(cfg.round) if cfg.get("round") is not None else latest_pushed_round(ws)
    policy = plain(cfg.get("policy"))
    quality = plain(cfg.get("quality"))
    result = pull(ws, round_index, server, source=str(cfg.review_source), policy=policy, quality=quality,
                  lock_timeout=lock_timeout_of(cfg))
    print(f"round {round_index}: pulled {result['n_reviews']} answers from Label Studio project {result['project_id']}: "
          f"{result['n_events_added']} new events ({result['n_duplicates']} already recorded), "
          f"{result['n_labels_changed']} labels changed, {result['n_ambiguous']} ambiguous; next round {result['next_round']}")
    return result


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="labelstudio")
def main(cfg: DictConfig) -> None:
    run(cfg)
