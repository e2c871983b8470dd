"""FLOPs per trained sample, counted once per run on the rank's own model.

``torch.utils.flop_counter.FlopCounterMode`` (torch >= 2.1) counts the matrix
multiplications and convolutions of one forward and one backward pass (the loss
included, the optimizer step not: the usual MFU convention) from their shapes.
The pass runs on the rank's model object through ``functional_call`` with
stand-ins on the ``meta`` device for every parameter and buffer, and a meta
batch of ``BATCH`` images of the training shape: nothing is computed, no device
memory is taken, and the trained model's parameters, gradients, BatchNorm
running statistics and the optimizer are never touched.

torch's own formula for ``convolution_backward`` ignores ``groups`` for the
weight gradient, which counts a depthwise convolution's (MobileNetV2) about C
times over; ``_conv_backward_flops`` replaces it: each of the two gradients
costs as many multiply-adds as the forward convolution.

Python 3.8 syntax: this module runs inside vendor images.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

BATCH = 2  # BatchNorm in training mode needs more than one value per channel
METHOD = ("torch.utils.flop_counter.FlopCounterMode, one forward + backward (loss included, optimizer not) "
          "on meta stand-ins of the rank's model; grouped-convolution backward counted per group")


def _conv_backward_flops(grad_out_shape: Sequence[int], x_shape: Sequence[int], w_shape: Sequence[int],
                         _bias: Any, _stride: Any, _padding: Any, _dilation: Any, transposed: bool,
                         _output_padding: Any, _groups: Any, output_mask: Sequence[bool],
                         out_shape: Any = None, **kwargs: Any) -> int:
    """Flops of aten.convolution_backward: the forward's count (2 x multiply-adds)
    once for the input gradient and once for the weight gradient, each when asked.
    w_shape[1] is already the channels of one group, so groups are accounted for."""
    # forward multiply-adds: every output element (every input element when
    # transposed) times the weights that one group feeds it
    one = 2 * math.prod(x_shape if transposed else grad_out_shape) * math.prod(w_shape[1:])
    return one * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _stand_ins(module: nn.Module) -> Dict[str, torch.Tensor]:
    stand: Dict[str, torch.Tensor] = {}
    for name, param in module.named_parameters():
        stand[name] = torch.empty_like(param, device="meta").requires_grad_(param.requires_grad)
    for name, buffer in module.named_buffers():
        stand[name] = torch.empty_like(buffer, device="meta")
    return stand


def flops_per_sample(module: nn.Module, input_shape: Tuple[int, ...]) -> float:
    """Forward + backward flops of one sample of `input_shape` (C, H, W) through
    `module` (unwrapped, not DDP); raises when this torch cannot count."""
    from torch.func import functional_call
    from torch.utils.flop_counter import FlopCounterMode

    images = torch.empty((BATCH,) + tuple(input_shape), device="meta")
    targets = torch.zeros(BATCH, dtype=torch.long, device="meta")
    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flops})
    was_training = module.training
    module.train()
    try:
        with counter:
            logits = functional_call(module, _stand_ins(module), (images,))
            loss = nn.functional.cross_entropy(logits, targets)
            loss.backward()
    finally:
        module.train(was_training)
    return float(counter.get_total_flops()) / BATCH


def flops_event(module: nn.Module, input_shape: Tuple[int, ...]) -> Dict[str, Any]:
    """The ``flops`` event's value: the count, or None and why it could not be made."""
    value: Dict[str, Any] = {"input_shape": list(input_shape), "batch": BATCH, "method": METHOD}
    reason: Optional[str] = None
    try:
        value["flops_per_sample"] = flops_per_sample(module, input_shape)
    except ImportError as exc:
        reason = "torch {} cannot count flops ({}): FlopCounterMode needs torch >= 2.1".format(torch.__version__, exc)
    except Exception as exc:  # a model the meta device cannot run is a fact to record, never a failed run
        reason = "counting failed: {}: {}".format(type(exc).__name__, exc)
    if reason is not None:
        value["flops_per_sample"] = None
        value["missing"] = reason
    return value
