"""Element-wise activations as lookup tables (MISC LUT, :class:`vdla.compiler.ir.Lut`).

A QuantizeLinear whose float input is an element-wise function of one int8 tensor takes only
256 values, one per int8 input: the table is built by running the QDQ graph itself on each of
them (DequantizeLinear, the float operators as ONNX defines them in float32, QuantizeLinear
rounding half to even and saturating), so the layer is exact by construction, whatever the
function::

    DQ(x) -> Sigmoid | HardSigmoid | HardSwish | Tanh | LeakyRelu | PRelu -> Q
    DQ(x) -> Mul(DQ(x), DQ(Q(Sigmoid(DQ(x)))))  -> Q        (SiLU; HardSwish as ORT's
                                                             pre-processing writes it)

Relu, Clip, Identity, Dropout and Add / Sub / Mul / Div by a scalar constant may join the
chain. Both operands of a Mul of two activations must come from one quantized tensor, through
earlier lookups (their tables are composed); a chain is one function for every channel, so a
per-channel constant or PRelu slope is refused.
"""

import numpy as np

from . import ir
from .onnx_graph import PASS_THROUGH, RESHAPES

__all__ = ["LUT_OPS", "needs_table", "add_lookup", "concat_retarget"]

#: Operators only a table computes.
LUT_OPS = {"Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "LeakyRelu", "PRelu"}
_BINARY = {"Add", "Sub", "Mul", "Div"}
_ON_THE_WAY = PASS_THROUGH | RESHAPES | {"Relu", "Clip", "BatchNormalization"} | _BINARY
_ARITH = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}
#: The int8 values a table is indexed by.
_GRID = np.arange(-128, 128)


def _activation_input(front, node):
    """Index of the one non-constant input of a binary node, or None (two activations)."""
    consts = [i for i in (0, 1) if front.g.const(node.input[i]) is not None]
    return (1 - consts[0]) if len(consts) == 1 else None


def needs_table(front, q):
    """The node that makes the float chain of QuantizeLinear ``q`` a lookup (the one nearest
    ``q``: an operator of :data:`LUT_OPS` or a Mul of two activations), or None."""
    node = front.g.producer.get(q.input[0])
    while node is not None and node.op_type != "DequantizeLinear":
        op = node.op_type
        if op in LUT_OPS:
            return node
        if op in _BINARY:
            index = _activation_input(front, node)
            if index is None:
                return node if op == "Mul" else None
            node = front.g.producer.get(node.input[index])
        elif op in _ON_THE_WAY:
            node = front.g.producer.get(node.input[0])
        else:
            return None
    return None


def _f32(values):
    return np.asarray(values, np.float64).astype(np.float32)


def quantize(values, scale, zero_point):
    """ONNX QuantizeLinear to int8 as ONNX Runtime computes it: float32 division, round half
    to even, saturation."""
    q = np.rint(_f32(values) / np.float32(scale)) + zero_point
    return np.clip(q, -128, 127).astype(np.int64)


def dequantize(q, scale, zero_point):
    """ONNX DequantizeLinear in float32."""
    return (np.asarray(q, np.int64) - zero_point).astype(np.float32) * np.float32(scale)


class _Chain:
    """Evaluates a float tensor of the graph as a function of an int8 tensor ``source``."""

    def __init__(self, front, q, source=None):
        self.front, self.g, self.q, self.source = front, front.g, q, source
        self.producer = {layer.output: layer for layer in front.layers}
        self.shape = None       # ONNX shape of the DequantizeLinear outputs read

    def lineage(self, tensor):
        """``tensor`` and the tensors it is a lookup of, nearest first."""
        out = [tensor]
        while isinstance(self.producer.get(out[-1]), ir.Lut):
            out.append(self.producer[out[-1]].input)
        return out

    def ints(self, tensor):
        """The int8 values of ``tensor`` for each int8 value of the source."""
        chain = self.lineage(tensor)
        values = _GRID
        for layer in reversed([self.producer[t] for t in chain[:chain.index(self.source)]]):
            values = np.asarray(layer.table, np.int64)[values + 128]
        return values

    def leaves(self, name):
        """IR tensors behind the DequantizeLinear nodes that float tensor ``name`` reads."""
        node = self.g.producer.get(name)
        if node is None:
            return []
        if node.op_type == "DequantizeLinear":
            return [self.front.dq_view(node).ir] if node.input[0] in self.front.views else []
        if self.g.const(name) is not None:
            return []
        return [t for i in node.input[:2] if i and self.g.const(i) is None
                for t in self.leaves(i)]

    def common(self, tensors):
        """The tensor nearest the first of ``tensors`` that all of them are lookups of."""
        lines = [self.lineage(t) for t in tensors]
        return next((t for t in lines[0] if all(t in line for line in lines[1:])), None)

    def value(self, name):
        """float32 values of float tensor ``name`` for the 256 int8 values of the source."""
        g = self.g
        node = g.producer.get(name)
        if node is None:
            raise self._not_elementwise(name, None)
        op = node.op_type
        if op == "DequantizeLinear":
            view = self.front.dq_view(node)
            if self.source not in self.lineage(view.ir):
                raise self._not_elementwise(name, node)
            if self.shape is not None and tuple(view.shape) != tuple(self.shape):
                raise g.unsupported(self.q, f"the element-wise chain to this node reads "
                                    f"shapes {self.shape} and {view.shape}")
            self.shape = view.shape
            t = self.front.tensors[view.ir]
            return dequantize(self.ints(view.ir), t.scale, t.zero_point)
        if op in PASS_THROUGH:
            self.front.pass_through(node)
            return self.value(node.input[0])
        if op in _BINARY:
            return self._binary(node)
        if op in RESHAPES or op == "BatchNormalization":
            raise g.unsupported(node, f"{op} inside an element-wise lookup chain (ending at "
                                f"{g.name(self.q)!r}) is not supported")
        if op not in LUT_OPS | {"Relu", "Clip"}:
            raise self._not_elementwise(name, node)
        return _unary(self, node, self.value(node.input[0]))

    def _binary(self, node):
        index = _activation_input(self.front, node)
        if index is None:
            if node.op_type != "Mul":
                raise self.g.unsupported(node, f"{node.op_type} of two activations is not "
                                         f"supported")
            a, b = (self.value(i) for i in node.input[:2])
            return a * b
        c = np.asarray(self.g.const(node.input[1 - index]))
        if c.size != 1:
            raise self.g.unsupported(node, f"constant of shape {c.shape} in an element-wise "
                                     f"lookup: only a scalar is supported (one table serves "
                                     f"every channel)")
        x, c = self.value(node.input[index]), _f32(c.reshape(()))
        a, b = (x, c) if index == 0 else (c, x)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return _ARITH[node.op_type](a, b).astype(np.float32)

    def _not_elementwise(self, name, node):
        where = node if node is not None else self.g.producer.get(name)
        what = "the model input" if where is None else f"{where.op_type} {self.g.name(where)!r}"
        return self.g.unsupported(self.q, f"the element-wise chain to this node reads "
                                  f"{name!r}, computed by {what} and not a function of one "
                                  f"quantized tensor; put a QuantizeLinear / DequantizeLinear "
                                  f"pair in between")


def _unary(chain, node, x):
    """ONNX's float32 definition of an element-wise operator applied to ``x``."""
    g, op = chain.g, node.op_type
    attrs = g.attrs(node)
    with np.errstate(over="ignore"):
        if op == "Sigmoid":
            return _f32(1.0 / (1.0 + np.exp(-x.astype(np.float64))))
        if op == "Tanh":
            return _f32(np.tanh(x.astype(np.float64)))
    if op in ("HardSigmoid", "HardSwish"):
        g.check_attrs(node, {"alpha", "beta"} if op == "HardSigmoid" else set())
        alpha = np.float32(attrs.get("alpha", 0.2) if op == "HardSigmoid" else 1.0 / 6.0)
        beta = np.float32(attrs.get("beta", 0.5))
        hard = np.clip(_f32(alpha * x) + beta, np.float32(0), np.float32(1)).astype(np.float32)
        return hard if op == "HardSigmoid" else _f32(x * hard)
    if op == "LeakyRelu":
        g.check_attrs(node, {"alpha"})
        return np.where(x < 0, _f32(np.float32(attrs.get("alpha", 0.01)) * x), x)
    if op == "PRelu":
        slope = g.const(node.input[1])
        if slope is None:
            raise g.unsupported(node, "the slope is not a constant")
        if np.size(slope) != 1:
            raise g.unsupported(node, f"a slope per channel ({np.size(slope)} values) is not "
                                f"supported: a lookup table takes one slope for the whole "
                                f"tensor")
        return np.where(x < 0, _f32(_f32(np.asarray(slope).reshape(())) * x), x)
    if op == "Relu":
        return np.maximum(x, np.float32(0))
    low, high = chain.front.clamp(node)        # Clip
    low = np.float32(-np.inf if low is None else low)
    high = np.float32(np.inf if high is None else high)
    return np.minimum(np.maximum(x, low), high)


def _mixed(chain, name, seen=None):
    """The error for the first Mul on the float chain to ``name`` whose operands are not
    functions of one quantized tensor, or None."""
    seen = set() if seen is None else seen
    node = chain.g.producer.get(name)
    if node is None or node.op_type == "DequantizeLinear" or id(node) in seen:
        return None
    seen.add(id(node))
    if node.op_type == "Mul" and _activation_input(chain.front, node) is None:
        sides = [chain.leaves(i) for i in node.input[:2]]
        if all(sides) and chain.common(sides[0] + sides[1]) is None:
            return chain.g.unsupported(node, "Mul of two different activations is not "
                                       "supported (only x * f(x) of one quantized tensor x, "
                                       "as in SiLU, is a lookup table)")
    for i in node.input:
        if i and chain.g.const(i) is None:
            found = _mixed(chain, i, seen)
            if found is not None:
                return found
    return None


def concat_retarget(front, q, table, scale, zp):
    """``(table, scale, zero point)`` of a table layer whose output QuantizeLinear ``q`` (at
    ``scale``, ``zp``) feeds a Concat at other parameters: the table then goes on to the
    Concat's, as the QDQ graph does (Q, DQ, Concat, the Concat's own Q)."""
    target = front.concat_target(q)
    if target is None or target == (scale, zp):
        return table, scale, zp
    front.retargeted.add(q.output[0])
    return quantize(dequantize(table, scale, zp), *target), *target


def add_lookup(front, q, node):
    """Turn QuantizeLinear ``q`` (whose chain ``node`` makes a lookup, see
    :func:`needs_table`) into one :class:`ir.Lut` layer of the front end ``front``."""
    g = front.g
    g.check_single_output(q)
    probe = _Chain(front, q)
    leaves = probe.leaves(q.input[0])
    source = probe.common(leaves) if leaves else None
    if source is None:
        raise _mixed(probe, q.input[0]) or probe._not_elementwise(q.input[0], None)
    chain = _Chain(front, q, source)
    values = chain.value(q.input[0])
    scale, zp = g.act_params(q)
    table, scale, zp = concat_retarget(front, q, quantize(values, scale, zp), scale, zp)
    name = q.output[0]
    x = front.tensors[source]
    layer = ir.Lut(front.unique(g.name(node)), source, name, table.astype(np.int8))
    front.layers.append(layer)
    front.tensors[name] = ir.Tensor(name, tuple(x.shape), scale, zp, tuple(chain.shape))
    from .frontend import View      # the front end imports this module
    front.views[name] = View(name, tuple(chain.shape))
