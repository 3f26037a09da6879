"""Where one SGD step of the small SPP-net spends its time (section ``profile``).

The step of :mod:`tinyspp.bench.training` (batch 32, 3x32x32 and 3x48x48), taken apart: every
layer's forward and backward timed on the activations the step really sees, the SGD update and
the loss, and, inside the convolutions, the pieces of ``conv2d_forward`` / ``conv2d_backward``
(im2col, compiled and in NumPy; the GEMMs; the layout transpose; col2im, both ways; or, where
the direct kernel runs, its forward and weight gradient -- the first layer; or, where the
blocked kernel runs, its copies into and out of the blocks and its three kernels).
Each piece is timed alone (median of repeats), so the pieces of a layer need not add up exactly
to its total. Layers run one by one in the written order (a ReLU before its pooling, not the
swapped pair that ``Sequential`` runs). Everything runs on ONE thread (BLAS and tinyspp's
element-wise passes): a piece's time is then its own work, not a wait for a second thread
that another job on a shared machine holds off its core. No torch here: this is a map of our
own time.
"""

from __future__ import annotations

import numpy as np

from .common import Row, median_ms, one_thread
from .training import BATCH, setup

SIZES = (32, 48)


def _direct_pieces(layer, x, dout, repeats, dw: bool = True):
    """Time the pieces of a convolution that runs the direct kernel: its forward and (``dw``:
    a first layer) its weight gradient and the bias gradient (``tinyspp/kernels/direct.cpp``)."""
    from ..kernels import direct

    w, b, p = layer.params["w"], layer.params["b"], layer.pad
    F, C, kh, kw = w.shape
    out, grad = np.empty(dout.shape, dtype=x.dtype), np.zeros(w.shape, dtype=x.dtype)
    pieces = {"fwd: direct kernel (+ bias)": lambda: direct.forward(x, w, b, p, out)}
    if dw:
        pieces["bwd: direct kernel (dw)"] = lambda: direct.weight_grad(x, dout, kh, kw, p, grad)
        pieces["bwd: db sum"] = lambda: dout.sum(axis=(0, 2, 3))
    return {name: median_ms(fn, repeats) for name, fn in pieces.items()}


def blocked_pieces(x, w, b, pad: int, dout, need_dx: bool, repeats) -> dict:
    """Time the pieces of a convolution that runs the blocked kernel
    (``tinyspp/kernels/blocked.cpp``) as ``conv2d_forward`` / ``conv2d_backward`` call them,
    each over the whole batch: x and w to blocks, the kernel, the output back to NCHW; dout to
    blocks (padded for dx), the turned filters, the kernel again (dx) and back, the
    weight-gradient kernel, dw back, db."""
    from ..kernels import blocked

    t = x.dtype
    F, C, k, _ = w.shape
    N, _, H, W = x.shape
    B = blocked.block(t)
    xb = blocked.empty((N, blocked.blocks(C, t), H + 2 * pad, W + 2 * pad, B), t)
    wb = blocked.empty(blocked.weight_shape(F, C, k, k, t), t)
    bias, zero = np.zeros(wb.shape[0] * B, t), np.zeros(wb.shape[1] * B, t)
    ob = blocked.empty((N, wb.shape[0], *dout.shape[2:], B), t)
    out = np.empty(dout.shape, t)
    off = k - 1 - pad if need_dx else 0
    db = blocked.empty((N, wb.shape[0], dout.shape[2] + 2 * off, dout.shape[3] + 2 * off, B), t)
    turned = blocked.empty((wb.shape[1], wb.shape[0], k, k, B, B), t)
    dxb = blocked.empty((N, wb.shape[1], H, W, B), t)
    dx, dw, dwb = np.empty(x.shape, t), np.empty(w.shape, t), blocked.empty(wb.shape, t)
    for fn in (lambda: blocked.pack_input(x, pad, xb), lambda: blocked.pack_weights(w, wb),
               lambda: blocked.pack_input(dout, off, db),
               lambda: blocked.turn_weights(wb, turned)):
        fn()  # the inputs of the timed pieces
    pieces = {
        "fwd: x to blocks": lambda: blocked.pack_input(x, pad, xb),
        "fwd: w to blocks": lambda: blocked.pack_weights(w, wb),
        "fwd: blocked kernel (+ bias)": lambda: blocked.forward(xb, wb, bias, ob),
        "fwd: output to NCHW": lambda: blocked.unpack_output(ob, F, out),
        "bwd: dout to blocks": lambda: blocked.pack_input(dout, off, db),
    }
    if need_dx:
        pieces.update({
            "bwd: turned filters": lambda: blocked.turn_weights(wb, turned),
            "bwd: blocked kernel (dx)": lambda: blocked.forward(db, turned, zero, dxb),
            "bwd: dx to NCHW": lambda: blocked.unpack_output(dxb, C, dx),
        })
    pieces.update({
        "bwd: blocked kernel (dw)": lambda: blocked.weight_grad(xb, db, k, k, off, dwb),
        "bwd: dw to (F, C, k, k)": lambda: blocked.unpack_weights(dwb, dw),
        "bwd: db sum": lambda: dout.sum(axis=(0, 2, 3)),
    })
    return {name: median_ms(fn, repeats) for name, fn in pieces.items()}


def _conv_pieces(layer, x, dout, repeats):
    """Time the steps of ``conv2d_forward``/``conv2d_backward`` on ``x`` -> ``dout``.

    The GEMMs and copies of one whole batch (the layer works in image blocks and pieces, see
    ``tinyspp.ops.conv.image_blocks``; the work is the same), and both versions of im2col and
    col2im: the compiled loop the layer runs and the NumPy twin.
    """
    from ..ops.conv import col2im, conv_output_size, im2col

    w, b = layer.params["w"], layer.params["b"]
    F, C, k, _ = w.shape
    N, _, H, W = x.shape
    p, s = layer.pad, layer.stride
    oh, ow = conv_output_size(H, k, s, p), conv_output_size(W, k, s, p)
    cols = im2col(x, k, k, s, p)
    dout2 = np.ascontiguousarray(dout.transpose(1, 0, 2, 3)).reshape(F, -1)
    dcols = w.reshape(F, -1).T @ dout2
    out = np.empty((N, F, oh, ow), dtype=x.dtype)
    w2, P = w.reshape(F, -1), oh * ow

    per_image = [np.ascontiguousarray(cols[:, n * P:(n + 1) * P]) for n in range(N)]

    def gemms_into_out():  # as the layer runs them: each image's own (cached) columns
        for n in range(N):
            np.matmul(w2, per_image[n], out=out[n].reshape(F, P))

    pieces = {
        "fwd: im2col (compiled loop)": lambda: im2col(x, k, k, s, p, impl="cpu"),
        "fwd: im2col (NumPy: pad + strided copy)": lambda: im2col(x, k, k, s, p, impl="xp"),
        "fwd: GEMMs w @ cols, one per image, into out": gemms_into_out,
        "fwd: bias": lambda: np.add(out, b.reshape(F, 1, 1), out=out),
        "bwd: dout (N,F)->(F,N) transpose": lambda: np.ascontiguousarray(
            dout.transpose(1, 0, 2, 3)),
        "bwd: db sum": lambda: dout2.sum(axis=1),
        "bwd: GEMM (dw)": lambda: (cols @ dout2.T).T,
        "bwd: GEMM w.T @ dout (dcols)": lambda: w2.T @ dout2,
        "bwd: col2im (compiled loop)": lambda: col2im(dcols, x.shape, k, k, s, p, impl="cpu"),
        "bwd: col2im (NumPy: strided adds)": lambda: col2im(dcols, x.shape, k, k, s, p,
                                                            impl="xp"),
    }
    return {name: median_ms(fn, repeats) for name, fn in pieces.items()}


def _forward_direct(layer, x) -> bool:
    """Whether ``layer``'s forward runs the direct kernel on ``x`` (False for code from before
    the kernel took more than a first layer)."""
    from ..ops import conv

    return hasattr(conv, "DIRECT_DW_MAX_CHANNELS") and conv._use_direct(
        x, layer.params["w"], layer.stride)


def _dx_direct(layer, dout) -> bool:
    """Whether ``layer``'s backward computes dx by the direct kernel (False for older code)."""
    from ..ops import conv

    return hasattr(conv, "_direct_dx") and conv._direct_dx(layer._cache, dout)


def _direct_dx_ms(layer, dout, repeats) -> float:
    """The direct kernel's dx of ``layer`` for ``dout``: the convolution of ``dout`` with the
    filters turned by 180 degrees and their channel axes swapped, as ``conv2d_backward`` runs it."""
    from ..kernels import direct
    from ..ops.conv import transposed_convolution

    turned, zero, pad = transposed_convolution(layer.params["w"], layer.pad)
    d = np.ascontiguousarray(dout)
    dx = np.empty(layer._cache.x_shape, dtype=d.dtype)
    return median_ms(lambda: direct.forward(d, turned, zero, pad, dx), repeats)


def profile_step(size: int, repeats: int) -> list[tuple[str, float]]:
    """``(what, ms)`` for every piece of one SGD step at ``size`` px."""
    from ..nn import Conv2d
    from ..ops import softmax_cross_entropy

    net, opt, x, y = setup(size)
    inputs, h = [], x
    for layer in net:  # the activations of one forward pass
        inputs.append(h)
        h = layer.forward(h)
    loss, dlogits = softmax_cross_entropy(h, y)
    douts, d = [None] * len(net), dlogits
    for i in range(len(net) - 1, -1, -1):
        douts[i] = d
        d = net[i].backward(d) if i else net[i].backward(d, need_dx=False)
    opt.step()
    out = []
    for i, layer in enumerate(net):
        name = f"{i} {type(layer).__name__}"

        def fwd(layer=layer, h=inputs[i]):
            layer.forward(h)

        def bwd(layer=layer, h=inputs[i], d=douts[i], first=(i == 0)):
            if isinstance(layer, Conv2d):
                layer.backward(d, need_dx=not first)
            else:
                layer.backward(d)

        out.append((f"{name} forward", median_ms(fwd, repeats)))
        layer.forward(inputs[i])
        out.append((f"{name} backward", median_ms(bwd, repeats)))
        if isinstance(layer, Conv2d) and getattr(layer._cache, "packed", None) is not None:
            w, b = layer.params["w"], layer.params["b"]
            out += [(f"{name}   {k}", v) for k, v in blocked_pieces(
                inputs[i], w, b, layer.pad, douts[i], i > 0, repeats).items()]
        elif isinstance(layer, Conv2d) and layer._cache.direct:
            out += [(f"{name}   {k}", v) for k, v in
                    _direct_pieces(layer, inputs[i], douts[i], repeats).items()]
        elif isinstance(layer, Conv2d):
            pieces = _conv_pieces(layer, inputs[i], douts[i], repeats)
            dx_direct = i > 0 and _dx_direct(layer, douts[i])
            if i == 0 or dx_direct:  # no dx (a first layer), or dx by the direct kernel
                for piece in [k for k in pieces if "dcols" in k or "col2im" in k]:
                    pieces.pop(piece)
            if dx_direct:
                pieces["bwd: dx by the direct kernel"] = _direct_dx_ms(layer, douts[i], repeats)
            if _forward_direct(layer, inputs[i]):  # the backward gathers columns from x
                fwd = _direct_pieces(layer, inputs[i], douts[i], repeats, dw=False)
                pieces = {**fwd, **{k.replace("fwd: im2col", "bwd: im2col from x"): v
                                    for k, v in pieces.items()
                                    if k.startswith(("fwd: im2col", "bwd"))}}
            out += [(f"{name}   {k}", v) for k, v in pieces.items()]
    out.append(("loss softmax_cross_entropy", median_ms(lambda: softmax_cross_entropy(h, y),
                                                        repeats)))
    out.append(("SGD.step", median_ms(opt.step, repeats)))
    return out


def profile_conv(x_shape, w_shape, pad: int, repeats: int) -> list[tuple[str, float]]:
    """``(what, ms)`` for a convolution of the layers benchmark by im2col + GEMM (with the
    direct kernels off where they would run): its
    whole forward and backward, then each step of them over every piece of the batch as
    ``conv2d_forward`` / ``conv2d_backward`` cut it (``ops.conv.image_blocks``), so the pieces
    add up to about the whole; what is left beside the GEMMs is the work im2col + GEMM adds."""
    from unittest import mock

    from ..ops import conv
    from .layers import conv_data, data

    if conv._use_direct(np.empty((1, *x_shape[1:]), np.float32),
                        np.empty(w_shape, np.float32), 1) or _runs_blocked(x_shape, w_shape, pad):
        with mock.patch.object(conv, "DIRECT_IMPL", "off"):  # the im2col + GEMM it profiles
            return profile_conv(x_shape, w_shape, pad, repeats)
    x, w, b = conv_data(x_shape, w_shape)
    F, C, k, _ = w_shape
    N, _, H, W = x_shape
    oh, ow = conv.conv_output_size(H, k, 1, pad), conv.conv_output_size(W, k, 1, pad)
    P, K = oh * ow, C * k * k
    out, cache = conv.conv2d_forward(x, w, b, pad=pad)
    dout = data(out.shape, 5)
    blocks = conv.image_blocks(N, K * P, P)
    pieces = [piece for block in blocks for piece in block]
    cols, w2, bias = cache.cols, w.reshape(F, K), b.reshape(F, 1)
    per_image = [K < conv.ONE_GEMM_RATIO * P or n1 - n0 == 1 for n0, n1 in pieces]
    prod = {p: np.empty((F, (p[1] - p[0]) * P), np.float32)  # one-GEMM pieces' products
            for p, one in zip(pieces, per_image) if not one}
    d = {p: conv._to_gemm_layout(dout[p[0]:p[1]]) for p in pieces}
    dcols = {p: np.empty((K, (p[1] - p[0]) * P), np.float32) for p in pieces}
    dx = np.empty(x_shape, np.float32)
    parts = [sum(cols[:, n0 * P:n1 * P] @ d[n0, n1] for n0, n1 in block) for block in blocks]

    def im2col_all():
        for n0, n1 in pieces:
            conv.im2col(x[n0:n1], k, k, 1, pad, out=cols[:, n0 * P:n1 * P])

    def gemms_forward():
        for (n0, n1), one in zip(pieces, per_image):
            c, m = cols[:, n0 * P:n1 * P], n1 - n0
            if one:
                np.matmul(w2, c.reshape(-1, m, P).transpose(1, 0, 2),
                          out=out[n0:n1].reshape(m, F, P))
            else:
                np.matmul(w2, c, out=prod[n0, n1])

    def bias_pass():
        for (n0, n1), one in zip(pieces, per_image):
            m = n1 - n0
            if one:
                out[n0:n1].reshape(m, F, P).__iadd__(bias)
            else:
                np.add(prod[n0, n1].reshape(F, m, P).transpose(1, 0, 2), bias,
                       out=out[n0:n1].reshape(m, F, P))

    steps = {
        "whole forward": lambda: conv.conv2d_forward(x, w, b, pad=pad, workspace=cols),
        "whole backward": lambda: conv.conv2d_backward(dout, cache),
        "fwd: im2col": im2col_all,
        "fwd: GEMMs w @ cols" + (" (one per image)" if all(per_image) else
                                 " (one per piece)" if not any(per_image) else ""):
            gemms_forward,
        "fwd: bias" + ("" if all(per_image) else " + transposing pass"): bias_pass,
        "bwd: db sum": lambda: dout.sum(axis=(0, 2, 3)),
        "bwd: dout to the GEMM layout": lambda: [conv._to_gemm_layout(dout[n0:n1])
                                                  for n0, n1 in pieces],
        "bwd: GEMMs cols @ d (dw)": lambda: [cols[:, n0 * P:n1 * P] @ d[n0, n1]
                                             for n0, n1 in pieces],
        "bwd: GEMMs w.T @ d.T (dcols)": lambda: [np.matmul(w2.T, d[p].T, out=dcols[p])
                                                 for p in pieces],
        "bwd: col2im": lambda: [conv.col2im(dcols[n0, n1], (n1 - n0, C, H, W), k, k, 1, pad,
                                            out=dx[n0:n1]) for n0, n1 in pieces],
        "bwd: dw's parts summed and transposed": lambda: conv.sum_transposed(parts),
    }
    label = f"conv x{tuple(x_shape)} w{tuple(w_shape)}"
    return [(f"{label}: {name}", median_ms(fn, repeats)) for name, fn in steps.items()]


def profile_blocked(x_shape, w_shape, pad: int, repeats: int) -> list[tuple[str, float]]:
    """``(what, ms)`` for a convolution of the layers benchmark as the blocked kernel runs it:
    its whole forward and backward, then each piece (:func:`blocked_pieces`); what is left
    beside the kernels is the work of the blocked layout (copies in and out)."""
    from ..ops import conv
    from .layers import conv_data, data

    x, w, b = conv_data(x_shape, w_shape)
    out, cache = conv.conv2d_forward(x, w, b, pad=pad)
    dout = data(out.shape, 5)
    steps = {"whole forward": lambda: conv.conv2d_forward(x, w, b, pad=pad),
             "whole backward": lambda: conv.conv2d_backward(dout, cache)}
    label = f"conv x{tuple(x_shape)} w{tuple(w_shape)}, blocked"
    timed = [(f"{label}: {name}", median_ms(fn, repeats)) for name, fn in steps.items()]
    return timed + [(f"{label}: {name}", ms) for name, ms in
                    blocked_pieces(x, w, b, pad, dout, True, repeats).items()]


def _runs_blocked(x_shape, w_shape, pad: int) -> bool:
    """Whether ``conv2d_forward`` runs this shape on the blocked kernel (False for older
    trees, which have none)."""
    from ..ops import conv

    return hasattr(conv, "_use_blocked") and conv._use_blocked(
        np.empty((1, *x_shape[1:]), np.float32), np.empty(w_shape, np.float32), 1, pad)


def run(opts) -> list[Row]:
    from ..ops import conv
    from .layers import CONV

    rows = []
    with one_thread():  # each piece's own work (see the module docstring)
        for size in SIZES:
            for what, ms in profile_step(size, opts.repeats):
                rows.append(Row("profile", f"{BATCH}x3x{size}x{size}: {what}", ms,
                                note="1 thread"))
        for x_shape, w_shape, pad in CONV:  # the layers benchmark's im2col + GEMM shapes
            if hasattr(conv, "sum_transposed") and w_shape[1] > conv.DIRECT_MAX_CHANNELS:
                # im2col + GEMM (the blocked kernel's twin), then the blocked kernel's pieces
                for what, ms in profile_conv(x_shape, w_shape, pad, max(3, opts.repeats // 3)):
                    rows.append(Row("profile", what, ms, note="1 thread"))
                if _runs_blocked(x_shape, w_shape, pad):
                    for what, ms in profile_blocked(x_shape, w_shape, pad,
                                                    max(3, opts.repeats // 3)):
                        rows.append(Row("profile", what, ms, note="1 thread"))
    return rows
