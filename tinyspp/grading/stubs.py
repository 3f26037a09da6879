"""The exercise stubs, one source: ``python -m tinyspp grade --init FOLDER`` writes them.

Each stub is a file ``NAME.py`` defining ``NAME``, whose docstrings state the task and whose body
raises ``NotImplementedError`` with a hint. :func:`stub_source` renders it; the repository's
``exercises/`` folder holds the rendered files as shipped (``tests/test_grade.py`` keeps them
equal), and students overwrite those copies, never this module.

>>> "def bin_edges(size, n):" in stub_source("bin_edges")
True
"""

from __future__ import annotations

from typing import NamedTuple


class Stub(NamedTuple):
    """The text of one stub: the module docstring (task, math, example), the function's
    arguments and one-line docstring, and the hint its NotImplementedError carries."""

    doc: str
    args: str
    summary: str
    hint: str


STUBS = {
    "softmax_cross_entropy": Stub(
        doc="""\
Exercise: softmax cross-entropy and its gradient (notebook 00_layers_backprop).

Task: for ``logits`` of shape ``(N, K)`` and integer ``labels`` of shape ``(N,)`` (values in
``[0, K)``), return ``(loss, dlogits)``: the mean over the batch of ``-log softmax(logits)[n,
labels[n]]`` as a float, and its gradient ``(softmax(logits) - onehot(labels)) / N``. It must
stay finite for huge logits (``1e4``): ``exp(1e4)`` overflows.""",
        args="logits, labels",
        summary='``(loss, dlogits)`` of the mean softmax cross-entropy of a batch.',
        hint=("subtract each row's maximum first; then log softmax = "
              'shifted - log(sum(exp(shifted))) along each row'),
    ),
    "conv2d_backward": Stub(
        doc="""\
Exercise: the backward pass of a 2-D convolution (notebook 00_layers_backprop).

The forward pass (cross-correlation, as in every deep-learning library) is
``out[n, f, i, j] = b[f] + sum_{c, p, q} xpad[n, c, i*stride + p, j*stride + q] * w[f, c, p, q]``
with ``xpad`` the input zero-padded by ``pad`` on every side and
``oh = (H + 2*pad - kh) // stride + 1``.

Task: given ``dout (N, F, oh, ow)``, ``x (N, C, H, W)``, ``w (F, C, kh, kw)``, ``stride`` and
``pad``, return ``(dx, dw, db)`` shaped like ``x``, ``w`` and ``(F,)``.""",
        args="dout, x, w, stride, pad",
        summary='``(dx, dw, db)`` of the convolution ``conv2d_forward(x, w, b, stride, pad)``.',
        hint=('db sums dout over n, i, j; dw[f] adds dout[n, f, i, j] times '
              'the window of xpad it saw; dxpad adds dout[n, f, i, j] * w[f] back onto that '
              'window; finally crop the padding: dx = dxpad[:, :, pad:pad + H, pad:pad + W]'),
    ),
    "bin_edges": Stub(
        doc="""\
Exercise: the adaptive bins of one pyramid level along one axis (notebook 01_bin_math).

Task: return the ``n`` half-open ranges ``(start, end)`` of the paper's Appendix rule,

    start_i = floor(i * size / n),    end_i = ceil((i + 1) * size / n),    i = 0 .. n-1,

as a list of ``n`` pairs of ints. Example: ``bin_edges(10, 3) == [(0, 4), (3, 7), (6, 10)]``.""",
        args="size, n",
        summary='The n adaptive bins of an axis of length ``size >= 1``: ``[(start, end), ...]``.',
        hint=('use integer arithmetic only: floor(p/q) is p // q and ceil(p/q) is (p'
              ' + q - 1) // q (a float bin width rounds some edges to the wrong side)'),
    ),
    "paper_window_stride": Stub(
        doc="""\
Exercise: the window and stride of the paper's Sec. 2.3 rule (notebook 01_bin_math).

Task: for an axis of length ``size`` pooled into ``n`` bins, return ``(window, stride)`` with
``window = ceil(size / n)`` and ``stride = floor(size / n)``. When ``size < n`` the stride would
be 0: raise ``ValueError`` with a message that names the problem. Example:
``paper_window_stride(13, 3) == (5, 4)`` (the paper's Fig. 4).""",
        args="size, n",
        summary='``(ceil(size/n), floor(size/n))``; a ValueError for ``size < n``.',
        hint=('two integer divisions, size // n and (size + n - 1) // n; '
              'check size < n first'),
    ),
    "spp_max": Stub(
        doc="""\
Exercise: adaptive max spatial pyramid pooling, forward (notebook 02_spp_layer).

Task: pool ``x`` of shape ``(N, C, H, W)`` with every level ``n`` of ``levels`` (e.g. ``(4, 2,
1)``): bin ``(by, bx)`` of level ``n`` is the maximum over rows ``floor(by*H/n) ..
ceil((by+1)*H/n) - 1`` and columns ``floor(bx*W/n) .. ceil((bx+1)*W/n) - 1``. Return an array
of shape ``(N, C * sum(n*n))`` in the library's layout: levels in the order given; within a
level channel-major, column ``offset + (c*n + by)*n + bx``.""",
        args="x, levels",
        summary='Max SPP of ``x (N, C, H, W)``: an ``(N, C * sum(n*n))`` array, dtype of ``x``.',
        hint=('loop over levels and bins, take x[:, :, y0:y1, x0:x1].max(axis=(2, 3)),'
              " reshape each level's (N, C, n, n) result to (N, C*n*n) and concatenate"),
    ),
    "spp_max_backward": Stub(
        doc="""\
Exercise: the gradient of adaptive max SPP (notebook 02_spp_layer).

Task: given the upstream gradient ``dout`` of shape ``(N, C * sum(n*n))`` (the layout of
``spp_max``), the input ``x (N, C, H, W)`` and ``levels``, return ``dx`` shaped like ``x``: each
bin's gradient goes to the cell holding the bin's maximum; when several cells tie, to the FIRST
of them in row-major order. Bins overlap and several bins can pick the same cell: their
gradients add up.""",
        args="dout, x, levels",
        summary='``dx`` of ``spp_max(x, levels)`` for the upstream gradient ``dout``.',
        hint=("for each bin, np.argmax over the bin's cells flattened in row-"
              'major order gives the first maximum; unravel it with divmod and ADD dout there '
              '(+=)'),
    ),
    "map_window": Stub(
        doc="""\
Exercise: map an image window onto the feature map (SPP-net Appendix A; notebook 04).

Task: ``box = [x0, y0, x1, y1]`` is a window in image pixels and ``stride`` the product ``S`` of
the strides up to the pooled feature map; feature cell ``x'`` is centred near pixel ``S * x'``.
Return the inclusive feature cells ``(x0', y0', x1', y1')`` (ints) of the paper's rule

    x0' = floor(x0 / S) + 1        x1' = ceil(x1 / S) - 1        (y likewise),

that is, the cells whose centre lies strictly inside the window. tinyspp's convention for a
window too small for any cell: on that axis it collapses to the single cell nearest the window's
centre, ``floor((x0 + x1) / (2 * S) + 1/2)``, so the result is never empty.
Example: ``map_window([0, 0, 100, 64], 16) == (1, 1, 6, 3)``.""",
        args="box, stride",
        summary="Inclusive feature cells ``(x0', y0', x1', y1')`` of the image window ``box``.",
        hint=('per axis, lo = x0 // S + 1 and hi = -(-x1 // S) - 1 (integer floor '
              'and ceil); if lo > hi use the centre cell (x0 + x1 + S) // (2 * S) for both'),
    ),
}


def stub_source(name: str) -> str:
    """The text of the stub file ``NAME.py`` of exercise ``name``."""
    stub = STUBS[name]
    hint = "\n".join(f"        {line!r}" for line in _wrap(f"{name}: {stub.hint}"))
    return (f'"""{stub.doc}\n\nCheck it with ``python -m tinyspp grade exercises/ --only {name}``.'
            f'\n"""\n\n\ndef {name}({stub.args}):\n    """{stub.summary}"""\n'
            f"    raise NotImplementedError(\n{hint}\n    )\n")


def _wrap(text: str, width: int = 84) -> list:
    """``text`` cut into pieces of at most ``width`` characters, at spaces (kept at line ends)."""
    import textwrap

    return textwrap.wrap(text, width, drop_whitespace=False, break_on_hyphens=False)

