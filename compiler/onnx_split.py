"""``Split`` and ``Slice`` on the channel axis: each part a 1x1 convolution selecting it.

ONNX Runtime's quantizer writes ``DQ(x) -> Split -> Q`` per output (``Slice`` likewise), so a
part is a channel range of ``x`` requantized to its QuantizeLinear. Each part is lowered to a
1x1 convolution whose weights pick its channels, requantized like
:func:`onnx_pad._channel_copy`'s copy; exact for any part, aligned on a channel block or not
(a view of an aligned part would save the copy but needs reads at a channel offset, which the
tiler does not plan). A part that only a Concat reads is quantized straight to the Concat's
output, as :meth:`frontend._Frontend._segment` does for other layers.

Only axis 1 of a (1, C, H, W) activation is supported; Slice with constant bounds and step 1.
Anything else is refused naming the node.
"""

import numpy as np

from . import ir
from .onnx_lower import AFFINE_WEIGHT, Affine, Out, linear
from .quant import clamp_range

__all__ = ["add_split", "SPLIT_OPS"]

SPLIT_OPS = ("Split", "Slice")
_INT64_MAX = np.iinfo(np.int64).max


def _axis_ok(axis):
    return axis in (1, -3)


def _split_range(front, node, index, channels):
    """``(first, stop)`` of output ``index`` of a Split along the channels."""
    g = front.g
    g.check_attrs(node, {"axis", "split", "num_outputs"})
    attrs = g.attrs(node)
    axis = attrs.get("axis", 0)
    if not _axis_ok(axis):
        raise g.unsupported(node, f"axis {axis} is not supported (the channel axis 1 only)")
    sizes = attrs.get("split")
    if len(node.input) > 1 and node.input[1]:
        sizes = g.const(node.input[1])
        if sizes is None:
            raise g.unsupported(node, "the split sizes are not a constant")
    count = len(node.output)
    if sizes is None:
        # Equal parts; from opset 18 (num_outputs) the last one may be smaller.
        size = -(-channels // attrs.get("num_outputs", count))
        sizes = [size] * (count - 1) + [channels - size * (count - 1)]
    sizes = [int(s) for s in np.ravel(sizes)]
    if len(sizes) != count or sum(sizes) != channels or min(sizes) <= 0:
        raise g.unsupported(node, f"split sizes {sizes} do not cut {channels} channels into "
                            f"{count} non-empty parts")
    first = sum(sizes[:index])
    return first, first + sizes[index]


def _slice_inputs(front, node):
    """``(starts, ends, axes, steps)`` of a Slice (attributes before opset 10, else inputs)."""
    g = front.g
    g.check_attrs(node, {"starts", "ends", "axes"})
    attrs = g.attrs(node)
    values = [attrs.get("starts"), attrs.get("ends"), attrs.get("axes"), None]
    for i in range(1, min(len(node.input), 5)):
        if node.input[i]:
            values[i - 1] = g.const(node.input[i])
            if values[i - 1] is None:
                raise g.unsupported(node, "starts, ends, axes and steps must be constants")
    return [None if v is None else [int(x) for x in np.ravel(v)] for v in values]


def _slice_range(front, node, channels):
    g = front.g
    starts, ends, axes, steps = _slice_inputs(front, node)
    if axes is None or len(axes) != 1 or not _axis_ok(axes[0]) or len(starts) != 1:
        raise g.unsupported(node, f"axes {axes} are not supported (the channel axis [1] only)")
    if steps is not None and steps != [1]:
        raise g.unsupported(node, f"steps {steps} are not supported (1 only)")
    first, stop = starts[0], min(ends[0], _INT64_MAX)
    first = min(max(first + channels if first < 0 else first, 0), channels)
    stop = min(max(stop + channels if stop < 0 else stop, 0), channels)
    if stop <= first:
        raise g.unsupported(node, f"channels {starts[0]}..{ends[0]} of {channels} are empty")
    return first, stop


def add_split(front, q, node):
    """A Split / Slice output and its QuantizeLinear ``q``: a channel-selecting 1x1 copy."""
    g = front.g
    g.check_single_output(q)
    view = front.activation(node.input[0], node)
    x = front.tensors[view.ir]
    if tuple(view.shape) != (1, *x.shape) or len(x.shape) != 3:
        raise g.unsupported(node, f"only a (1, C, H, W) activation is supported, not "
                            f"{view.shape}")
    c, h, w = x.shape
    if node.op_type == "Split":
        first, stop = _split_range(front, node, list(node.output).index(q.input[0]), c)
    else:
        first, stop = _slice_range(front, node, c)
    n = stop - first
    scale, zp = g.act_params(q)
    out = Out(scale, zp)
    target = front.concat_target(q)
    if target is not None and target != (scale, zp):
        # A part that only a Concat reads (a CSP block's passed-on half): quantize it straight
        # to the Concat's output, clamped to its own QuantizeLinear's range, so the Concat
        # needs no copy of it.
        out = Out(*target, *clamp_range(*target, scale * (-128 - zp), scale * (127 - zp)))
        scale, zp = target
        front.retargeted.add(q.output[0])
    select = np.zeros((n, c, 1, 1), np.int64)
    select[np.arange(n), first + np.arange(n)] = AFFINE_WEIGHT
    weight, rq = linear((g.name(node), node.op_type), x, select, np.full(n, 1.0 / AFFINE_WEIGHT),
                        np.zeros(n), Affine.identity(n), out, np.zeros(n))
    name = q.output[0]
    front.layers.append(ir.Conv(front.unique(g.name(node)), x.name, name, weight, 1,
                                (0, 0, 0, 0), x.zero_point, rq))
    shape = (n, h, w)
    front.tensors[name] = ir.Tensor(name, shape, scale, zp, (1, *shape))
    from .frontend import View      # the front end imports this module
    front.views[name] = View(name, (1, *shape))
