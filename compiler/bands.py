"""Kernel row bands: a convolution whose weights exceed a WBUF half, as a sum of convolutions.

Rows ``ky0..ky0+r`` of a ``kh x kw`` kernel are a ``r x kw`` convolution of the input shifted
down by ``ky0`` rows, i.e. with ``pad_top - ky0`` top padding (negative: rows cropped). Each
band of an output tile is one CONV over its own input rows, accumulated in ABUF; the sum is
exact (int32 wrapping addition is associative).
"""

import dataclasses

__all__ = ["kernel_bands", "band_tile"]


def kernel_bands(kh, rows):
    """``[(ky0, r)]``: the kernel's rows in bands of at most ``rows``."""
    return [(ky0, min(rows, kh - ky0)) for ky0 in range(0, kh, rows)]


def band_tile(g, t, ky0, r):
    """The :class:`.tiling.Tile` band ``(ky0, r)`` of output tile ``t`` reads.

    A band lying wholly in the top or bottom padding for this tile still adds
    ``pad_value * weights``: it reads one stored row with a top padding that puts every
    window row above it (its ``pad_top`` may then exceed the field; the tiler checks)."""
    lo = t.oy0 * g.stride - g.pad_top + ky0
    span = (t.th - 1) * g.stride + r
    y0 = max(lo, 0)
    in_h = min(lo + span, g.H) - y0
    if in_h <= 0:
        return dataclasses.replace(t, y0=0, in_h=1, pad_top=max(-lo, span))
    return dataclasses.replace(t, y0=y0, in_h=in_h, pad_top=y0 - lo)
