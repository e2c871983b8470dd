"""FLOPs per sample (cases/flops.py): the cases' own models at 224x224 against their
published forward cost, and the count leaves the trained model as it was."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from casekit import read_events

from cases.case import load_case
from cases.config import load_config
from cases.flops import flops_event, flops_per_sample

# Published forward cost at 224x224, in multiply-adds (torchvision's model pages list it
# in the column "GFLOPS", counted as fvcore does: one multiply-add = one operation):
# - resnet50: 4.09 (https://pytorch.org/vision/stable/models/generated/torchvision.models.resnet50.html,
#   ResNet50_Weights.IMAGENET1K_V1; DESIGN.md: "ResNet-50 forward: 4.1 GMACs at 224x224")
# - mobilenetv2: 0.30 (torchvision.models.mobilenet_v2, MobileNet_V2_Weights.IMAGENET1K_V1; the
#   MobileNetV2 paper, Sandler et al. 2018, Table 8: 300M multiply-adds)
# - vit (vit_b_16's sizes): 17.56 (torchvision.models.vit_b_16, ViT_B_16_Weights.IMAGENET1K_V1)
# A training sample costs forward + backward = 3 forwards (the backward computes the input and
# the weight gradients, each as costly as the forward), each multiply-add 2 FLOPs: x 2 x 3.
PUBLISHED_GMACS = {"resnet50": 4.09, "mobilenetv2": 0.30, "vit": 17.56}


def _model_at_224(case: str) -> Any:
    """The case's own model as its A100 hardware file builds it (224 px, 1000 classes)."""
    spec = load_case(case)
    cfg = load_config(case, spec.config, "nvidia", "A100x1x1", "").values
    assert (cfg.image_size, cfg.num_classes) == (224, 1000)
    return spec.build_model(cfg)


@pytest.mark.parametrize("case", sorted(PUBLISHED_GMACS))
def test_flops_per_sample_match_the_published_forward_cost(case: str) -> None:
    model = _model_at_224(case)
    counted = flops_per_sample(model, (3, 224, 224))
    expected = PUBLISHED_GMACS[case] * 1e9 * 2 * 3
    assert counted == pytest.approx(expected, rel=0.05), f"{case}: {counted / 1e9:.2f} GFLOP vs {expected / 1e9:.2f}"


def test_counting_leaves_the_trained_model_as_it_was() -> None:
    model = _model_at_224("resnet50")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images, targets = torch.randn(2, 3, 64, 64), torch.tensor([1, 2])
    torch.nn.functional.cross_entropy(model(images), targets).backward()
    optimizer.step()  # momentum buffers, grads and BatchNorm running stats all exist now
    before = {name: value.clone() for name, value in model.state_dict().items()}
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    momentum = {id(p): optimizer.state[p]["momentum_buffer"].clone() for p in model.parameters()}
    model.eval()

    event = flops_event(model, (3, 224, 224))

    assert event["flops_per_sample"] and event["input_shape"] == [3, 224, 224] and "missing" not in event
    assert not model.training, "the module's mode is restored"
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert all(torch.equal(grads[name], p.grad) for name, p in model.named_parameters() if p.grad is not None)
    assert all(torch.equal(momentum[id(p)], optimizer.state[p]["momentum_buffer"]) for p in model.parameters())
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_a_model_that_cannot_be_counted_is_a_reason_not_a_crash() -> None:
    class NeedsRealData(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.view(x.shape[0], -1)[:, :10] * float(x.sum())  # .item() of a meta tensor fails

    event = flops_event(NeedsRealData(), (3, 8, 8))
    assert event["flops_per_sample"] is None and "counting failed" in event["missing"]


def test_the_first_rank_of_a_node_writes_the_flops_event_and_the_others_do_not(torchrun: Any, tmp_path: Any) -> None:
    done = torchrun("mobilenetv2", fix_hp="synthetic_samples=16,eval=false,max_steps=1")
    assert done.returncode == 0, done.stderr[-3000:]
    value = read_events(tmp_path / "logs" / "events_rank0.log").one("flops")["value"]
    assert value["input_shape"] == [3, 32, 32] and value["flops_per_sample"] > 0
    second = (tmp_path / "logs" / "events_rank1.log").read_text()
    assert '"key": "world"' in second and '"key": "flops"' not in second
