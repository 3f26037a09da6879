"""Exercise: the adaptive bins of one pyramid level along one axis (notebook 01_bin_math).

Task: return the ``n`` half-open ranges ``(start, end)`` of the paper's Appendix rule,

    start_i = floor(i * size / n),    end_i = ceil((i + 1) * size / n),    i = 0 .. n-1,

as a list of ``n`` pairs of ints. Example: ``bin_edges(10, 3) == [(0, 4), (3, 7), (6, 10)]``.

Check it with ``python -m tinyspp grade exercises/ --only bin_edges``.
"""


def bin_edges(size, n):
    """The n adaptive bins of an axis of length ``size >= 1``: ``[(start, end), ...]``."""
    raise NotImplementedError(
        'bin_edges: use integer arithmetic only: floor(p/q) is p // q and ceil(p/q) is (p + q'
        ' - 1) // q (a float bin width rounds some edges to the wrong side)'
    )
