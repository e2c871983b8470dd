"""The published BiT checkpoints (``BiT-M-R152x2.npz``) <-> ResNetV2 state dict.

npz keys look like ``resnet/block1/unit01/a/standardized_conv2d/kernel``: units
have convs a/b/c (1x1, 3x3, 1x1), each preceded by its group norm
(``a/group_norm/gamma``...), and the projection ``a/proj/standardized_conv2d``.
Kernels are TensorFlow HWIO; torch wants OIHW.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Dict

import numpy as np
import torch

from cases.bigtransfer.model import ResNetV2
from cases.errors import ConfigError

PREFIX = "resnet/"
CONV = "standardized_conv2d"
HEAD_PARAMS = ("head.conv.weight", "head.conv.bias")


def npz_keys(model: ResNetV2) -> Dict[str, str]:
    """state-dict name -> npz key, for every parameter of the model."""
    keys = {
        "root.conv.weight": f"{PREFIX}root_block/{CONV}/kernel",
        "head.gn.weight": f"{PREFIX}group_norm/gamma",
        "head.gn.bias": f"{PREFIX}group_norm/beta",
        "head.conv.weight": f"{PREFIX}head/conv2d/kernel",
        "head.conv.bias": f"{PREFIX}head/conv2d/bias",
    }
    for block_name, block in model.body.named_children():
        for unit_name, unit in block.named_children():
            src = f"{PREFIX}{block_name}/{unit_name}/"
            dst = f"body.{block_name}.{unit_name}."
            for number, letter in ((1, "a"), (2, "b"), (3, "c")):
                keys[f"{dst}conv{number}.weight"] = f"{src}{letter}/{CONV}/kernel"
                keys[f"{dst}gn{number}.weight"] = f"{src}{letter}/group_norm/gamma"
                keys[f"{dst}gn{number}.bias"] = f"{src}{letter}/group_norm/beta"
            if unit.downsample is not None:
                keys[f"{dst}downsample.weight"] = f"{src}a/proj/{CONV}/kernel"
    return keys


def _to_torch(array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    if like.dim() == 1 and array.size == like.numel():
        array = array.reshape(-1)  # norm parameters may be stored as (1, 1, 1, C)
    elif array.ndim == 4:
        array = array.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _to_tf(tensor: torch.Tensor) -> np.ndarray:
    array = tensor.detach().cpu().numpy()
    return array.transpose(2, 3, 1, 0) if array.ndim == 4 else array  # OIHW -> HWIO


def load_npz(model: ResNetV2, path: Path, load_head: bool) -> None:
    """Copy a BiT checkpoint into ``model``; the head only when ``load_head``
    (fine-tuning to a new label set keeps the zero-initialised head)."""
    wanted = {name: key for name, key in npz_keys(model).items()
              if load_head or name not in HEAD_PARAMS}
    state = model.state_dict()
    try:
        with np.load(path) as archive:
            missing = [key for key in wanted.values() if key not in archive.files]
            if missing:
                raise ConfigError(
                    f"pretrained_npz: {path} lacks {len(missing)} of {len(wanted)} expected arrays, "
                    f"e.g. {missing[0]!r} (do layers/width_factor match the checkpoint?)"
                )
            loaded = {}
            for name, key in wanted.items():
                tensor = _to_torch(archive[key], state[name])
                if tensor.shape != state[name].shape:
                    raise ConfigError(
                        f"pretrained_npz: {path}: {key} has shape {tuple(tensor.shape)} (as OIHW), "
                        f"the model's {name} is {tuple(state[name].shape)}"
                    )
                loaded[name] = tensor
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"pretrained_npz: cannot read {path}: {exc}") from exc
    with torch.no_grad():
        for name, tensor in loaded.items():
            state[name].copy_(tensor)


def save_npz(model: ResNetV2, path: Path) -> None:
    """Write ``model`` in the BiT checkpoint format (used by the tests' round trip)."""
    state = model.state_dict()
    arrays = {key: _to_tf(state[name]) for name, key in npz_keys(model).items()}
    np.savez(path, allow_pickle=True, **arrays)  # the default, named: no array can then be taken for it
