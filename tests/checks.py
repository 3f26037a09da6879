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
