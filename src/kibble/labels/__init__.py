"""The label history and what writes it: events (history), reviews readers, the policy, the merge, the workspace lock.

Library code: `kibble merge`, `kibble labelstudio pull`, the loops and the simulated crowd call it;
nothing here imports `kibble.tasks`. See docs/labels.md.
"""
