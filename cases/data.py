"""Training and evaluation data: synthetic tensors, or an ImageNet-layout folder.

Synthetic: every sample is drawn from a generator seeded with (seed, index), so
a run is reproducible, and is made on the fly (no memory held). Real data:
``<data>/train/<wnid>/*.JPEG`` and ``<data>/val/<wnid>/*.JPEG``.

Training shards with DistributedSampler(drop_last=True) and a drop_last loader,
so every step has the same global batch. Evaluation shards by striding
(rank, rank + world, ...): every sample is evaluated exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Tuple, Union

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from cases.config import CaseConfig
from cases.errors import ConfigError, DataError

if TYPE_CHECKING:
    from torchvision.datasets import ImageFolder

LAYOUT = "<data>/train/<wnid>/*.JPEG and <data>/val/<wnid>/*.JPEG"
# One sample: an image (3 x size x size) and its class index.
Sample = Tuple[torch.Tensor, int]


class SyntheticImages(Dataset[Sample]):
    """Random normal images and uniform labels, deterministic per index."""

    def __init__(self, samples: int, image_size: int, num_classes: int, seed: int) -> None:
        self.samples = samples
        self.image_size = image_size
        self.num_classes = num_classes
        self.seed = seed

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, index: int) -> Sample:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        image = torch.randn(3, self.image_size, self.image_size, generator=generator)
        label = int(torch.randint(self.num_classes, (1,), generator=generator))
        return image, label


@dataclass
class Data:
    train: DataLoader[Sample]
    sampler: DistributedSampler[Sample]
    val: Optional[DataLoader[Sample]]
    source: str  # "synthetic" or the data directory
    train_samples: int  # global, per epoch, before drop_last
    val_samples: int  # global
    steps_per_epoch: int


def _class_dirs(split: Path) -> List[str]:
    return sorted(p.name for p in split.iterdir() if p.is_dir())


def check_layout(data_dir: Path, num_classes: int, need_val: bool) -> None:
    """Raise DataError naming the path when the folder is not ImageNet-shaped."""
    if not data_dir.is_dir():
        raise DataError(f"--data: data directory {data_dir} does not exist (expected {LAYOUT})")
    train = data_dir / "train"
    if not train.is_dir():
        raise DataError(f"--data: {train} is missing (expected {LAYOUT})")
    classes = _class_dirs(train)
    if not classes:
        raise DataError(f"--data: {train} has no class folders (expected {LAYOUT})")
    if len(classes) != num_classes:
        raise DataError(
            f"--data: {train} has {len(classes)} class folders but num_classes is {num_classes} "
            f"(set it with --fix-hp num_classes={len(classes)})"
        )
    if not need_val:
        return
    val = data_dir / "val"
    if not val.is_dir():
        raise DataError(f"--data: {val} is missing (expected {LAYOUT}; or set eval: false)")
    val_classes = _class_dirs(val)
    if val_classes != classes:
        missing = sorted(set(classes) - set(val_classes))[:3]
        extra = sorted(set(val_classes) - set(classes))[:3]
        raise DataError(
            f"--data: {val} class folders differ from {train} "
            f"(missing in val: {missing or 'none'}, not in train: {extra or 'none'})"
        )


def _transforms(cfg: CaseConfig) -> Tuple[object, object]:
    from torchvision import transforms as T

    size = cfg.image_size
    if cfg.train_resize is not None:
        crop = [T.Resize((cfg.train_resize, cfg.train_resize)), T.RandomCrop(size)]
    else:
        crop = [T.RandomResizedCrop(size)]
    tail = [T.ToTensor(), T.Normalize(cfg.norm_mean, cfg.norm_std)]
    train = T.Compose(crop + [T.RandomHorizontalFlip()] + tail)
    val_resize = cfg.val_resize or round(size * 256 / 224)
    val = T.Compose([T.Resize(val_resize), T.CenterCrop(size)] + tail)
    return train, val


def _image_folder(path: Path, transform: object) -> ImageFolder:
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(path), transform=transform)
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"--data: {path}: {exc}") from exc


def build_data(cfg: CaseConfig, data_dir: Optional[Path], rank: int, world_size: int,
               pin_memory: bool) -> Data:
    evaluate = cfg.eval
    if data_dir is None:
        train_set: Union[SyntheticImages, ImageFolder] = SyntheticImages(cfg.synthetic_samples, cfg.image_size,
                                                                          cfg.num_classes, cfg.seed)
        val_set: Optional[Union[SyntheticImages, ImageFolder]] = None
        if evaluate and cfg.synthetic_val_samples > 0:
            val_set = SyntheticImages(cfg.synthetic_val_samples, cfg.image_size, cfg.num_classes, cfg.seed + 1)
        source = "synthetic"
    else:
        check_layout(data_dir, cfg.num_classes, need_val=evaluate)
        train_tf, val_tf = _transforms(cfg)
        train_set = _image_folder(data_dir / "train", train_tf)
        val_set = _image_folder(data_dir / "val", val_tf) if evaluate else None
        source = str(data_dir)

    global_batch = cfg.batch_size * world_size
    if len(train_set) < global_batch:
        where = "synthetic_samples" if data_dir is None else f"{data_dir}/train"
        error = ConfigError if data_dir is None else DataError
        raise error(f"{where}: {len(train_set)} samples, fewer than one global batch "
                    f"(batch_size {cfg.batch_size} x world size {world_size} = {global_batch})")

    sampler: DistributedSampler[Sample] = DistributedSampler(train_set, num_replicas=world_size, rank=rank,
                                                             shuffle=True, seed=cfg.seed, drop_last=True)
    workers = cfg.num_workers
    train = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=workers,
                       pin_memory=pin_memory, drop_last=True, persistent_workers=workers > 0)
    val = None
    if val_set is not None:
        shard = Subset(val_set, range(rank, len(val_set), world_size))
        val = DataLoader(shard, batch_size=cfg.batch_size, shuffle=False, num_workers=workers,
                         pin_memory=pin_memory, drop_last=False, persistent_workers=workers > 0)
    return Data(train=train, sampler=sampler, val=val, source=source, train_samples=len(train_set),
                val_samples=len(val_set) if val_set is not None else 0, steps_per_epoch=len(train))
