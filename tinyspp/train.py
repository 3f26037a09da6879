"""Training loops for SPP-nets: single-size, multi-size and random-size schedules; evaluation.

The paper trains one set of parameters on inputs of several sizes (Sec. 2.4): the network is
switched to another input size every full epoch (e.g. 224 and 180, the 224 crop resized), which
is possible only because spatial pyramid pooling makes the fc input length independent of the
image size. :class:`Trainer` implements that with mini-batch SGD (momentum, weight decay),
dropout on the fc layers (inside the model), tqdm progress bars, a JSON history and atomic
``.npz`` checkpoints.

Learning-rate schedules, fair to every size schedule (:data:`LR_SCHEDULES`):

- ``"step"`` (default): a fixed epoch budget with the lr multiplied by ``lr_drop`` at fixed
  epochs, ``lr_e = lr * lr_drop ** #{s in lr_steps : s <= e}``. The lr is a function of the epoch
  number alone, so single-, multi- and random-size nets get exactly the same lr at every epoch.
- ``"plateau"``: divide the lr when the validation error stops improving -- compared *like for
  like*. Validation is always a centre crop at ``eval_size``, but a net that has just trained
  an epoch at 26 px scores differently at 32 px than after a 32-px epoch; comparing the two
  would read a size switch as a setback and cut the lr of a multi-size net for nothing. So an
  epoch's validation error is compared only with earlier epochs *of the same training size*,
  and an epoch whose size has not been seen before counts neither way.

Reproducibility: all randomness of epoch ``e`` (shuffling, crops, flips, jitter, dropout masks)
comes from generators seeded with ``(seed, e)``, so a checkpoint needs no RNG state: resuming
after epoch ``e`` replays epochs ``e+1, ...`` exactly as an uninterrupted run (bitwise on the CPU).

Evaluation (:func:`evaluate`) runs the net on centre crops, on 10 views (crops + flips, softmax
averaged), on the FULL image at its own size and aspect ratio (SPP only; images are grouped by
size so each batch has one spatial size) or on warped images.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

import numpy as np
from tqdm.auto import tqdm

from .backend import asnumpy, check_device, to_device
from .data.dataset import ImageSet
from .data.transforms import VIEWS, channel_stats, eval_views, normalize, train_batch
from .nn import SGD, Dropout, load_checkpoint, save_checkpoint
from .ops import softmax_cross_entropy
from .validate import check_choice, check_int

SCHEDULES = ("single", "multi", "random")
LR_SCHEDULES = ("step", "plateau")


def step_lr(lr: float, epoch: int, steps=(), drop: float = 0.1) -> float:
    """The learning rate of ``epoch`` (0-based) under the fixed step schedule.

    ``lr * drop ** k`` where ``k`` is the number of steps ``s`` with ``s <= epoch``: epoch ``s``
    is the first one trained at the lower rate.

    Examples
    --------
    >>> [step_lr(0.01, e, steps=(2, 4)) for e in range(5)]
    [0.01, 0.01, 0.001, 0.001, 0.0001]
    """
    k = sum(1 for s in steps if s <= epoch)
    return float(lr / (1.0 / drop) ** k)  # 0.01 / 10**2 is 1e-4 exactly; 0.01 * 0.1**2 is not


def blas_threads(n: int | None):
    """Context manager limiting the BLAS thread pool AND tinyspp's own threads
    (``tinyspp.ops.dispatch``) to ``n`` each (None: leave both alone); both are restored after.

    On a busy machine with few cores, threads spinning against other processes can make the
    small matrix products of these nets several times slower; ``n=1`` avoids that. Results do
    not depend on ``n``: the ops split their work the same way for any number of threads.
    """
    if n is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    from .ops import dispatch

    n = check_int(n, "threads", "blas_threads", minimum=1)
    stack = contextlib.ExitStack()
    stack.enter_context(threadpool_limits(limits=n, user_api="blas"))
    stack.enter_context(dispatch.using_threads(n))
    return stack


class PlateauRule:
    """The plateau rule: "divide the learning rate when the validation error stops improving".

    Feed it one epoch at a time with :meth:`update`; it answers whether to cut the lr now.

    Parameters
    ----------
    patience : int
        Cut after this many compared epochs in a row without a better validation error.
    like_for_like : bool, default True
        Compare an epoch only with earlier epochs trained at the *same* size (an epoch at a size
        not seen before counts neither way). With ``False`` every epoch is compared with the best
        of all earlier ones -- the rule that reads a multi-size net's switch to its small size as
        a setback (validation is always at one size).

    Attributes
    ----------
    best : dict of str -> float
        Best validation error so far per training size (one key ``"all"`` when not like for
        like); JSON-friendly, so a checkpoint can store it.
    bad : int
        Compared epochs without improvement since the last improvement or cut.

    Examples
    --------
    A multi-size net whose 26-px epochs score worse at the 32-px validation, both improving:

    >>> errs, sizes = [0.20, 0.30, 0.18, 0.28, 0.16, 0.26], [32, 26] * 3
    >>> naive, fair = PlateauRule(1, like_for_like=False), PlateauRule(1)
    >>> [naive.update(z, e) for z, e in zip(sizes, errs)]
    [False, True, False, True, False, True]
    >>> [fair.update(z, e) for z, e in zip(sizes, errs)]
    [False, False, False, False, False, False]
    """

    def __init__(self, patience: int, *, like_for_like: bool = True):
        self.patience = check_int(patience, "patience", "PlateauRule")
        self.like_for_like = bool(like_for_like)
        self.best: dict[str, float] = {}
        self.bad = 0

    def update(self, size: int, val_error: float) -> bool:
        """Record one epoch (its training ``size`` and validation error); True: cut the lr."""
        key = str(size) if self.like_for_like else "all"
        best = self.best.get(key)
        self.best[key] = val_error if best is None else min(best, val_error)
        if best is None:  # nothing to compare with
            return False
        if val_error < best - 1e-12:
            self.bad = 0
            return False
        self.bad += 1
        if self.bad >= self.patience:
            self.bad = 0
            return True
        return False


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """The generator for one purpose of one epoch: seeded by ``(seed, *keys)``."""
    return np.random.default_rng([seed, *keys])


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _batches_of_views(dataset: ImageSet, view: str, size: int, batch_size: int):
    """Yield ``(x, image_index)`` batches, each of one spatial size.

    ``x`` is (B, C, h, w); ``image_index`` (B,) says which image each row is a view of.
    Full-image views are grouped by their (h, w) so that every batch has one size.
    """
    groups: dict[tuple, list] = {}
    for i, img in enumerate(dataset.images):
        views = eval_views(img, size, view)
        for v in views:
            groups.setdefault(v.shape[1:], []).append((v, i))
    for items in groups.values():
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            yield np.stack([v for v, _ in chunk]), np.array([i for _, i in chunk])


def forward_views(net, dataset: ImageSet, *, view: str = "center", size: int = 32,
                  mean=None, std=None, device: str = "cpu", batch_size: int = 64):
    """Run ``net`` (in eval mode) on the views of every image; return outputs per image.

    Parameters
    ----------
    net : Sequential (or a slice of one)
    dataset : ImageSet
    view : {"center", "multiview", "full", "warp"}
    size : int
        Crop size, or the shorter side for ``view="full"``.
    mean, std : ndarray of shape (C,), optional
        Normalisation (defaults: 0 and 1).
    device : {"cpu", "gpu"}
    batch_size : int

    Returns
    -------
    list of ndarray (NumPy), one per image, of shape (V, D): the net's output for each of the V
    views of that image (V = 10 for multiview, else 1).
    """
    func = "forward_views"
    check_choice(view, "view", func, VIEWS)
    check_device(device, func)
    C = dataset.channels
    mean = np.zeros(C, np.float32) if mean is None else mean
    std = np.ones(C, np.float32) if std is None else std
    out: list[list] = [[] for _ in range(len(dataset))]
    was_training = getattr(net, "training", True)
    net.eval()
    try:
        for x, index in _batches_of_views(dataset, view, size, batch_size):
            y = asnumpy(net.forward(to_device(normalize(x, mean, std), device)))
            for row, i in zip(y, index):
                out[i].append(row)
    finally:
        if was_training:
            net.train()
    return [np.stack(rows) for rows in out]


def evaluate(net, dataset: ImageSet, *, view: str = "center", size: int = 32, mean=None,
             std=None, device: str = "cpu", batch_size: int = 64) -> dict:
    """Top-1 error and mean cross-entropy of ``net`` on ``dataset`` with one test-time view.

    With several views per image (``multiview``) the softmax outputs are averaged.

    Returns
    -------
    dict with ``error`` (fraction in [0, 1]), ``loss`` and ``n`` (number of images).
    """
    outs = forward_views(net, dataset, view=view, size=size, mean=mean, std=std, device=device,
                         batch_size=batch_size)
    prob = np.stack([_softmax(o.astype(np.float64)).mean(axis=0) for o in outs])
    labels = dataset.labels
    loss = float(-np.log(prob[np.arange(len(labels)), labels] + 1e-12).mean())
    error = float((prob.argmax(axis=1) != labels).mean())
    return {"error": error, "loss": loss, "n": len(labels)}


def extract_features(net_part, dataset: ImageSet, *, view: str = "full", size: int = 32,
                     mean=None, std=None, device: str = "cpu") -> np.ndarray:
    """Features (N, D) of every image: the output of ``net_part`` (e.g. up to SPP or fc6),
    averaged over views."""
    outs = forward_views(net_part, dataset, view=view, size=size, mean=mean, std=std,
                         device=device)
    return np.stack([o.reshape(o.shape[0], -1).mean(axis=0) for o in outs])


class Trainer:
    """Mini-batch SGD training of one network with a single-, multi- or random-size schedule.

    Parameters
    ----------
    net : Sequential
        The model (e.g. :func:`tinyspp.nn.small_spp_net`); it is moved to ``device``.
    train_set, val_set : ImageSet
        ``val_set`` (optional) drives the learning-rate drops and the history.
    sizes : sequence of int
        Training input sizes. ``schedule="single"`` uses ``sizes[0]``; ``"multi"`` cycles through
        them, one per epoch (epoch ``e`` uses ``sizes[e % len(sizes)]``); ``"random"`` draws a size
        uniformly from ``[min(sizes), max(sizes)]`` at each epoch. Every training crop is cut at
        ``max(sizes)`` and resized, so the sizes see the same content at different resolutions.
    schedule : {"single", "multi", "random"}
    batch_size : int
    lr, momentum, weight_decay : float
        SGD hyper-parameters.
    lr_schedule : {"step", "plateau"}
        ``"step"``: ``lr`` times ``lr_drop`` at each epoch of ``lr_steps`` (see :func:`step_lr`);
        the same lr at every epoch whatever the size schedule. ``"plateau"``: times ``lr_drop``
        after ``patience`` like-for-like epochs without a better validation error (an epoch is
        compared only with earlier epochs of the same training size; see the module docstring).
    lr_steps : sequence of int
        0-based epochs from which the next lower rate applies (``"step"`` only; empty: constant).
    lr_drop : float
        Factor of each drop (the paper divides by 10).
    patience : int
        ``"plateau"`` only.
    jitter : float
        Colour jitter amount of the training augmentation (0 disables it).
    seed : int
        All randomness of epoch ``e`` is seeded by ``(seed, e)``.
    device : {"cpu", "gpu"}
        "gpu" moves parameters, optimiser state and batches to CuPy; without a usable GPU it is
        a RuntimeError raised here, before any work.
    out_dir : str, optional
        Where ``checkpoint.npz`` (every epoch, atomic) and ``history.json`` are written.
    eval_size : int, optional
        Centre-crop size for validation (default ``max(sizes)``).
    progress : bool
        Show tqdm progress bars.

    Examples
    --------
    >>> from tinyspp.data import make_synthetic
    >>> from tinyspp.nn import small_spp_net
    >>> data = make_synthetic(2, classes=("disk", "square"), size_range=(16, 20), seed=0)
    >>> net = small_spp_net(2, widths=(4, 4, 4), hidden=8, seed=0)
    >>> trainer = Trainer(net, data, sizes=(16, 12), schedule="multi", progress=False)
    >>> [h["size"] for h in trainer.fit(epochs=2)]
    [16, 12]
    """

    def __init__(self, net, train_set: ImageSet, val_set: ImageSet | None = None, *,
                 sizes=(32,), schedule: str = "single", batch_size: int = 32, lr: float = 0.01,
                 momentum: float = 0.9, weight_decay: float = 5e-4, lr_schedule: str = "step",
                 lr_steps=(), lr_drop: float = 0.1, patience: int = 2, jitter: float = 0.1,
                 seed: int = 0, device: str = "cpu",
                 out_dir: str | None = None, eval_size: int | None = None,
                 progress: bool = True):
        func = "Trainer"
        self.device = check_device(device, func)
        self.schedule = check_choice(schedule, "schedule", func, SCHEDULES)
        sizes = tuple(check_int(s, "sizes", func, minimum=1) for s in np.atleast_1d(sizes))
        if not sizes:
            raise ValueError(f"{func}: sizes must not be empty")
        if schedule == "random" and len(sizes) != 2:
            raise ValueError(f"{func}: schedule='random' needs sizes=(lo, hi), got {sizes}")
        if not isinstance(train_set, ImageSet) or len(train_set) == 0:
            raise ValueError(f"{func}: train_set must be a non-empty ImageSet")
        if not lr > 0:
            raise ValueError(f"{func}: lr must be > 0, got {lr}")
        self.lr_schedule = check_choice(lr_schedule, "lr_schedule", func, LR_SCHEDULES)
        self.lr_steps = tuple(sorted(check_int(e, "lr_steps", func, minimum=0)
                                     for e in lr_steps))
        if lr_schedule == "plateau" and self.lr_steps:
            raise ValueError(f"{func}: lr_steps apply to lr_schedule='step', got "
                             f"lr_steps={self.lr_steps} with lr_schedule='plateau'")
        if not 0 < lr_drop <= 1:
            raise ValueError(f"{func}: lr_drop must be in (0, 1], got {lr_drop}")
        self.base_lr = float(lr)
        self.sizes = sizes
        self.base = max(sizes)
        self.eval_size = self.base if eval_size is None else check_int(eval_size, "eval_size",
                                                                        func)
        self.batch_size = check_int(batch_size, "batch_size", func)
        self.patience = check_int(patience, "patience", func)
        self.seed = check_int(seed, "seed", func, minimum=0)
        self.lr_drop, self.jitter, self.progress = float(lr_drop), float(jitter), progress
        self.net, self.train_set, self.val_set = net, train_set, val_set
        self.mean, self.std = channel_stats(train_set.images)
        self.net.to(self.device)
        self.optimizer = SGD(net, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.out_dir = out_dir
        self.history: list[dict] = []
        self.epoch = 0  # epochs completed
        self.plateau = PlateauRule(self.patience)  # used when lr_schedule == "plateau"

    # ----------------------------------------------------------------- schedule
    def size_for_epoch(self, epoch: int) -> int:
        """The training input size of ``epoch`` (0-based) under the schedule."""
        if self.schedule == "single":
            return self.sizes[0]
        if self.schedule == "multi":
            return self.sizes[epoch % len(self.sizes)]
        lo, hi = min(self.sizes), max(self.sizes)
        return int(_rng(self.seed, epoch, 2).integers(lo, hi + 1))

    # ----------------------------------------------------------------- checkpoints
    @property
    def checkpoint_path(self) -> str | None:
        return None if self.out_dir is None else os.path.join(self.out_dir, "checkpoint.npz")

    def extra_state(self) -> dict:
        """Everything but the parameters needed to resume: optimiser buffers (``opt/...``),
        lr, epoch, plateau counters, history, normalisation."""
        extra = {f"opt/{k}": v for k, v in self.optimizer.state_dict().items()}
        extra.update({"epoch": self.epoch, "lr": self.optimizer.lr,
                      "best_error": self.plateau.best, "bad_epochs": self.plateau.bad,
                      "history": self.history, "seed": self.seed, "sizes": list(self.sizes),
                      "schedule": self.schedule, "lr_schedule": self.lr_schedule,
                      "lr_steps": list(self.lr_steps), "mean": self.mean.tolist(),
                      "std": self.std.tolist()})
        return extra

    def save_checkpoint(self, path: str | None = None) -> str:
        """Atomically write the parameters and :meth:`extra_state` to ``path`` (default
        ``out_dir/checkpoint.npz``) with :func:`tinyspp.nn.save_checkpoint`."""
        path = path or self.checkpoint_path
        if path is None:
            raise ValueError("Trainer.save_checkpoint: no path given and out_dir is None")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        save_checkpoint(path, self.net.state_dict(), extra=self.extra_state())
        return path

    def load_checkpoint(self, path: str | None = None) -> Trainer:
        """Restore a checkpoint written by :meth:`save_checkpoint`; training continues after
        the epoch it recorded."""
        path = path or self.checkpoint_path
        if path is None or not os.path.exists(path):
            raise FileNotFoundError(f"Trainer.load_checkpoint: no checkpoint at {path!r}")
        net_state, meta = load_checkpoint(path, func="Trainer.load_checkpoint")
        saved = (meta.get("schedule"), tuple(meta.get("sizes", ())), meta.get("seed"),
                 meta.get("lr_schedule"), tuple(meta.get("lr_steps", ())))
        mine = (self.schedule, self.sizes, self.seed, self.lr_schedule, self.lr_steps)
        if saved != mine:
            raise ValueError(
                f"Trainer.load_checkpoint: {path!r} was written with schedule, sizes, seed, "
                f"lr_schedule, lr_steps = {saved}, but this trainer has {mine}; "
                "resuming would not continue the same run")
        opt_state = {k[4:]: v for k, v in meta.items() if k.startswith("opt/")}
        self.net.load_state_dict(net_state)
        self.net.to(self.device)
        self.optimizer.load_state_dict(opt_state)
        self.optimizer.to(self.device)
        self.optimizer.lr = meta["lr"]
        self.epoch, self.history = meta["epoch"], meta["history"]
        self.plateau.best, self.plateau.bad = dict(meta["best_error"]), meta["bad_epochs"]
        self.mean = np.array(meta["mean"], np.float32)
        self.std = np.array(meta["std"], np.float32)
        return self

    def _write_history(self) -> None:
        if self.out_dir is None:
            return
        os.makedirs(self.out_dir, exist_ok=True)
        path = os.path.join(self.out_dir, "history.json")
        with open(path + ".tmp", "w") as fh:
            json.dump(self.history, fh, indent=1)
        os.replace(path + ".tmp", path)

    # ----------------------------------------------------------------- training
    def _seed_dropout(self, epoch: int) -> None:
        """Give every dropout layer the generator of this epoch (so resume replays masks)."""
        for i, layer in enumerate(self.net):
            if isinstance(layer, Dropout):
                layer.rng = _rng(self.seed, epoch, 100 + i)

    def train_epoch(self) -> dict:
        """Run one epoch (epoch number ``self.epoch``); return its history entry."""
        epoch, size = self.epoch, self.size_for_epoch(self.epoch)
        rng = _rng(self.seed, epoch, 1)
        self._seed_dropout(epoch)
        self.net.train()
        order = rng.permutation(len(self.train_set))
        n_batches = -(-len(order) // self.batch_size)
        total_loss = total_correct = seen = 0
        t0 = time.perf_counter()
        bar = tqdm(range(n_batches), desc=f"epoch {epoch + 1} size {size}", leave=False,
                   disable=not self.progress, unit="batch")
        for b in bar:
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = train_batch([self.train_set.images[i] for i in idx], size, rng, base=self.base,
                            jitter=self.jitter)
            x = to_device(normalize(x, self.mean, self.std), self.device)
            y = to_device(self.train_set.labels[idx], self.device)
            logits = self.net.forward(x)
            loss, dlogits = softmax_cross_entropy(logits, y)
            loss = float(loss)
            if not np.isfinite(loss):
                kept = self.checkpoint_path if self.checkpoint_path and os.path.exists(
                    self.checkpoint_path) else "none written"
                raise FloatingPointError(
                    f"Trainer: loss became {loss} at epoch {epoch + 1}, batch {b + 1} "
                    f"(lr={self.optimizer.lr:g}); training stopped. Last good checkpoint: {kept}")
            self.net.backward(dlogits, input_grad=False)
            self.optimizer.step()
            total_loss += loss * len(idx)
            total_correct += int((asnumpy(logits).argmax(axis=1) == asnumpy(y)).sum())
            seen += len(idx)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{total_correct / seen:.3f}")
        bar.close()
        entry = {"epoch": epoch + 1, "size": size, "lr": self.optimizer.lr,
                 "train_loss": total_loss / seen, "train_error": 1 - total_correct / seen,
                 "seconds": time.perf_counter() - t0, "images_per_s": seen / (
                     time.perf_counter() - t0)}
        if self.val_set is not None and len(self.val_set):
            val = self.evaluate(self.val_set, view="center", size=self.eval_size)
            entry.update(val_loss=val["loss"], val_error=val["error"])
        return entry

    def lr_for_epoch(self, epoch: int) -> float:
        """The step schedule's learning rate of ``epoch`` (0-based); ``"plateau"`` keeps the
        current rate."""
        if self.lr_schedule == "step":
            return step_lr(self.base_lr, epoch, self.lr_steps, self.lr_drop)
        return self.optimizer.lr

    def _update_lr(self, entry: dict) -> None:
        """Plateau rule, like for like (:class:`PlateauRule`): compare the validation error of
        this epoch only with the best earlier epoch trained at the same size."""
        if self.lr_schedule != "plateau" or "val_error" not in entry:
            return
        if self.plateau.update(entry["size"], entry["val_error"]):
            self.optimizer.lr *= self.lr_drop

    def fit(self, epochs: int, *, resume: bool = False) -> list[dict]:
        """Train until ``epochs`` epochs are completed in total; return the history.

        With ``resume=True`` and a checkpoint in ``out_dir``, continue from it.
        """
        epochs = check_int(epochs, "epochs", "Trainer.fit", minimum=0)
        if resume and self.checkpoint_path and os.path.exists(self.checkpoint_path):
            self.load_checkpoint()
        while self.epoch < epochs:
            self.optimizer.lr = self.lr_for_epoch(self.epoch)
            entry = self.train_epoch()
            self._update_lr(entry)
            self.epoch += 1
            self.history.append(entry)
            if self.progress:
                msg = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                for k, v in entry.items() if k not in ("seconds",))
                tqdm.write(msg)
            if self.out_dir is not None:
                self.save_checkpoint()
                self._write_history()
        return self.history

    def evaluate(self, dataset: ImageSet, *, view: str = "center", size: int | None = None,
                 batch_size: int = 64) -> dict:
        """:func:`evaluate` with this trainer's normalisation and device."""
        return evaluate(self.net, dataset, view=view, size=size or self.eval_size,
                        mean=self.mean, std=self.std, device=self.device, batch_size=batch_size)
