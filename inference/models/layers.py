"""Small building blocks shared by the model files."""

from __future__ import annotations

import torch
from torch import nn


def embedding(num: int, dim: int) -> nn.Embedding:
    """An embedding whose weight is left uninitialised (the checkpoint overwrites it).

    Random init of an embedding on the meta device would import torch._dynamo (seconds).
    """
    return nn.Embedding(num, dim, _weight=torch.empty(num, dim))
