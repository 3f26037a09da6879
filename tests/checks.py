"""Small assertion helpers shared by the test modules."""

import re

import pytest


def raises_exactly(exc, message):
    """``pytest.raises`` that checks the whole message, not a regular-expression search in it."""
    return pytest.raises(exc, match=f"^{re.escape(message)}$")


def assert_compiles_without_warnings(kernel, tmp_path):
    """The C++ file of a kernel module (``kernel.SOURCE_NAME``, built with ``kernel.flags()``)
    compiles with ``-Wall -Wextra`` and no warning."""
    import subprocess

    from tinyspp.kernels import common, emulate

    src = tmp_path / kernel.SOURCE_NAME
    src.write_text(common.kernel_source(kernel.SOURCE_NAME))
    proc = subprocess.run([emulate.find_compiler(), *kernel.flags(), "-Wall", "-Wextra",
                           "-fsyntax-only", str(src)], capture_output=True, text=True)
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr


def assert_input_gradient_is_the_adjoint(x, w, pad, dout, dx):
    """The convolution is linear in ``x``, so sum(conv(x) * dout) over every output (bias left
    out) equals sum(x * dx): ``dx`` is the adjoint's image of ``dout``. Checked against the
    loop-by-loop formula in float64, relative to the sum of the terms' magnitudes, with a
    tolerance for ``dx``'s dtype."""
    import numpy as np

    from tinyspp.ops.conv import conv2d_forward_naive

    x64, w64, zero = x.astype(np.float64), w.astype(np.float64), np.zeros(w.shape[0])
    lhs = (conv2d_forward_naive(x64, w64, zero, pad=pad) * dout).sum()
    scale = (conv2d_forward_naive(np.abs(x64), np.abs(w64), zero, pad=pad) * np.abs(dout)).sum()
    tol = 1e-5 if dx.dtype == np.float32 else 1e-12
    assert abs(lhs - (x64 * dx).sum()) <= tol * scale
