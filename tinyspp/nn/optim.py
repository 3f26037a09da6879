"""Stochastic gradient descent with momentum and weight decay (the paper's optimiser).

The update, for every parameter ``w`` with gradient ``g`` (Caffe's / cuda-convnet's form, as in
Krizhevsky et al. 2012, which SPP-net trains with):

    v <- momentum * v - lr * (g + weight_decay * w)
    w <- w + v

Velocities start at 0. Weight decay applies to every parameter, biases included. ``lr`` is a
plain attribute: divide it by 10 at a plateau (``opt.lr /= 10``).

Examples
--------
>>> import numpy as np
>>> from tinyspp.nn import Linear, Sequential
>>> net = Sequential(Linear(2, 1, rng=0, dtype=np.float64))
>>> net.params()["0.w"][:] = 1.0
>>> out = net.forward(np.ones((1, 2)))
>>> dx = net.backward(np.ones((1, 1)))  # gradient of w: x = [1, 1]
>>> opt = SGD(net, lr=0.1, momentum=0.9)
>>> opt.step()
>>> net.params()["0.w"].ravel()  # 1 - 0.1 * 1
array([0.9, 0.9])
"""

from __future__ import annotations

import numbers

import numpy as np

from ..backend import asnumpy, check_device, get_array_module, to_device


def _check_real(value, name, minimum, func, strict=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{func}: {name} must be a number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        op = ">" if strict else ">="
        raise ValueError(f"{func}: {name} must be {op} {minimum}, got {value}")
    return float(value)


class SGD:
    """Mini-batch SGD with momentum and L2 weight decay over a network's ``params()``.

    Parameters
    ----------
    net : Sequential (anything with ``params()`` and ``grads()`` dicts)
    lr : float > 0
        Learning rate (mutable attribute ``lr``).
    momentum : float in [0, 1), default 0.9
    weight_decay : float >= 0, default 0.0
    """

    def __init__(self, net, lr: float, momentum: float = 0.9, weight_decay: float = 0.0):
        func = "SGD"
        self.net = net
        self.lr = _check_real(lr, "lr", 0.0, func, strict=True)
        self.momentum = _check_real(momentum, "momentum", 0.0, func)
        if self.momentum >= 1.0:
            raise ValueError(f"{func}: momentum must be < 1, got {momentum}")
        self.weight_decay = _check_real(weight_decay, "weight_decay", 0.0, func)
        self.velocity: dict = {}  # name -> array like the parameter, created at the first step
        self.steps = 0

    def step(self) -> None:
        """Update every parameter in place from the gradients of the last ``backward``."""
        params, grads = self.net.params(), self.net.grads()
        missing = [k for k in params if k not in grads]
        if missing:
            raise RuntimeError(f"SGD.step: no gradient for {missing}; call net.backward first")
        for name, w in params.items():
            xp = get_array_module(w)
            g = grads[name]
            v = self.velocity.get(name)
            if v is None or v.shape != w.shape or get_array_module(v) is not xp:
                v = self.velocity[name] = xp.zeros_like(w)
            step = g + self.weight_decay * w if self.weight_decay else g
            v *= self.momentum
            v -= self.lr * step
            w += v
        self.steps += 1

    def state_dict(self) -> dict:
        """NumPy arrays: ``velocity/<param name>`` plus 0-d ``lr``, ``momentum``,
        ``weight_decay`` and ``steps``; ``load_state_dict`` restores exactly this state."""
        state = {f"velocity/{k}": asnumpy(v).copy() for k, v in self.velocity.items()}
        state.update(lr=np.array(self.lr), momentum=np.array(self.momentum),
                     weight_decay=np.array(self.weight_decay), steps=np.array(self.steps))
        return state

    def load_state_dict(self, state: dict):
        """Restore ``state_dict()`` output; velocities go to the device of their parameter."""
        func = "SGD.load_state_dict"
        params = self.net.params()
        velocity = {}
        for key, value in state.items():
            if not key.startswith("velocity/"):
                continue
            name = key[len("velocity/"):]
            if name not in params:
                raise ValueError(f"{func}: velocity for {name!r}, which the network lacks")
            if tuple(np.shape(value)) != tuple(params[name].shape):
                raise ValueError(f"{func}: shape mismatch for {key!r}: state has "
                                 f"{tuple(np.shape(value))}, parameter has "
                                 f"{tuple(params[name].shape)}")
            xp = get_array_module(params[name])
            velocity[name] = xp.asarray(value, dtype=params[name].dtype)
        self.velocity = velocity
        for key in ("lr", "momentum", "weight_decay"):
            if key in state:
                setattr(self, key, float(state[key]))
        if "steps" in state:
            self.steps = int(state["steps"])
        return self

    def to(self, device: str):
        """Move the velocities to ``"cpu"`` or ``"gpu"``; returns ``self``."""
        check_device(device, "SGD.to")
        self.velocity = {k: to_device(v, device) for k, v in self.velocity.items()}
        return self

    def __repr__(self) -> str:
        return (f"SGD(lr={self.lr:g}, momentum={self.momentum:g}, "
                f"weight_decay={self.weight_decay:g})")
