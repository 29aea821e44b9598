"""``ConvTranspose`` with stride 2 as an :class:`ir.ConvTranspose` of four phase convolutions.

Along one axis, output ``o = 2t + a`` sums ``x[i] * w[k]`` over ``2i - pad + k = o``: the taps
``k = r, r + 2, ...`` with ``r = (a + pad) % 2``, at inputs ``q0 + t - m`` (``q0 = (a + pad) //
2``). That is a stride-1 correlation of the input with the flipped sub-kernel ``w[r::2][::-1]``
(``M`` taps) and top padding ``M - 1 - q0``. Padded positions read the input zero point, so each
phase gets its own zero-point correction of the bias (its sub-kernel's sum); the phases are
exact integer convolutions and the layer is as exact as a Conv.

ONNX Runtime's quantizer writes the weights ``(C, K, kh, kw)`` per tensor or per channel on
axis 1 (the output channels).
"""

import dataclasses

import numpy as np

from . import ir
from .onnx_lower import check_requant, linear
from .tiling import MAX_KERNEL, MAX_PAD

__all__ = ["parse_conv_transpose"]

_ATTRS = {"auto_pad", "dilations", "group", "kernel_shape", "output_padding", "output_shape",
          "pads", "strides"}


def _axis(n_in, k, pad, n_out, a):
    """``(r, taps, top pad, bottom pad, outputs)`` of output parity ``a`` along one axis."""
    r, q0 = (a + pad) % 2, (a + pad) // 2
    taps = (k - r + 1) // 2
    top = taps - 1 - q0
    n = (n_out - a + 1) // 2
    return r, taps, top, n - n_in - top + taps - 1, n


def _check(front, node, attrs, kernel):
    from .onnx_main import _ints          # onnx_main dispatches to this module
    g = front.g
    strides = _ints(front, node, attrs, "strides", [1, 1])
    if strides != [2, 2]:
        raise g.unsupported(node, f"strides={strides} are not supported (only [2, 2])")
    if _ints(front, node, attrs, "dilations", [1, 1]) != [1, 1]:
        raise g.unsupported(node, f"dilations={list(attrs['dilations'])} are not supported "
                            f"(only 1)")
    if attrs.get("group", 1) != 1:
        raise g.unsupported(node, f"group={attrs['group']} is not supported (only 1)")
    auto = attrs.get("auto_pad", b"NOTSET")
    if (auto.decode() if isinstance(auto, bytes) else auto) not in ("NOTSET", "VALID") \
            or "output_shape" in attrs:
        raise g.unsupported(node, "auto_pad and output_shape are not supported (give pads)")
    if min(kernel) < 2 or max(kernel) > 2 * MAX_KERNEL:
        raise g.unsupported(node, f"kernel {kernel} is not supported (2 to {2 * MAX_KERNEL})")
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    extra = _ints(front, node, attrs, "output_padding", [0, 0])
    if len(pads) != 4 or min(pads) < 0 or not all(0 <= e <= 1 for e in extra):
        raise g.unsupported(node, f"pads={pads} / output_padding={extra} are not supported")
    return pads, extra


def parse_conv_transpose(front, node):
    """Check ``node`` and return its :class:`~.onnx_main.Main`."""
    from .onnx_main import Main, _bias, _spatial_input, _weights
    g = front.g
    g.check_attrs(node, _ATTRS)
    attrs = g.attrs(node)
    view, x = _spatial_input(front, node)
    wq = _weights(front, node, node.input[1], 4)
    c, k, kh, kw = wq.values.shape
    if list(attrs.get("kernel_shape", [kh, kw])) != [kh, kw]:
        raise g.unsupported(node, "kernel_shape disagrees with the weights")
    pads, extra = _check(front, node, attrs, (kh, kw))
    if c != x.shape[0]:
        raise g.unsupported(node, f"weights expect {c} input channels, the input has "
                            f"{x.shape[0]}")
    h, w = x.shape[1:]
    out_hw = [2 * (n - 1) + e + kk - lo - hi
              for n, e, kk, lo, hi in zip((h, w), extra, (kh, kw), pads[:2], pads[2:])]
    axes = [[_axis(n, kk, lo, o, a) for a in (0, 1)]
            for n, kk, lo, o in zip((h, w), (kh, kw), pads[:2], out_hw)]
    for ax in axes:
        for _, taps, top, bottom, n in ax:
            if n < 1 or top < 0 or top > MAX_PAD or bottom >= taps:
                raise g.unsupported(node, f"pads={pads} with kernel {(kh, kw)} are not "
                                    f"supported (an output row or column would read no input)")
    w_scale = wq.channel_scale(1, g.name(node), node.op_type)
    bias_name = node.input[2] if len(node.input) > 2 else ""
    bias_real, bias_units = _bias(front, node, bias_name, k, x.scale * w_scale)
    weight = np.transpose(wq.values, (1, 0, 2, 3))          # (K, C, kh, kw)

    def lower(name, out_name, affine, out):
        where = (g.name(node), node.op_type)
        w8, rq = linear(where, x, weight, w_scale, bias_real, affine, out, bias_units)
        total = w8.astype(np.int64).sum(axis=(1, 2, 3))
        phases = []
        for a, (ry, th, top, bottom, rows) in enumerate(axes[0]):
            for b, (rx, tw, left, right, cols) in enumerate(axes[1]):
                sub = w8[:, :, ry::2, rx::2][:, :, ::-1, ::-1].copy()
                # The bias holds -zp_x * sum(w) of the whole kernel; a phase pads with zp_x
                # over its sub-kernel only.
                part = sub.astype(np.int64).sum(axis=(1, 2, 3))
                prq = check_requant(where, dataclasses.replace(
                    rq, bias=rq.bias + x.zero_point * (total - part)))
                conv = ir.Conv(f"{name}_p{a}{b}", view.ir, out_name, sub, 1,
                               (top, left, max(bottom, 0), max(right, 0)), x.zero_point, prq)
                phases.append(ir.Phase(a, b, rows, cols, conv))
        return ir.ConvTranspose(name, view.ir, out_name, phases)
    return Main([view], (k, *out_hw), (1, k, *out_hw), lower)
