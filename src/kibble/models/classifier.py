"""Full fine-tune LightningModule: builds its timm model from plain values, so checkpoints reload.

Two GPU speed-ups, off by default (conf/experiment/dogs_gpu.yaml turns them on):

- `channels_last`: weights and inputs in NHWC, the layout cuDNN's tensor-core convolutions want
  under bf16/fp16 autocast (convnets typically train 10-30 % faster). Correct on CPU too.
- `compile` (false | true | auto): torch.compile of the timm model only, not of the *_step
  methods, where self.log and the torchmetrics updates would break the graph. It is applied in
  place with `nn.Module.compile()` from Lightning's `configure_model` hook, which every Trainer
  calls before its strategy wraps the module: the state-dict keys stay those of the plain model
  (a checkpoint loads into an uncompiled module, no `_orig_mod.` prefix) and it runs under any
  strategy Lightning sets up (DDP included). `auto` compiles only on CUDA: on a CPU, compiling
  (about 100 s for a tiny resnet on 2 cores) costs more than a short run saves.

Compiled once per process, not once per fold: dynamo caches its graphs on the code object of the
model's forward, and since torch 2.5 (inline_inbuilt_nn_modules) parameters are graph inputs
rather than baked-in constants, so the next fold's new instance of the same class is served from
the first fold's cache (tests/models/test_compile.py checks it with dynamo's counters). The first
fold still pays for a few graphs: train and eval mode, and one dynamic-batch graph the first time
a batch of another size (the last batch, the eval batch size) comes through.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any, Callable

import torch

from kibble import KibbleError
from kibble.models.backbone import create_backbone, data_config_for, set_backbone_trainable
from kibble.models.base import ClassifierBase

log = logging.getLogger(__name__)

_COMPILE_VALUES = {True: True, False: False, "true": True, "false": False, "auto": "auto"}


def _compile_setting(value: Any) -> bool | str:
    key = value.lower() if isinstance(value, str) else value
    if key not in _COMPILE_VALUES:
        raise KibbleError(f"model.compile={value!r}: use false, true or auto (compile on CUDA only)")
    return _COMPILE_VALUES[key]


def has_c_compiler() -> bool:
    """inductor (torch.compile's default backend) builds C++ kernels on CPU and triton launchers on CUDA."""
    names = [os.environ.get("CXX"), os.environ.get("CC"), "g++", "gcc", "clang++", "clang", "cc"]
    return any(name and shutil.which(name) for name in names)


class ImageClassifier(ClassifierBase):
    def __init__(
        self,
        backbone: str,
        num_classes: int,
        pretrained: str | None = "none",
        drop_rate: float = 0.0,
        input_size: int | None = None,
        label_smoothing: float = 0.0,
        freeze_backbone: bool = False,
        channels_last: bool = False,
        compile: bool | str = False,
        compile_kwargs: dict[str, Any] | None = None,
        class_names: list[str] | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler"], logger=False)
        self._compile = _compile_setting(compile)  # checked here, not when the first fold starts
        self.model = create_backbone(backbone, num_classes, pretrained, drop_rate, **(backbone_kwargs or {}))
        if freeze_backbone:
            set_backbone_trainable(self.model, False)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.setup_common(num_classes, optimizer, scheduler, label_smoothing)

    @property
    def compiled(self) -> bool:
        return getattr(self.model, "_compiled_call_impl", None) is not None

    def configure_model(self) -> None:
        """Lightning hook (fit, validate, test, predict): compile the timm model in place, once."""
        if self.compiled or self._compile is False:
            return
        device = self._trainer.strategy.root_device if self._trainer is not None else self.device
        if self._compile == "auto" and device.type != "cuda":
            return
        options = dict(self.hparams.compile_kwargs or {})
        if options.get("backend", "inductor") == "inductor" and not has_c_compiler():
            raise KibbleError(
                "model.compile needs a C compiler for torch.compile's inductor backend: install gcc "
                "(e.g. apt-get install build-essential) or set model.compile=false"
            )
        if tuple(int(p) for p in torch.__version__.split(".")[:2]) < (2, 5):
            log.warning("torch %s recompiles the model for every new instance (every fold); torch >= 2.5 compiles once", torch.__version__)
        self.model.compile(**options)

    def data_config(self) -> dict[str, Any]:
        return data_config_for(self.model, self.hparams.input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def embed_and_classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        features = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return features, self.model.get_classifier()(features)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the weights live in the checkpoint: reloading must not need the original pretrained file
        checkpoint["hyper_parameters"]["pretrained"] = "none"
        # a reloaded model (kibble predict, eval) runs eagerly: compiling for one pass rarely pays;
        # ImageClassifier.load_from_checkpoint(path, compile=True) opts back in
        checkpoint["hyper_parameters"]["compile"] = False
