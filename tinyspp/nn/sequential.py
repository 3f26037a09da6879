"""``Sequential``: layers applied in order, backpropagated in reverse, saved to one file.

Parameter names are ``"{index}.{name}"`` (``"0.w"``, ``"0.b"``, ``"3.w"``, ...), the index being
the layer's position in the network. A ``ReLU`` followed by a ``MaxPool2d`` runs as the
pooling, then the ReLU on the smaller pooled map (``SWAP_RELU_POOL``; the two commute, so every
number is the same bit for bit; ``forward`` says why). Slicing (``net[:k]``) gives a new
``Sequential`` over the *same* layer objects: training the slice trains the network (its names
restart at 0).

Examples
--------
>>> import numpy as np
>>> from tinyspp.nn import Conv2d, Flatten, Linear, ReLU
>>> net = Sequential(Conv2d(1, 2, 3, pad=1, rng=0), ReLU(), Flatten(), Linear(2 * 4 * 4, 3, rng=1))
>>> logits = net(np.ones((5, 1, 4, 4), np.float32))
>>> logits.shape
(5, 3)
>>> dx = net.backward(np.ones_like(logits))
>>> list(net.params())
['0.w', '0.b', '3.w', '3.b']
>>> net[:2][0] is net[0]
True
"""

from __future__ import annotations

import inspect
import os

import numpy as np

from ..backend import asnumpy, check_device, get_array_module
from .checkpoint import load_checkpoint, save_checkpoint
from .layers import Layer, MaxPool2d, ReLU

SWAP_RELU_POOL = True  # run a ReLU followed by max pooling as the pooling, then the ReLU (the
# same numbers bit for bit, on a quarter of the data for a 2x2 pool); False: in the written
# order (the plain twin the tests compare it with)


def _swappable(layer, following) -> bool:
    """Whether ``layer`` and the ``following`` one run in swapped order: exactly a ``ReLU``
    (not a subclass, whose forward may differ) and exactly a ``MaxPool2d``."""
    return type(layer) is ReLU and type(following) is MaxPool2d


class Sequential:
    """A chain of layers: ``forward`` runs them in order, ``backward`` in reverse.

    Parameters
    ----------
    *layers : Layer
        Any objects with ``params``, ``grads``, ``training``, ``forward``, ``backward`` and
        ``to`` (normally ``tinyspp.nn.Layer`` subclasses).
    """

    def __init__(self, *layers):
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"Sequential: layer {i} must be a tinyspp.nn.Layer, got {type(layer).__name__}"
                )
        self.layers = list(layers)
        self._swapped = set()  # i: the last forward ran layer i + 1 (a pool) before layer i

    # ------------------------------------------------------------------ running
    def forward(self, x):
        """Apply every layer in order; returns the last layer's output.

        A ``ReLU`` followed by a ``MaxPool2d`` runs as the pooling first, then the ReLU on the
        pooled map (``SWAP_RELU_POOL``): the maximum of a window commutes with ``max(., 0)``,
        which never changes the order of two values, so the output is the same bit for bit,
        and so is every gradient (a window whose maximum is not positive passes no gradient
        either way; NaN wins a window and is masked by the ReLU either way). The ReLU then
        touches a quarter of the data (2x2 windows), forward and backward. ``backward`` runs
        the pair in the matching order; the two layers' caches hold the swapped pair's state
        (the ReLU's mask is of the pooled map's shape)."""
        self._swapped = set()
        i, layers = 0, self.layers
        while i < len(layers):
            if SWAP_RELU_POOL and i + 1 < len(layers) and _swappable(layers[i], layers[i + 1]):
                x = layers[i].forward(layers[i + 1].forward(x))
                self._swapped.add(i)
                i += 2
                continue
            x = layers[i].forward(x)
            i += 1
        return x

    def __call__(self, x):
        return self.forward(x)

    def backward(self, dout, input_grad: bool = True):
        """Backpropagate ``dout`` (gradient of the loss w.r.t. the output) through every layer
        in reverse; fills each layer's ``grads`` and returns the gradient w.r.t. the input.

        ``input_grad=False`` (a training step, where nothing needs the input's gradient)
        returns None and stops at the first layer that has parameters: the layers before it
        (an input check such as ``FixedInputSize``, a leading ReLU or pool) have no gradient to
        fill, and that layer is asked for its parameter gradients only (``need_dx=False``
        where its ``backward`` takes it, as ``Conv2d`` and ``Linear`` do: one GEMM less)."""
        stop = 0
        if not input_grad:
            stop = next((i for i, layer in enumerate(self.layers) if layer.params), len(self))
        swapped = set()  # the ReLUs already run (their pool's turn ran them first)
        for i in range(len(self.layers) - 1, stop - 1, -1):
            layer = self.layers[i]
            if i in swapped:
                continue
            if i - 1 in getattr(self, "_swapped", ()) and i - 1 >= stop:  # a pool, run first
                dout = layer.backward(self.layers[i - 1].backward(dout))
                swapped.add(i - 1)
                continue
            if i == stop and not input_grad:
                if "need_dx" in inspect.signature(layer.backward).parameters:
                    layer.backward(dout, need_dx=False)
                else:
                    layer.backward(dout)
                return None
            dout = layer.backward(dout)
        return dout if input_grad else None

    def train(self, mode: bool = True):
        """Training mode for every layer (``mode=False``: evaluation); returns ``self``."""
        for layer in self.layers:
            layer.train(mode)
        return self

    def eval(self):
        """Evaluation mode for every layer (dropout off); returns ``self``."""
        return self.train(False)

    @property
    def training(self) -> bool:
        return all(layer.training for layer in self.layers)

    def to(self, device: str):
        """Move every layer's parameters to ``"cpu"`` or ``"gpu"``; returns ``self``."""
        check_device(device, "Sequential.to")
        for layer in self.layers:
            layer.to(device)
        return self

    def astype(self, dtype):
        """Cast every parameter to ``dtype`` (e.g. ``np.float64`` for gradient checks)."""
        for layer in self.layers:
            layer.astype(dtype)
        return self

    # ------------------------------------------------------------------ container
    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, index):
        """``net[i]`` is a layer; ``net[a:b]`` a Sequential sharing the same layer objects."""
        if isinstance(index, slice):
            return Sequential(*self.layers[index])
        return self.layers[index]

    def __repr__(self) -> str:
        lines = [f"  ({i}) {layer!r}" for i, layer in enumerate(self.layers)]
        return "Sequential(\n" + "\n".join(lines) + "\n)"

    # ------------------------------------------------------------------ parameters
    def params(self) -> dict:
        """``"{index}.{name}" -> array`` for every parameter, in layer order (live arrays)."""
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers)
                for k, v in layer.params.items()}

    def grads(self) -> dict:
        """``"{index}.{name}" -> array``: the gradients written by the last ``backward``."""
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers)
                for k, v in layer.grads.items()}

    def num_params(self) -> int:
        """Total number of scalar parameters."""
        return int(sum(v.size for v in self.params().values()))

    def state_dict(self) -> dict:
        """NumPy copies of every parameter, keyed like ``params()``."""
        return {k: asnumpy(v).copy() for k, v in self.params().items()}

    def load_state_dict(self, state: dict, func: str = "Sequential.load_state_dict"):
        """Copy ``state`` (as from ``state_dict``) into the parameters, in place; returns self.

        Strict: the keys must be exactly those of ``params()`` and every shape must match,
        otherwise a ValueError names the missing/unexpected keys or the first mismatching shape,
        and no parameter is changed. Values are cast to each parameter's dtype and device.
        """
        own = self.params()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if missing or unexpected:
            raise ValueError(
                f"{func}: the state does not match the network: missing keys {missing}, "
                f"unexpected keys {unexpected}"
            )
        for k, v in own.items():
            if tuple(np.shape(state[k])) != tuple(v.shape):
                raise ValueError(
                    f"{func}: shape mismatch for {k!r}: state has {tuple(np.shape(state[k]))}, "
                    f"network has {tuple(v.shape)}"
                )
        for k, v in own.items():
            xp = get_array_module(v)
            v[...] = xp.asarray(state[k], dtype=v.dtype)
        return self

    # ------------------------------------------------------------------ files
    def save(self, path, extra: dict | None = None) -> None:
        """Write the parameters (and ``extra``) to ``path`` as ``.npz``, atomically.

        Parameters
        ----------
        path : str or os.PathLike
        extra : dict, optional
            Anything needed to resume exactly, e.g.
            ``{"epoch": 3, "lr": 0.01, **{f"opt/{k}": v for k, v in sgd.state_dict().items()}}``:
            arrays are stored as arrays, other values as JSON (see ``tinyspp.nn.checkpoint``).
            ``load(path, with_extra=True)`` gives them back.
        """
        save_checkpoint(path, self.params(), extra)

    def load(self, path, *, with_extra: bool = False):
        """Load parameters saved by ``save`` into this network, in place.

        Returns ``self``, or ``(self, extra)`` with ``with_extra=True`` (``extra``: the dict
        passed to ``save``, arrays as NumPy arrays).

        Raises
        ------
        FileNotFoundError
            No file at ``path``.
        ValueError
            A corrupt file, or one whose keys/shapes do not match this network (the message names
            the path and the key).
        """
        func = "Sequential.load"
        state, extra = load_checkpoint(path, func)
        try:
            self.load_state_dict(state, func)
        except ValueError as err:
            raise ValueError(f"{err} (checkpoint {os.fspath(path)!r})") from None
        return (self, extra) if with_extra else self
