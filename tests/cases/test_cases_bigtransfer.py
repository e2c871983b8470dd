"""BiT ResNetV2 and the .npz checkpoint mapping."""

from __future__ import annotations

from pathlib import Path

import casekit  # noqa: F401  (puts the repo on sys.path)
import numpy as np
import pytest
import torch

from cases.bigtransfer.model import ResNetV2
from cases.bigtransfer.npz import load_npz, npz_keys, save_npz
from cases.errors import ConfigError

SMALL = dict(layers=[2, 1, 2, 1], width_factor=1, num_classes=5)


def randomised(seed: int, **kwargs) -> ResNetV2:
    torch.manual_seed(seed)
    model = ResNetV2(**{**SMALL, **kwargs}, zero_head=False)
    with torch.no_grad():  # move every parameter off its init value (gn gamma=1, beta=0, ...)
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model.eval()


def test_full_size_is_bit_m_r152x2() -> None:
    with torch.device("meta"):
        model = ResNetV2([3, 8, 36, 3], width_factor=2, num_classes=1000)
    # the parameter count of BiT-M R152x2 with a 1000-class head (timm's resnetv2_152x2_bit agrees)
    assert sum(p.numel() for p in model.parameters()) == 236_335_208
    keys = npz_keys(model)
    assert len(keys) == len(model.state_dict()) == 4 + 1 + 50 * 9 + 4
    assert keys["body.block3.unit36.conv2.weight"] == "resnet/block3/unit36/b/standardized_conv2d/kernel"


def test_every_parameter_has_an_npz_key_in_bit_layout() -> None:
    model = ResNetV2(**SMALL)
    keys = npz_keys(model)
    assert set(keys) == set(model.state_dict())
    assert len(set(keys.values())) == len(keys)
    assert keys["root.conv.weight"] == "resnet/root_block/standardized_conv2d/kernel"
    assert keys["body.block1.unit01.conv1.weight"] == "resnet/block1/unit01/a/standardized_conv2d/kernel"
    assert keys["body.block1.unit01.gn2.bias"] == "resnet/block1/unit01/b/group_norm/beta"
    assert keys["body.block2.unit01.downsample.weight"] == "resnet/block2/unit01/a/proj/standardized_conv2d/kernel"
    assert "body.block1.unit02.downsample.weight" not in keys  # same width, stride 1: no projection
    assert keys["head.gn.weight"] == "resnet/group_norm/gamma"
    assert keys["head.conv.bias"] == "resnet/head/conv2d/bias"


def test_npz_round_trip(tmp_path: Path) -> None:
    source = randomised(seed=1)
    path = tmp_path / "bit.npz"
    save_npz(source, path)

    with np.load(path) as archive:  # TensorFlow layout: HWIO kernels
        root = archive["resnet/root_block/standardized_conv2d/kernel"]
        assert root.shape == (7, 7, 3, 64)
        assert archive["resnet/head/conv2d/kernel"].shape == (1, 1, 2048, 5)
        assert archive["resnet/block1/unit01/a/group_norm/gamma"].shape == (64,)

    target = randomised(seed=2)
    load_npz(target, path, load_head=True)
    for name, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], tensor), name
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(source(images), target(images))


def test_fine_tuning_keeps_the_zero_head(tmp_path: Path) -> None:
    path = tmp_path / "bit.npz"
    save_npz(randomised(seed=1), path)
    model = ResNetV2(**SMALL, zero_head=True)
    load_npz(model, path, load_head=False)
    assert not model.head.conv.weight.any() and not model.head.conv.bias.any()
    assert torch.equal(model.body.block1.unit01.conv1.weight,
                       randomised(seed=1).body.block1.unit01.conv1.weight)


def test_norm_parameters_stored_as_4d_are_accepted(tmp_path: Path) -> None:
    source = randomised(seed=1)
    path = tmp_path / "bit.npz"
    save_npz(source, path)
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    gamma = "resnet/group_norm/gamma"
    arrays[gamma] = arrays[gamma].reshape(1, 1, 1, -1)
    np.savez(path, **arrays)
    target = randomised(seed=2)
    load_npz(target, path, load_head=True)
    assert torch.equal(target.head.gn.weight, source.head.gn.weight)


def test_a_checkpoint_for_another_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bit.npz"
    save_npz(randomised(seed=1), path)
    deeper = ResNetV2(layers=[3, 1, 2, 1], width_factor=1, num_classes=5)
    with pytest.raises(ConfigError, match="unit03.*layers/width_factor"):
        load_npz(deeper, path, load_head=False)
    wider = ResNetV2(**{**SMALL, "width_factor": 2})
    with pytest.raises(ConfigError, match="has shape"):
        load_npz(wider, path, load_head=False)


def test_an_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bit.npz"
    path.write_text("not an npz")
    with pytest.raises(ConfigError, match=f"cannot read {path}"):
        load_npz(ResNetV2(**SMALL), path, load_head=False)


def test_training_from_the_npz_says_pretrained(tmp_path: Path, torchrun) -> None:
    path = tmp_path / "bit.npz"
    save_npz(randomised(seed=1, num_classes=10, layers=[1, 1, 1, 1]), path)
    done = torchrun("bigtransfer", fix_hp=f"pretrained_npz={path},synthetic_samples=16", nproc=1)
    assert done.returncode == 0, done.stderr[-3000:]
    events = casekit.read_events(tmp_path / "logs" / "events_rank0.log")
    config = events.one("config")["value"]
    assert config["pretrained"] is True and config["pretrained_file"] == str(path)
