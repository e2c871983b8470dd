"""BiT ResNetV2: pre-activation bottlenecks, group norm (32 groups) and
weight-standardised convolutions; BiT-M R152x2 is layers [3, 8, 36, 3] with
width factor 2. Module names follow the published checkpoints' layout
(root / body.blockN.unitMM / head) so that npz.py maps them one to one."""

from __future__ import annotations

from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

GROUPS = 32


class StdConv2d(nn.Conv2d):
    """Conv2d whose kernel is standardised per output channel before use."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        var, mean = torch.var_mean(w, dim=(1, 2, 3), keepdim=True, unbiased=False)
        w = (w - mean) / torch.sqrt(var + 1e-10)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Unit(nn.Module):
    """Pre-activation bottleneck; the stride sits on the 3x3 conv and the projection."""

    def __init__(self, cin: int, cmid: int, cout: int, stride: int) -> None:
        super().__init__()
        self.gn1 = nn.GroupNorm(GROUPS, cin)
        self.conv1 = StdConv2d(cin, cmid, kernel_size=1, bias=False)
        self.gn2 = nn.GroupNorm(GROUPS, cmid)
        self.conv2 = StdConv2d(cmid, cmid, kernel_size=3, stride=stride, padding=1, bias=False)
        self.gn3 = nn.GroupNorm(GROUPS, cmid)
        self.conv3 = StdConv2d(cmid, cout, kernel_size=1, bias=False)
        self.downsample: Optional[nn.Module] = None
        if stride != 1 or cin != cout:
            self.downsample = StdConv2d(cin, cout, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.gn1(x))
        shortcut = x if self.downsample is None else self.downsample(pre)
        out: torch.Tensor = self.conv1(pre)
        out = self.conv2(F.relu(self.gn2(out)))
        out = self.conv3(F.relu(self.gn3(out)))
        return out + shortcut


class ResNetV2(nn.Module):
    def __init__(self, layers: Sequence[int], width_factor: int, num_classes: int,
                 zero_head: bool = True) -> None:
        super().__init__()
        wf = width_factor
        self.root = nn.Sequential(OrderedDict([
            ("conv", StdConv2d(3, 64 * wf, kernel_size=7, stride=2, padding=3, bias=False)),
            ("pad", nn.ConstantPad2d(1, 0.0)),
            ("pool", nn.MaxPool2d(kernel_size=3, stride=2)),
        ]))
        blocks: List[Tuple[str, nn.Module]] = []
        cin = 64 * wf
        for index, units in enumerate(layers):
            cmid = 64 * wf * 2 ** index
            cout = 4 * cmid
            stride = 1 if index == 0 else 2
            block: OrderedDict[str, nn.Module] = OrderedDict()
            for number in range(1, units + 1):
                block[f"unit{number:02d}"] = Unit(cin, cmid, cout, stride if number == 1 else 1)
                cin = cout
            blocks.append((f"block{index + 1}", nn.Sequential(block)))
        self.body = nn.Sequential(OrderedDict(blocks))
        head_gn = nn.GroupNorm(GROUPS, cin)
        head_conv = nn.Conv2d(cin, num_classes, kernel_size=1, bias=True)
        self.head = nn.Sequential(OrderedDict([
            ("gn", head_gn),
            ("relu", nn.ReLU(inplace=True)),
            ("avg", nn.AdaptiveAvgPool2d(1)),
            ("conv", head_conv),
        ]))
        if zero_head:
            for param in head_conv.parameters():  # weight, bias
                nn.init.zeros_(param)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.head(self.body(self.root(x)))
        return features.flatten(1)
