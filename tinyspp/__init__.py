"""tinyspp: SPP-net (He, Zhang, Ren, Sun 2014) from scratch in NumPy and CuPy."""

__version__ = "0.1.0"
