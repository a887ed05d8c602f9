"""The two MNIST networks of the paper's Table 1, named layer by layer as in Caffe.

Layer names (``ip1``, ``conv1``, ...) follow the Caffe model files the paper used, so the
per-layer report lines up with the paper's tables. Weight shapes follow Caffe too: a
fully connected weight is (outputs, inputs), a convolution weight (out, in, kh, kw); both
are also PyTorch's layouts.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class LeNet300100(nn.Module):
    """LeNet-300-100: 784-300-100-10, ReLU after the two hidden layers (266,610 parameters)."""

    def __init__(self):
        super().__init__()
        self.ip1 = nn.Linear(28 * 28, 300)
        self.ip2 = nn.Linear(300, 100)
        self.ip3 = nn.Linear(100, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.flatten(1)
        x = F.relu(self.ip1(x))
        x = F.relu(self.ip2(x))
        return self.ip3(x)


class LeNet5(nn.Module):
    """LeNet-5 as in Caffe's examples: conv 20@5x5, max-pool 2, conv 50@5x5, max-pool 2,
    fc 500 + ReLU, fc 10 (431,080 parameters). No ReLU after the convolutions, as in Caffe."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, kernel_size=5)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.ip1 = nn.Linear(50 * 4 * 4, 500)
        self.ip2 = nn.Linear(500, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv1(images), 2)
        x = F.max_pool2d(self.conv2(x), 2)
        x = F.relu(self.ip1(x.flatten(1)))
        return self.ip2(x)
