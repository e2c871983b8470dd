"""ResNet-50 (torchvision, random init) on ImageNet: SGD with momentum, linear
warm-up, lr 0.1 per 256 images of global batch, step decay."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cases.case import CaseSpec
from cases.config import CaseConfig

if TYPE_CHECKING:  # torch only where the model is built: the controller imports the config model
    from torch import nn


class ResNet50Config(CaseConfig):
    pass


def build_model(cfg: ResNet50Config) -> nn.Module:
    from torchvision.models import resnet50

    model: nn.Module = resnet50(weights=None, num_classes=cfg.num_classes)
    return model


SPEC = CaseSpec(name="resnet50", config=ResNet50Config, build_model=build_model)
