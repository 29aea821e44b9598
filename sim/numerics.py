"""The integer arithmetic of the post-processing stage (vdla.isa.PostParams), in numpy.

One implementation, used by the layer reference and the instruction-set simulator alike.
"""

import numpy as np

__all__ = ["wrap32", "rshift_round", "post", "post_add"]


def wrap32(x):
    """Two's-complement wrap of int64 values to int32 (the accumulator's width)."""
    x = np.asarray(x, np.int64)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def rshift_round(v, shift):
    """``(v + ((1 << shift) >> 1)) >> shift`` with an arithmetic shift (ties round up)."""
    v = np.asarray(v, np.int64)
    shift = np.asarray(shift, np.int64)
    half = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    return np.right_shift(v + half, shift)


def _finish(v, shift, zp_out, lo, hi):
    y = np.asarray(zp_out, np.int64) + rshift_round(v, shift)
    return np.clip(y, lo, hi).astype(np.int8)


def post(acc, bias, mult_a, shift, zp_out, lo, hi):
    """CONV / pooling post-processing; ``acc`` broadcasts against the per-channel arrays."""
    v = wrap32(np.asarray(acc, np.int64) + np.asarray(bias, np.int64)) * np.asarray(mult_a, np.int64)
    return _finish(v, shift, zp_out, lo, hi)


def post_add(a, b, bias, mult_a, mult_b, zp_a, zp_b, shift, zp_out, lo, hi):
    """ADD post-processing of two int8 operands."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    v = (a - np.asarray(zp_a, np.int64)) * np.asarray(mult_a, np.int64) \
        + (b - np.asarray(zp_b, np.int64)) * np.asarray(mult_b, np.int64) \
        + np.asarray(bias, np.int64)
    return _finish(v, shift, zp_out, lo, hi)
