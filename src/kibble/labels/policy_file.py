"""The policy a workspace's labels are resolved with, saved in `W/policy.yaml`, and every change to it.

Why: the manifest's labels are the policy applied to the history. Were the policy only a command-line
setting, one `kibble merge policy.precedence=round` would silently re-resolve every label, and the
next merge without it would silently resolve them back. So the first merge saves the policy it used;
a later merge with another one stops with one line, unless `policy.reapply=true` says the change is
meant — then the new policy is saved and the change recorded (when, by which task, from what to what,
how many labels it moved) under `changes:` in the same file.

Call these inside the workspace lock (`kibble.labels.lock`), as the merge does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from kibble import KibbleError
from kibble.io import atomic_write_text
from kibble.labels.history import now_utc
from kibble.labels.policy import normalise_policy
from kibble.paths import Workspace

POLICY_FILE = "policy.yaml"
HEADER = ("# The label policy this workspace's labels are resolved with (docs/labels.md, \"The policy\").\n"
          "# Written by the first merge; change it with `kibble merge ... policy.<key>=<value> policy.reapply=true`.\n")


def policy_path(ws: Workspace):
    return ws.root / POLICY_FILE


def read_policy_file(ws: Workspace) -> dict[str, Any] | None:
    """{policy, changes} of the workspace; None before the first merge (or in a workspace older than the file)."""
    path = policy_path(ws)
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
        return {"policy": normalise_policy(data["policy"]), "changes": list(data.get("changes") or [])}
    except (yaml.YAMLError, KeyError, TypeError, AttributeError) as err:
        raise KibbleError(f"{path}: not a kibble policy file ({type(err).__name__}); restore it from a backup, or delete it "
                          "to let the next merge save the policy it uses") from None


def split_reapply(policy: Mapping | None) -> tuple[dict[str, Any] | None, bool]:
    """(the policy without the `reapply` switch, the switch); None stays None (= the workspace's policy)."""
    if policy is None:
        return None, False
    raw = dict(policy)
    return raw, bool(raw.pop("reapply", False))


def _override(key: str, value: Any) -> str:
    return f"policy.{key}=[{','.join(value)}]" if isinstance(value, list) else f"policy.{key}={value}"


def policy_for_merge(ws: Workspace, policy: Mapping | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the policy this merge resolves labels with, the change to record or None).

    `policy` None: the saved one (the default before the first merge). A policy that differs from the
    saved one is refused unless it carries `reapply: true`.
    """
    requested, reapply = split_reapply(policy)
    saved = read_policy_file(ws)
    if requested is None:
        current = saved["policy"] if saved else normalise_policy(None)
        return current, None if saved else {"from": None, "to": current}
    pol = normalise_policy(requested)
    if saved is None:
        return pol, {"from": None, "to": pol}
    if pol == saved["policy"]:
        return pol, None
    if not reapply:
        diff = [k for k in pol if pol[k] != saved["policy"][k]]
        raise KibbleError(
            f"policy differs from {policy_path(ws)}, which resolved this workspace's labels: "
            + ", ".join(f"{k} {pol[k]} (saved: {saved['policy'][k]})" for k in diff)
            + f"; add policy.reapply=true to re-resolve every label under the new policy, or keep the saved one ("
            + " ".join(_override(k, saved["policy"][k]) for k in diff) + ")"
        )
    return pol, {"from": saved["policy"], "to": pol}


def record_policy(ws: Workspace, change: Mapping[str, Any], task: str | None, n_labels_changed: int) -> None:
    """Save the policy now in force and append the change (the first save is a change from nothing)."""
    saved = read_policy_file(ws)
    changes = (saved["changes"] if saved else []) + [{
        "at": now_utc(), "by": task or "kibble.labels.merge", "from": change["from"], "to": change["to"],
        "labels_changed": int(n_labels_changed),
    }]
    atomic_write_text(policy_path(ws), HEADER + yaml.safe_dump({"policy": dict(change["to"]), "changes": changes},
                                                               sort_keys=False, default_flow_style=None))
