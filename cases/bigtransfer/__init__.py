"""Big Transfer: fine-tune BiT-M R152x2 (ResNetV2, group norm + weight
standardisation) from the published ``.npz`` on ImageNet, BiT-HyperRule style:
SGD, lr 0.003 per 512 images of global batch, momentum 0.9, no weight decay,
warm-up, x0.1 at 30/60/90 % of training, zero-initialised head."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

from pydantic import Field

from cases.case import CaseSpec
from cases.config import CaseConfig

if TYPE_CHECKING:  # torch only where the model is built: the controller imports the config model
    from cases.bigtransfer.model import ResNetV2


class BigTransferConfig(CaseConfig):
    layers: List[int] = Field(min_length=4, max_length=4, description="units per block")
    width_factor: int = Field(gt=0)
    pretrained_npz: Optional[str] = Field(description="relative: under --data; null: random init")
    zero_head: bool = Field(description="zero-init the head instead of loading it")


def build_model(cfg: BigTransferConfig) -> ResNetV2:
    from cases.bigtransfer.model import ResNetV2

    return ResNetV2(cfg.layers, cfg.width_factor, cfg.num_classes, zero_head=cfg.zero_head)


def weights_file(cfg: BigTransferConfig, data_dir: Optional[Path]) -> Optional[Path]:
    if cfg.pretrained_npz is None:
        return None
    path = Path(cfg.pretrained_npz).expanduser()
    if not path.is_absolute() and data_dir is not None:
        path = data_dir / path
    return path


def load_weights(model: ResNetV2, path: Path, cfg: BigTransferConfig) -> None:
    from cases.bigtransfer.npz import load_npz

    load_npz(model, path, load_head=not cfg.zero_head)


SPEC = CaseSpec(name="bigtransfer", config=BigTransferConfig, build_model=build_model,
                weights_file=weights_file, load_weights=load_weights, weights_key="pretrained_npz")
