"""Full fine-tune LightningModule: builds its timm model from plain values, so checkpoints reload."""

from __future__ import annotations

from typing import Any, Callable

import torch

from kibble.models.backbone import create_backbone, data_config_for, set_backbone_trainable
from kibble.models.base import ClassifierBase


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
        compile: bool = False,
        class_names: list[str] | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler"], logger=False)
        self.model = create_backbone(backbone, num_classes, pretrained, drop_rate, **(backbone_kwargs or {}))
        if freeze_backbone:
            set_backbone_trainable(self.model, False)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # kept out of the module tree so the state dict has one copy of the weights
        self.__dict__["_compiled"] = torch.compile(self.model) if compile else None
        self.setup_common(num_classes, optimizer, scheduler, label_smoothing)

    def data_config(self) -> dict[str, Any]:
        return data_config_for(self.model, self.hparams.input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return (self.__dict__["_compiled"] or self.model)(x)

    def embed_and_classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        features = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return features, self.model.get_classifier()(features)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the weights live in the checkpoint: reloading must not need the original pretrained file
        checkpoint["hyper_parameters"]["pretrained"] = "none"
