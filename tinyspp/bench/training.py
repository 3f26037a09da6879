"""Training throughput of the small SPP-net: one SGD step (forward, backward, update) on a
batch of 32 images at two input sizes, tinyspp vs the same network built in torch (CPU)."""

from __future__ import annotations

import numpy as np

from .common import Row, median_ms

BATCH = 32
SIZES = (32, 48)
NUM_CLASSES = 10
LEVELS = (4, 2, 1)


def _ours(size: int, opts):
    from ..nn import SGD, small_spp_net
    from ..ops import softmax_cross_entropy

    net = small_spp_net(NUM_CLASSES, 3, levels=LEVELS, seed=0)
    device = "gpu" if opts.gpu else "cpu"
    net.to(device)
    opt = SGD(net, lr=0.01, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 3, size, size)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, BATCH)
    if opts.gpu:
        from ..backend import to_device

        x, y = to_device(x, "gpu"), to_device(y, "gpu")
    net.train()

    def step():
        loss, dlogits = softmax_cross_entropy(net.forward(x), y)
        net.backward(dlogits, input_grad=False)
        opt.step()

    sync = None
    if opts.gpu:
        import cupy

        sync = cupy.cuda.Device().synchronize
    return median_ms(step, repeats=opts.repeats, sync=sync)


def torch_spp_net(torch, num_classes: int = NUM_CLASSES, levels=LEVELS):
    """The same architecture as :func:`tinyspp.nn.small_spp_net` in torch."""
    nn = torch.nn

    class SPP(nn.Module):
        def forward(self, x):
            N = x.shape[0]
            return torch.cat([nn.functional.adaptive_max_pool2d(x, n).reshape(N, -1)
                              for n in levels], dim=1)

    M = sum(n * n for n in levels)
    return nn.Sequential(
        nn.Conv2d(3, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        SPP(), nn.Linear(64 * M, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, num_classes))


def _torch(torch, size: int, opts):
    torch.manual_seed(0)
    net = torch_spp_net(torch)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(BATCH, 3, size, size)
    y = torch.randint(0, NUM_CLASSES, (BATCH,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()

    return median_ms(step, repeats=opts.repeats)


def run(opts) -> list[Row]:
    rows = []
    for size in SIZES:
        ours = _ours(size, opts)
        theirs = None if opts.torch is None or opts.gpu else _torch(opts.torch, size, opts)
        note = f"ours {BATCH / ours * 1e3:.0f} img/s"
        if theirs is not None:
            note += f", torch {BATCH / theirs * 1e3:.0f} img/s"
        rows.append(Row("training", f"SGD step, small SPP-net, {BATCH}x3x{size}x{size}", ours,
                        theirs, note + (" (GPU)" if opts.gpu else "")))
    return rows
