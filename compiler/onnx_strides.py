"""Conv with unequal strides or dilation, on the layers that already exist.

* Dilation ``d``: the kernel with ``d - 1`` zero taps between its taps, a ``(k - 1) * d + 1``
  kernel. Zero weights add nothing to the sum or to the zero-point correction, and padded
  positions still read the zero point, so the layer is an ordinary, exact Conv (big kernels
  are cut into row bands by the tiler).
* Strides ``(2, 1)`` / ``(1, 2)``: output column (row) ``o = 2j + p`` of the stride-1 axis
  reads input ``2j + p - pad + k``: a stride-2 convolution with that axis' padding ``pad - p``
  (if negative, ``p - pad`` zero taps in front instead). The two parity phases, their outputs
  interleaved along that axis, make an :class:`ir.ConvTranspose` layer (its phases, SAVEs and
  reference already place pixels at a step per axis); every phase is an exact Conv.
"""

import numpy as np

from . import ir

__all__ = ["dilate", "phased_conv"]


def dilate(weight, dilations):
    """``(K, C, kh, kw)`` weights with ``dy - 1`` / ``dx - 1`` zero taps between taps."""
    dy, dx = dilations
    k, c, kh, kw = weight.shape
    out = np.zeros((k, c, (kh - 1) * dy + 1, (kw - 1) * dx + 1), weight.dtype)
    out[:, :, ::dy, ::dx] = weight
    return out


def _axis(n_in, k, lo, n_out, split, p):
    """``(zero taps in front, pad, pad at the end, outputs)`` of phase ``p`` along one axis
    (``split``: the stride-1 axis cut into parities; otherwise the axis as it is)."""
    if not split:
        return 0, lo, max(0, (n_out - 1) * 2 + k - n_in - lo), n_out
    front, pad = max(p - lo, 0), max(lo - p, 0)
    n = (n_out - p + 1) // 2
    return front, pad, max(0, (n - 1) * 2 + k + front - n_in - pad), n


def phased_conv(name, source, out_name, weight, strides, pads, in_hw, out_hw, pad_value, rq,
                groups):
    """The ``ir.ConvTranspose`` of two stride-2 phases computing a Conv of ``strides``."""
    split_y = strides[0] == 1
    kh, kw = weight.shape[2:]
    phases = []
    for p in (0, 1):
        ty, top, bottom, rows = _axis(in_hw[0], kh, pads[0], out_hw[0], split_y, p)
        tx, left, right, cols = _axis(in_hw[1], kw, pads[1], out_hw[1], not split_y, p)
        if rows < 1 or cols < 1:
            continue                    # a one-pixel-wide output has one phase only
        w = np.zeros((*weight.shape[:2], kh + ty, kw + tx), weight.dtype)
        w[:, :, ty:, tx:] = weight
        conv = ir.Conv(f"{name}_p{p}", source, out_name, w, 2, (top, left, bottom, right),
                       pad_value, rq, groups=groups)
        a, b = (p, 0) if split_y else (0, p)
        phases.append(ir.Phase(a, b, rows, cols, conv, (2, 1) if split_y else (1, 2)))
    return ir.ConvTranspose(name, source, out_name, phases)
