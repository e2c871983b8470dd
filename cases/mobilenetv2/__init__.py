"""MobileNetV2 (torchvision, random init) on ImageNet: SGD, lr 0.045 per 256
images of global batch, wd 4e-5, lr x0.98 every epoch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from cases.case import CaseSpec
from cases.config import CaseConfig

if TYPE_CHECKING:  # torch only where the model is built: the controller imports the config model
    from torch import nn


class MobileNetV2Config(CaseConfig):
    dropout: float = Field(ge=0, lt=1, description="before the classifier")


def build_model(cfg: MobileNetV2Config) -> nn.Module:
    from torchvision.models import mobilenet_v2

    model: nn.Module = mobilenet_v2(weights=None, num_classes=cfg.num_classes, dropout=cfg.dropout)
    return model


SPEC = CaseSpec(name="mobilenetv2", config=MobileNetV2Config, build_model=build_model)
