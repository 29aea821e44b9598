"""Read-only view of a QDQ ONNX graph for the front end: constants, quantization parameters,
attributes, and the shape arithmetic of reshaping operators.

Nothing here knows the IR; :mod:`vdla.compiler.frontend` does the pattern matching and
:mod:`vdla.compiler.onnx_lower` the integer lowering.
"""

import collections
import dataclasses
import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import CompileError, UnsupportedError

__all__ = ["SUPPORTED_OPS", "PASS_THROUGH", "RESHAPES", "QConst", "OnnxGraph", "load_proto"]

#: Operators that sit between two activations without changing values.
PASS_THROUGH = {"Identity", "Dropout"}
#: Operators that only change the ONNX shape of a tensor.
RESHAPES = {"Flatten", "Reshape", "Squeeze", "Unsqueeze"}
#: Every operator the front end understands (in some position).
SUPPORTED_OPS = PASS_THROUGH | RESHAPES | {
    "QuantizeLinear", "DequantizeLinear", "Constant",
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div",
    "Relu", "Clip", "BatchNormalization",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "Concat",
    "Pad", "Resize", "Split", "Slice",
    # Element-wise activations, as lookup tables (vdla.compiler.onnx_lut).
    "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "LeakyRelu", "PRelu",
    # Only at the model's edges, done by the host (vdla.compiler.onnx_host).
    "Transpose", "Softmax",
}


def load_proto(model):
    """``model`` (path or ModelProto) -> ModelProto, or a one-line CompileError."""
    if isinstance(model, onnx.ModelProto):
        return model
    try:
        return onnx.load(os.fspath(model))
    except Exception as exc:       # protobuf, OS and external-data errors alike
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CompileError(f"cannot read ONNX model {os.fspath(model)!r}: {detail}") from None


@dataclasses.dataclass
class QConst:
    """A constant behind a DequantizeLinear: ``real = values * scale`` element-wise.

    ``values`` are the stored integers minus their zero point (int16 for 8-bit data, int64
    for wider) and ``scale`` a float64 array that broadcasts against them (kept compact: the
    weights of a large fully connected layer are not copied per element).
    """
    values: np.ndarray
    scale: np.ndarray

    def channel_scale(self, axis, node, op_type):
        """Per-slice scale along ``axis`` (``(n,)``); the scale must not vary within a slice."""
        n = self.values.shape[axis]
        scale = np.asarray(self.scale, np.float64)
        if scale.size == 1:
            return np.full(n, float(scale.reshape(())))
        if scale.ndim == self.values.ndim and scale.shape[axis] == n and scale.size == n:
            return scale.reshape(-1).copy()
        raise UnsupportedError(node, op_type, "weight scale varies within an output channel; "
                               "only per-tensor or per-output-channel scales are supported")


class OnnxGraph:
    """Index of one ONNX graph: producers, consumers, constants and attributes."""

    def __init__(self, model):
        self.model = model
        self.graph = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                          None)
        self.consts = {}
        for init in self.graph.initializer:
            self.consts[init.name] = self._to_array(init)
        self.nodes = list(self.graph.node)
        self.producer = {}
        self.consumers = collections.defaultdict(list)
        self.names = {}
        for index, node in enumerate(self.nodes):
            self.names[id(node)] = node.name or f"{node.op_type}_{index}"
            for name in node.output:
                if name:
                    self.producer[name] = node
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
            if node.op_type == "Constant":
                self.consts[node.output[0]] = self._constant_node(node)
        self.output_names = {o.name for o in self.graph.output}

    # -- generic -----------------------------------------------------------------------------
    @staticmethod
    def _to_array(tensor):
        try:
            return numpy_helper.to_array(tensor)
        except Exception as exc:
            raise CompileError(f"cannot read constant {tensor.name!r}: {exc}") from None

    def _constant_node(self, node):
        attr = node.attribute[0]
        if attr.name == "value":
            return self._to_array(attr.t)
        if attr.name in ("value_float", "value_int", "value_floats", "value_ints"):
            return np.asarray(helper.get_attribute_value(attr))
        raise UnsupportedError(self.name(node), "Constant", f"attribute {attr.name} is not "
                               f"supported")

    def name(self, node):
        """The node's name, or ``<op_type>_<index>`` for unnamed nodes (used in messages)."""
        return self.names[id(node)]

    def unsupported(self, node, what):
        return UnsupportedError(self.name(node), node.op_type, what)

    @staticmethod
    def attrs(node):
        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def check_attrs(self, node, allowed):
        """Raise on any attribute outside ``allowed`` (so nothing is silently ignored)."""
        for attr in node.attribute:
            if attr.name not in allowed:
                raise self.unsupported(node, f"attribute {attr.name} is not supported")

    def check_single_output(self, node):
        """Optional extra outputs (indices, masks, training statistics) must be unused."""
        for extra in node.output[1:]:
            if extra and (self.consumers.get(extra) or extra in self.output_names):
                raise self.unsupported(node, f"output {extra!r} is used; only the first "
                                       f"output is supported")

    # -- constants ---------------------------------------------------------------------------
    def const(self, name):
        """Float value of a constant tensor (initializer, Constant, DQ of a constant) or None."""
        if not name:
            return None
        if name in self.consts:
            return self.consts[name]
        node = self.producer.get(name)
        if node is None:
            return None
        if node.op_type in PASS_THROUGH:
            return self.const(node.input[0])
        if node.op_type == "DequantizeLinear":
            q = self.qconst(name)
            return None if q is None else (q.values * q.scale).astype(np.float64)
        return None

    def _axis_param(self, node, param, ndim):
        """Broadcast a Q/DQ scale or zero point to a tensor of rank ``ndim``."""
        param = np.asarray(param)
        if param.ndim == 0 or param.size == 1:
            return param.reshape(())
        if "block_size" in self.attrs(node) and self.attrs(node)["block_size"]:
            raise self.unsupported(node, "blocked quantization is not supported")
        axis = self.attrs(node).get("axis", 1)
        axis = axis + ndim if axis < 0 else axis
        shape = [1] * ndim
        shape[axis] = param.size
        return param.reshape(shape)

    def qconst(self, name):
        """:class:`QConst` behind the DequantizeLinear producing ``name``, or None."""
        node = self.producer.get(name)
        while node is not None and node.op_type in PASS_THROUGH:
            node = self.producer.get(node.input[0])
        if node is None or node.op_type != "DequantizeLinear":
            return None
        stored = self._quantized_const(node.input[0])
        if stored is None:
            return None
        scale = self.const(node.input[1])
        zp = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else 0
        if scale is None or zp is None:
            return None
        stored = np.asarray(stored)
        scale = self._axis_param(node, scale, stored.ndim).astype(np.float64)
        zp = self._axis_param(node, zp, stored.ndim)
        wide = np.int16 if stored.dtype.itemsize == 1 else np.int64
        values = stored.astype(wide)
        if np.any(zp != 0):
            values = values - zp.astype(wide)
        if scale.ndim < stored.ndim:
            scale = scale.reshape((1,) * (stored.ndim - scale.ndim) + scale.shape)
        return QConst(values, scale)

    def _quantized_const(self, name):
        """Integer constant, also when it is a constant QuantizeLinear evaluated here."""
        if name in self.consts:
            return self.consts[name]
        node = self.producer.get(name)
        if node is None or node.op_type != "QuantizeLinear":
            return None
        x = self.const(node.input[0])
        scale = self.const(node.input[1])
        zp = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else \
            np.uint8(0)                             # ONNX default: uint8, zero point 0
        if x is None or scale is None or zp is None:
            return None
        x = np.asarray(x, np.float32)
        scale = self._axis_param(node, scale, x.ndim).astype(np.float32)
        zp_b = self._axis_param(node, zp, x.ndim)
        info = np.iinfo(np.asarray(zp).dtype)
        # QuantizeLinear semantics: round half to even, saturate to the output type.
        return np.clip(np.rint(x / scale) + zp_b.astype(np.int64), info.min, info.max)

    # -- activations -------------------------------------------------------------------------
    def act_params(self, node):
        """``(scale, zero_point)`` of an activation Q/DQ node, zero point in int8 terms.

        A uint8 activation with zero point ``z`` holds the same reals as an int8 one with
        zero point ``z - 128`` and every value shifted by 128, so it is accepted as int8.
        """
        scale = self.const(node.input[1])
        zp = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else \
            np.uint8(0)                             # ONNX default: uint8, zero point 0
        if scale is None or zp is None:
            raise self.unsupported(node, "scale and zero point must be constants")
        if np.asarray(scale).size != 1 or np.asarray(zp).size != 1:
            raise self.unsupported(node, "activations must have a per-tensor scale and zero "
                                   "point")
        dtype = np.asarray(zp).dtype
        if dtype == np.uint8:
            offset = 128
        elif dtype == np.int8:
            offset = 0
        else:
            raise self.unsupported(node, f"activation type {dtype} is not supported (int8 or "
                                   f"uint8 only)")
        scale = float(np.asarray(scale, np.float32).reshape(()))
        if not np.isfinite(scale) or scale <= 0:
            raise self.unsupported(node, f"activation scale {scale} must be positive")
        return scale, int(np.asarray(zp).reshape(())) - offset

    # -- shapes ------------------------------------------------------------------------------
    def reshaped(self, node, shape):
        """ONNX shape after the reshaping operator ``node`` applied to ``shape``."""
        op, attrs = node.op_type, self.attrs(node)
        shape = tuple(int(d) for d in shape)
        size = int(np.prod(shape))
        if op == "Flatten":
            axis = attrs.get("axis", 1)
            axis = axis + len(shape) if axis < 0 else axis
            return int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))
        if op == "Reshape":
            target = self.const(node.input[1])
            if target is None:
                raise self.unsupported(node, "the target shape is not a constant")
            out = []
            for i, d in enumerate(np.asarray(target, np.int64).ravel().tolist()):
                out.append(shape[i] if d == 0 and not attrs.get("allowzero", 0) else d)
            if out.count(-1) == 1:
                known = int(np.prod([d for d in out if d != -1]))
                out[out.index(-1)] = size // known if known else 0
            if int(np.prod(out)) != size or any(d < 0 for d in out):
                raise self.unsupported(node, f"cannot reshape {shape} to {tuple(out)}")
            return tuple(out)
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.const(node.input[1])
            if axes is None:
                raise self.unsupported(node, "axes are not a constant")
        if op == "Squeeze":
            if axes is None:
                return tuple(d for d in shape if d != 1)
            axes = {a + len(shape) if a < 0 else a for a in np.ravel(axes).tolist()}
            return tuple(d for i, d in enumerate(shape) if i not in axes)
        # Unsqueeze
        rank = len(shape) + len(np.ravel(axes))
        axes = {a + rank if a < 0 else a for a in np.ravel(axes).tolist()}
        rest = iter(shape)
        return tuple(1 if i in axes else next(rest) for i in range(rank))

    def value_shape(self, value_info):
        """Shape of a graph input/output with the batch dimension set to 1 (None if unknown)."""
        dims = value_info.type.tensor_type.shape.dim
        shape = []
        for i, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                shape.append(d.dim_value)
            elif i == 0:
                shape.append(1)                     # symbolic batch: vdla runs batch 1
            else:
                return None
        return tuple(shape)
