"""Nearest-neighbour ``Resize`` by an integer factor: an :class:`ir.Resize` layer.

ONNX Runtime's quantizer writes it as ``DQ(x) -> Resize -> Q`` (usually with the input's own
scale and zero point). Upsampling networks (FPNs, YOLO necks, CenterFace) export
``nn.Upsample(mode="nearest")``: mode ``nearest``, the same integer factor ``k >= 2`` on H and
W, 1 on N and C, from ``scales`` or ``sizes``. Output pixel ``(y, x)`` is then input pixel
``(y // k, x // k)`` for the coordinate modes below; each value goes through Q(DQ(.)), a
256-entry table (the identity when the quantization is unchanged), so the layer is exact.

With an integer factor, ``half_pixel`` (and ``pytorch_half_pixel``) maps output ``o = q*k + r``
to ``q + (r - (k-1)/2) / k``, strictly within half a pixel of ``q``: any rounding
``round_prefer_*`` gives ``q``; ``tf_half_pixel_for_nn`` gives ``q + (r + 1/2) / k``, whose
floor is ``q``. Other pairs pick other pixels for some factor (``asymmetric`` with ``ceil``,
``half_pixel`` with ``floor``; ``align_corners`` agrees for k = 2 only) and are refused.
"""

import numpy as np

from . import ir
from .onnx_lut import concat_retarget, dequantize, quantize

__all__ = ["add_resize"]

#: (coordinate_transformation_mode, nearest_mode) pairs that map output o to input o // k.
EXACT = {("asymmetric", "floor"), ("half_pixel", "round_prefer_floor"),
         ("half_pixel", "round_prefer_ceil"), ("pytorch_half_pixel", "round_prefer_floor"),
         ("pytorch_half_pixel", "round_prefer_ceil"), ("tf_half_pixel_for_nn", "floor")}
_ATTRS = {"mode", "coordinate_transformation_mode", "nearest_mode", "cubic_coeff_a",
          "exclude_outside", "extrapolation_value", "antialias", "axes",
          "keep_aspect_ratio_policy"}


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def _check_modes(g, node):
    g.check_attrs(node, _ATTRS)
    attrs = g.attrs(node)
    mode = _text(attrs.get("mode", "nearest"))
    if mode != "nearest":
        raise g.unsupported(node, f"mode {mode!r} is not supported (nearest only)")
    pair = (_text(attrs.get("coordinate_transformation_mode", "half_pixel")),
            _text(attrs.get("nearest_mode", "round_prefer_floor")))
    if pair not in EXACT:
        raise g.unsupported(node, f"coordinate_transformation_mode {pair[0]!r} with "
                            f"nearest_mode {pair[1]!r} is not supported (only modes mapping "
                            f"output pixel o to input pixel o // k for every factor k: "
                            f"asymmetric with floor, half_pixel with round_prefer_floor, ...)")
    if attrs.get("antialias", 0) or "axes" in attrs:
        raise g.unsupported(node, "antialias and axes are not supported")
    if _text(attrs.get("keep_aspect_ratio_policy", "stretch")) != "stretch":
        raise g.unsupported(node, "keep_aspect_ratio_policy other than stretch is not "
                            "supported")


def _factor(g, node, c, h, w):
    """The integer upscaling factor of H and W, from ``scales`` or ``sizes``."""
    if g.opset is not None and g.opset < 11:
        raise g.unsupported(node, f"Resize of opset {g.opset} is not supported (11 or later)")
    inputs = list(node.input) + ["", "", ""]
    if inputs[2]:
        scales = g.const(inputs[2])
        if scales is None:
            raise g.unsupported(node, "scales are not a constant")
        scales = [float(v) for v in np.ravel(scales)]
        what = f"scales={scales}"
    elif inputs[3]:
        sizes = g.const(inputs[3])
        if sizes is None:
            raise g.unsupported(node, "sizes are not a constant")
        sizes = [int(v) for v in np.ravel(sizes)]
        what = f"sizes={sizes}"
        scales = [s / n for s, n in zip(sizes, (1, c, h, w))] if len(sizes) == 4 else []
    else:
        raise g.unsupported(node, "neither scales nor sizes are given")
    if len(scales) != 4 or scales[:2] != [1.0, 1.0]:
        raise g.unsupported(node, f"{what} is not supported (N and C scales must be 1)")
    k = scales[2]
    if scales[3] != k or k != int(k) or k < 2:
        raise g.unsupported(node, f"{what} is not supported (only an integer upscaling factor "
                            f">= 2, the same in H and W)")
    return int(k)


def add_resize(front, q, node):
    """Turn QuantizeLinear ``q`` of Resize ``node`` into one :class:`ir.Resize` layer."""
    g = front.g
    g.check_single_output(q)
    _check_modes(g, node)
    view = front.activation(node.input[0], node)
    x = front.tensors[view.ir]
    if tuple(view.shape) != (1, *x.shape):
        raise g.unsupported(node, f"input of shape {view.shape} is not a (1, C, H, W) tensor")
    c, h, w = x.shape
    k = _factor(g, node, c, h, w)
    scale, zp = g.act_params(q)
    table = quantize(dequantize(np.arange(-128, 128), x.scale, x.zero_point), scale, zp)
    table, scale, zp = concat_retarget(front, q, table, scale, zp)
    name = q.output[0]
    shape = (c, h * k, w * k)
    front.layers.append(ir.Resize(front.unique(g.name(node)), view.ir, name, k,
                                  table.astype(np.int8)))
    front.tensors[name] = ir.Tensor(name, shape, scale, zp, (1, *shape))
    from .frontend import View      # the front end imports this module
    front.views[name] = View(name, (1, *shape))
