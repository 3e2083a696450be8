"""MC dropout (Gal & Ghahramani 2016): T stochastic forward passes with dropout left on, for BALD.

Only the Dropout modules are switched to training mode; everything else (batch norm, the frozen
backbone) stays in eval mode, so the passes differ only by which units dropout drops.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import nn

from kibble import KibbleError

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    """Dropout layers with p > 0 (timm's drop_rate is applied functionally and is not found here)."""
    return [m for m in model.modules() if isinstance(m, _DROPOUT) and float(m.p) > 0]


@torch.no_grad()
def mc_dropout_probs(model: nn.Module, inputs: torch.Tensor | np.ndarray, passes: int = 20, seed: int = 0, batch_size: int = 4096) -> np.ndarray:
    """Softmax of `passes` stochastic forward passes over `inputs` -> (T, N, K) float32.

    The model is restored to its previous train/eval state afterwards; the global torch RNG is not
    disturbed (the passes draw from a forked, seeded stream, so they are reproducible).
    """
    if int(passes) < 2:
        raise KibbleError(f"mc passes={passes}; BALD needs at least 2 stochastic passes")
    drops = dropout_modules(model)
    if not drops:
        raise KibbleError("MC dropout needs a model with dropout > 0 (features mode: model.dropout=0.2); this model has none")
    x = torch.as_tensor(np.asarray(inputs, dtype=np.float32)) if isinstance(inputs, np.ndarray) else inputs.float()
    was_training = [(m, m.training) for m in model.modules()]
    model.eval()
    for m in drops:
        m.train()
    out = []
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            for _ in range(int(passes)):
                chunks = [model(x[i : i + batch_size]).float().softmax(dim=-1) for i in range(0, len(x), batch_size)]
                out.append(torch.cat(chunks) if chunks else torch.zeros((0, 0)))
    finally:
        for m, flag in was_training:
            m.train(flag)
    return torch.stack(out).cpu().numpy()


def stack_passes(parts: Iterable[np.ndarray]) -> np.ndarray:
    """Concatenate (T_i, N, K) pass arrays of several models (e.g. fold models) along T."""
    parts = [np.asarray(p) for p in parts]
    if not parts:
        raise KibbleError("no MC passes to stack")
    if len({p.shape[1:] for p in parts}) != 1:
        raise KibbleError(f"MC passes cover different rows/classes: {[p.shape for p in parts]}")
    return np.concatenate(parts, axis=0)
