"""ViT-B (torchvision's VisionTransformer with vit_b_16's sizes, random init)
on ImageNet: SGD, lr 0.1, step decay. patch_size is a key so that tiny test
images (32 px) still make several patches; 16 is vit_b_16."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from cases.case import CaseSpec
from cases.config import CaseConfig

if TYPE_CHECKING:  # torch only where the model is built: the controller imports the config model
    from torch import nn


class ViTConfig(CaseConfig):
    patch_size: int = Field(gt=0)
    num_layers: int = Field(gt=0, description="encoder blocks; 12: vit_b_16")
    dropout: float = Field(ge=0, lt=1)

    @model_validator(mode="after")
    def _patches_tile_the_image(self) -> ViTConfig:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        return self


def build_model(cfg: ViTConfig) -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    # the sizes of torchvision's vit_b_16 (num_layers 12 unless a hardware file says otherwise)
    model: nn.Module = VisionTransformer(image_size=cfg.image_size, patch_size=cfg.patch_size, num_layers=cfg.num_layers,
                                         num_heads=12, hidden_dim=768, mlp_dim=3072, dropout=cfg.dropout,
                                         num_classes=cfg.num_classes)
    return model


SPEC = CaseSpec(name="vit", config=ViTConfig, build_model=build_model)
