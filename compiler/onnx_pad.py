"""Constant ``Pad`` between two quantized activations: folded into its consumers, or a copy.

ONNX Runtime's quantizer writes a Pad as ``DQ(x) -> Pad -> Q -> DQ`` with the input's own
scale and zero point after it, so the padded int8 tensor is ``x`` itself with the quantized
constant around it. Two forms lower onto what the hardware already has:

* pads on H and W only, read by Conv / MaxPool / AveragePool: the Pad disappears and its pads
  are added to each consumer's, whose window reads ``pad_value`` outside the input. That is
  exact when the constant quantizes to that value (the input zero point for Conv and
  AveragePool, -128 for MaxPool);
* channels appended at the end (BlazeFace's channel padding of a residual branch), no spatial
  pads: a 1x1 convolution copying the input channels (requantized like
  :func:`onnx_main.requant_layer`'s depthwise copy) whose extra output channels have zero
  weights and a bias that makes them the quantized constant exactly.

Anything else (other modes, pads on the batch axis or in front of the channels, negative
pads, spatial and channel pads together) is refused naming the node.
"""

import dataclasses

import numpy as np

from . import ir
from .onnx_graph import PASS_THROUGH
from .onnx_lower import AFFINE_WEIGHT, Affine, Out, _quantized_constant, check_requant, linear

__all__ = ["add_pad", "folded_pads", "FOLD_CONSUMERS"]

#: Operators whose own padding can take a spatial Pad in front of them.
FOLD_CONSUMERS = {"Conv", "MaxPool", "AveragePool"}


@dataclasses.dataclass
class Fold:
    """A spatial Pad folded into its consumers: the Pad node, ``(top, left, bottom, right)``
    and the int8 value of its constant."""
    node: object
    pads: tuple
    value: int


def _params(front, pad):
    """``(mode, pads of length 8, constant)`` of a Pad, attributes (opset < 11) or inputs."""
    g = front.g
    g.check_attrs(pad, {"mode", "pads", "value"})
    attrs = g.attrs(pad)
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise g.unsupported(pad, f"mode {mode!r} is not supported (constant only)")
    if len(pad.input) > 3 and pad.input[3]:
        raise g.unsupported(pad, "the axes input is not supported (give pads for all 4 axes)")
    pads = attrs.get("pads")
    if len(pad.input) > 1 and pad.input[1]:
        pads = g.const(pad.input[1])
        if pads is None:
            raise g.unsupported(pad, "pads are not a constant")
    value = attrs.get("value", 0.0)
    if len(pad.input) > 2 and pad.input[2]:
        value = g.const(pad.input[2])
        if value is None or np.size(value) != 1:
            raise g.unsupported(pad, "the constant value is not a constant scalar")
    pads = [int(p) for p in np.ravel(pads if pads is not None else [])]
    return mode, pads, float(np.asarray(value).reshape(()))


def add_pad(front, q, pad):
    """A Pad and its QuantizeLinear ``q``: a fold into the consumers, or a channel copy."""
    g = front.g
    g.check_single_output(q)
    _, pads, value = _params(front, pad)
    view = front.activation(pad.input[0], pad)
    x = front.tensors[view.ir]
    if len(pads) != 8 or tuple(view.shape) != (1, *x.shape):
        raise g.unsupported(pad, f"pads={pads} of a {view.shape} tensor: only a (1, C, H, W) "
                            f"activation is supported")
    begin, end = pads[:4], pads[4:]
    if min(pads) < 0 or begin[0] or end[0] or begin[1]:
        raise g.unsupported(pad, f"pads={pads} are not supported (non-negative, on H, W or "
                            f"appended channels only)")
    scale, zp = g.act_params(q)
    out = Out(scale, zp)
    constant = int(_quantized_constant(value, out))
    spatial = (begin[2], begin[3], end[2], end[3])
    if any(spatial) and end[1]:
        raise g.unsupported(pad, f"pads={pads}: channel and spatial pads together are not "
                            f"supported")
    if any(spatial):
        _fold(front, q, pad, view, x, spatial, constant)
    else:
        _channel_copy(front, q, pad, x, end[1], constant, out)


def _fold(front, q, pad, view, x, spatial, constant):
    """Record the Pad as extra pads of its consumers; its output is ``x``'s bytes."""
    g = front.g
    if g.act_params(q) != (x.scale, x.zero_point):
        raise g.unsupported(pad, "a spatial Pad that changes the quantization is not supported")
    users = g.consumers.get(q.output[0], [])
    if q.output[0] in g.output_names or not users:
        raise g.unsupported(pad, "a spatial Pad must feed a Conv or pooling (it is folded "
                            "into their pads)")
    for dq in users:
        if dq.op_type != "DequantizeLinear" or g.act_params(dq) != g.act_params(q):
            raise g.unsupported(pad, f"its output is read by {g.name(dq)!r} ({dq.op_type}), "
                                f"not by a DequantizeLinear of the same parameters")
        readers = g.consumers.get(dq.output[0], [])
        if dq.output[0] in g.output_names or not readers:
            raise g.unsupported(pad, "a spatial Pad must feed a Conv or pooling")
        for node in readers:
            if node.op_type not in FOLD_CONSUMERS or list(node.input).index(dq.output[0]):
                raise g.unsupported(pad, f"a spatial Pad only folds into the input of a Conv, "
                                    f"MaxPool or AveragePool, and {g.name(node)!r} "
                                    f"({node.op_type}) reads it")
    front.pad_folds[q.output[0]] = Fold(pad, spatial, constant)
    front.views[q.output[0]] = view


def folded_pads(front, node, pad_value):
    """``(top, left, bottom, right)`` of a Pad folded in front of ``node`` (zeros if none).

    ``pad_value`` is what ``node``'s own padding reads; the Pad's constant must quantize to
    it, else the fold would change the result.
    """
    dq = front.g.producer.get(node.input[0])
    while dq is not None and dq.op_type in PASS_THROUGH:
        dq = front.g.producer.get(dq.input[0])
    fold = front.pad_folds.get(dq.input[0]) if dq is not None and \
        dq.op_type == "DequantizeLinear" else None
    if fold is None:
        return 0, 0, 0, 0
    if fold.value != pad_value:
        raise front.g.unsupported(fold.node, f"its constant quantizes to {fold.value}, but "
                                  f"{node.op_type} {front.g.name(node)!r} pads with "
                                  f"{pad_value}; it cannot be folded into its pads")
    return fold.pads


def _channel_copy(front, q, pad, x, extra, constant, out):
    """A 1x1 convolution: ``x``'s channels requantized, then ``extra`` channels of
    ``constant`` (zero weights; the bias alone gives the value, multiplier 1, no shift)."""
    c, h, w = x.shape
    where = (front.g.name(pad), "Pad")
    identity = np.zeros((c, c, 1, 1), np.int64)
    identity[np.arange(c), np.arange(c)] = AFFINE_WEIGHT
    weight, rq = linear(where, x, identity, np.full(c, 1.0 / AFFINE_WEIGHT), np.zeros(c),
                        Affine.identity(c), out, np.zeros(c))
    weight = np.concatenate([weight, np.zeros((extra, c, 1, 1), np.int8)])
    rq = check_requant(where, ir.Requant(
        np.concatenate([rq.bias, np.full(extra, constant - out.zero_point)]),
        np.concatenate([rq.mult_a, np.ones(extra, np.int64)]),
        np.concatenate([rq.shift, np.zeros(extra, np.int64)]), out.zero_point))
    name = q.output[0]
    layer = ir.Conv(front.unique(front.g.name(pad)), x.name, name, weight, 1, (0, 0, 0, 0),
                    x.zero_point, rq)
    shape = (c + extra, h, w)
    front.tensors[name] = ir.Tensor(name, shape, out.scale, out.zero_point, (1, *shape))
    from .frontend import View      # the front end imports this module
    front.views[name] = View(name, (1, *shape))
    front.layers.append(layer)
