"""Fixed-point helpers shared by the front end: real scales to integer multiplier and shift."""

import math

import numpy as np

__all__ = ["MULT_BITS", "quantize_multiplier", "quantize_multipliers", "clamp_range"]

#: Width of PostParams.mult_a / mult_b.
MULT_BITS = 16
MAX_SHIFT = 63


def quantize_multiplier(real, bits=MULT_BITS):
    """Return ``(mult, shift)`` with ``mult / 2**shift ~= real``, ``mult < 2**bits``.

    ``mult`` is normalized into ``[2**(bits-1), 2**bits)`` when the shift range allows, which
    keeps the relative error below ``2**-bits``.
    """
    real = float(real)
    if not math.isfinite(real) or real < 0:
        raise ValueError(f"requantization scale must be finite and >= 0, not {real!r}")
    if real == 0.0:
        return 0, 0
    mantissa, exponent = math.frexp(real)          # real = mantissa * 2**exponent, 0.5 <= m < 1
    shift = bits - exponent
    if shift < 0:
        raise ValueError(f"requantization scale {real:g} is too large (>= 2**{bits})")
    shift = min(shift, MAX_SHIFT)
    mult = round(real * 2.0 ** shift)
    if mult >= 1 << bits:                           # rounding carried into the next power
        mult >>= 1
        shift -= 1
    return int(mult), int(shift)


def quantize_multipliers(reals, bits=MULT_BITS):
    """Vector form of :func:`quantize_multiplier`: ``(mult[], shift[])`` as int64 arrays."""
    pairs = [quantize_multiplier(r, bits) for r in np.asarray(reals, np.float64).ravel()]
    mult = np.array([p[0] for p in pairs], np.int64)
    shift = np.array([p[1] for p in pairs], np.int64)
    return mult, shift


def clamp_range(scale, zero_point, low=None, high=None):
    """int8 clamp bounds ``(lo, hi)`` for a real-valued activation range (ReLU: low=0)."""
    lo, hi = -128, 127
    if low is not None:
        lo = max(lo, min(127, int(round(low / scale)) + zero_point))
    if high is not None:
        hi = min(hi, max(-128, int(round(high / scale)) + zero_point))
    return lo, hi
