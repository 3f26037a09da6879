"""Layers with hand-written backprop, ``Sequential`` networks, SGD and checkpoints.

``Layer`` subclasses wrap the pure ops of ``tinyspp.ops``; ``Sequential`` chains them and names
their parameters ``"{index}.{name}"``; ``SGD`` updates them in place; ``save``/``load`` write and
read ``.npz`` checkpoints atomically (``tinyspp.nn.checkpoint``).
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .layers import (
    Conv2d,
    Dropout,
    Flatten,
    Layer,
    Linear,
    MaxPool2d,
    ReLU,
    SpatialPyramidPooling,
)
from .models import no_spp_net, small_spp_net, split_trunk_head
from .optim import SGD
from .sequential import Sequential

__all__ = [
    "Conv2d", "Dropout", "Flatten", "Layer", "Linear", "MaxPool2d", "ReLU",
    "SpatialPyramidPooling", "Sequential", "SGD", "load_checkpoint", "save_checkpoint",
    # models (tinyspp/nn/models.py)
    "no_spp_net", "small_spp_net", "split_trunk_head",
]
