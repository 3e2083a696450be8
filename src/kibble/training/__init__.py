"""Training plumbing shared by `kibble train`, `kibble kfold`, the active loop and strategies that train.

- `build`: datamodule + model + Trainer from a composed config, checkpoint helpers.
- `distributed`: rank-aware helpers (one rank owns files; the others wait at a barrier).
- `kfold`: the k-fold engine (fold assignment, one fold, OOF assembly), rank-aware under DDP.
"""
