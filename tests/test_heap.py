"""tinyspp.ops.heap: glibc's thresholds set at import, the opt-outs, and the page faults saved.

Each case runs a fresh interpreter: the settings are process-wide and made once at import.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from tinyspp.ops import heap

GLIBC = heap._glibc() is not None
needs_glibc = pytest.mark.skipif(not GLIBC, reason="the C library is not glibc")


def run(code: str, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in heap.GLIBC_VARIABLES and k != "TINYSPP_KEEP_FREED"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env={**clean, **env}, timeout=120)


STATUS = "import tinyspp.ops.heap as h, tinyspp; print(h.status())"


@needs_glibc
def test_import_applies_the_thresholds():
    proc = run(STATUS)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ("applied: glibc mmap threshold 32 MiB, "
                                   "trim threshold 64 MiB")


def test_opt_out_keeps_glibcs_defaults():
    proc = run(STATUS, TINYSPP_KEEP_FREED="0")
    assert proc.stdout.strip() == "off ($TINYSPP_KEEP_FREED=0): glibc's defaults"


@pytest.mark.parametrize("name", heap.GLIBC_VARIABLES)
def test_the_environments_glibc_settings_win(name):
    proc = run(STATUS, **{name: "1048576"})
    assert proc.stdout.strip() == f"left to the environment's {name}"


@pytest.mark.parametrize("value", ["yes", "2", ""])
def test_a_bad_setting_is_an_error_naming_the_variable(value):
    proc = run("import tinyspp", TINYSPP_KEEP_FREED=value)
    assert proc.returncode != 0
    assert f"TINYSPP_KEEP_FREED must be 0 or 1, got {value!r}" in proc.stderr


FAULTS = """
    import resource
    import numpy as np
    import tinyspp.ops

    def step():  # a step's worth of big arrays, touched, then all freed together
        arrays = [np.ones(1 << 19, np.float32) for _ in range(8)]  # 8 x 2 MiB
        del arrays

    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        step()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


@needs_glibc
def test_freed_memory_is_reused_without_page_faults():
    """glibc's defaults trim the 16 MiB freed at the end of every step and fault it back in
    (4096 pages of 4 KiB); with the thresholds set, the next step reuses it."""
    kept = float(run(FAULTS).stdout)
    default = float(run(FAULTS, TINYSPP_KEEP_FREED="0").stdout)
    assert default > 2000, default
    assert kept < 100, kept
