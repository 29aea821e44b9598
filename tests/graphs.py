"""Small float ONNX test graphs covering the front end's patterns, and helpers to quantize them.

Each builder returns a checked float32 ModelProto with input ``input`` and output ``output``;
shapes are deliberately awkward (odd sizes, channel counts that are not multiples of 8) and
every graph runs through onnxruntime in well under a second.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vdla.compiler.quantize import quantize_model
from vdla.compiler.zoo import GraphBuilder

__all__ = ["GRAPHS", "build", "sample_input", "calibration_data", "quantized", "HandQDQ"]


def _conv3_odd():
    g = GraphBuilder("conv3_odd", (3, 13, 11), seed=1)
    return g.build(g.relu(g.conv("input", 5, 3)))


def _conv5_stride2_asym():
    g = GraphBuilder("conv5_stride2_asym", (5, 15, 12), seed=2)
    return g.build(g.clip(g.conv("input", 12, 5, stride=2, pads=(1, 2, 2, 1))))


def _conv7_same_upper():
    g = GraphBuilder("conv7_same_upper", (3, 17, 16), seed=3)
    return g.build(g.relu(g.conv("input", 8, 7, stride=2, auto_pad="SAME_UPPER")))


def _conv1_signed():
    # No activation: the output keeps negative values (asymmetric zero point).
    g = GraphBuilder("conv1_signed", (12, 9, 7), seed=4)
    return g.build(g.conv("input", 20, 1, pads=(0, 0, 0, 0)))


def _conv3_valid_nobias():
    g = GraphBuilder("conv3_valid_nobias", (4, 10, 10), seed=5)
    x = g.relu(g.conv("input", 6, 3, auto_pad="VALID", bias=False))
    return g.build(g.conv(x, 3, (3, 5), stride=2, pads=(0, 1, 2, 0)))


def _depthwise():
    g = GraphBuilder("depthwise", (12, 11, 13), seed=6)
    x = g.conv_bn("input", 12, 3, 1, groups=12, act="relu6")
    x = g.conv_bn(x, 12, 5, 2, groups=12, act="relu6")
    return g.build(g.conv_bn(x, 7, 1, 1, act=None))


def _residual_add():
    # Both branches end in BN with different gains, so the Add inputs have different scales.
    g = GraphBuilder("residual_add", (5, 9, 9), seed=7)
    a = g.conv_bn("input", 20, 3, 1, act=None, gain=2.0)
    b = g.conv_bn(a, 20, 3, 1, act=None, gain=0.3)
    return g.build(g.relu(g.add(a, b)))


def _add_input():
    # Residual around the graph input itself.
    g = GraphBuilder("add_input", (3, 8, 10), seed=8)
    return g.build(g.add(g.conv("input", 3, 3), "input"))


def _maxpool_pad():
    g = GraphBuilder("maxpool_pad", (3, 13, 11), seed=9)
    x = g.relu(g.conv("input", 12, 3))
    return g.build(g.maxpool(x, 3, 2, (1, 1, 1, 1)))


def _maxpool_signed():
    # Max pooling of a signed tensor with padding: the pad must never win.
    g = GraphBuilder("maxpool_signed", (5, 10, 9), seed=10)
    x = g.conv("input", 5, 3)
    return g.build(g.maxpool(x, 2, 1, (1, 0, 0, 1)))


def _avgpool():
    g = GraphBuilder("avgpool", (5, 12, 9), seed=11)
    x = g.relu(g.conv("input", 12, 3))
    x = g.avgpool(x, 2, 2)
    x = g.avgpool(x, 3, 1, (1, 1, 1, 1), count_include_pad=1)
    return g.build(g.avgpool(x, 3, 2, ceil_mode=0))


def _gap_output():
    g = GraphBuilder("gap_output", (3, 7, 9), seed=12)
    x = g.relu(g.conv("input", 20, 3))
    return g.build(g.flatten(g.global_avgpool(x)))


def _gemm_flatten():
    g = GraphBuilder("gemm_flatten", (3, 5, 5), seed=13)
    x = g.relu(g.conv("input", 12, 3, pads=(0, 0, 0, 0)))           # (12, 3, 3)
    return g.build(g.gemm(g.flatten(x), 10))


def _gemm_chain():
    # Reshape (not Flatten), Gemm with transB=0, and inference no-ops on the way.
    g = GraphBuilder("gemm_chain", (4, 6, 5), seed=14)
    x = g.relu(g.conv("input", 6, 3, stride=2))
    x = g.reshape(x, (1, -1))
    x = g.node("Identity", [x], g.shapes[x])
    x = g.relu(g.gemm(x, 24, trans_b=0))
    x = g.node("Dropout", [x], g.shapes[x])
    return g.build(g.gemm(x, 5))


def _matmul_add():
    g = GraphBuilder("matmul_add", (20,), seed=15)
    x = g.relu(g.matmul("input", 16))
    return g.build(g.matmul(x, 5))


def _bn_fold():
    g = GraphBuilder("bn_fold", (3, 11, 13), seed=16)
    x = g.conv_bn("input", 12, 3, 1, act="relu")
    x = g.batchnorm(g.conv(x, 5, 3, 2, bias=True), gain=1.5)
    return g.build(x)


def _relu_requant():
    # The conv output feeds both the Relu and the Add, so the Relu cannot be folded away:
    # it becomes a standalone requantizing layer.
    g = GraphBuilder("relu_requant", (3, 9, 11), seed=17)
    x = g.conv("input", 8, 3)
    return g.build(g.add(x, g.relu(x)))


def _clip_range():
    g = GraphBuilder("clip_range", (3, 8, 8), seed=18)
    x = g.clip(g.conv("input", 5, 3), -1.0, 1.5)
    return g.build(g.clip(g.conv(x, 4, 1, pads=(0, 0, 0, 0)), 0.0, 6.0))


def _mini_cnn():
    g = GraphBuilder("mini_cnn", (3, 19, 17), seed=19)
    x = g.conv_bn("input", 12, 3, 1)
    x = g.maxpool(x, 3, 2, (1, 1, 1, 1))
    x = g.conv_bn(x, 20, 3, 2)
    y = g.conv_bn(x, 20, 3, 1, groups=20, act="relu6")
    y = g.conv_bn(y, 20, 1, 1, act=None, gain=0.5)
    x = g.relu(g.add(x, y))
    x = g.conv_bn(x, 24, 1, 1)
    return g.build(g.gemm(g.flatten(g.global_avgpool(x)), 10))


#: name -> builder of a float ModelProto
GRAPHS = {
    "conv3_odd": _conv3_odd,
    "conv5_stride2_asym": _conv5_stride2_asym,
    "conv7_same_upper": _conv7_same_upper,
    "conv1_signed": _conv1_signed,
    "conv3_valid_nobias": _conv3_valid_nobias,
    "depthwise": _depthwise,
    "residual_add": _residual_add,
    "add_input": _add_input,
    "maxpool_pad": _maxpool_pad,
    "maxpool_signed": _maxpool_signed,
    "avgpool": _avgpool,
    "gap_output": _gap_output,
    "gemm_flatten": _gemm_flatten,
    "gemm_chain": _gemm_chain,
    "matmul_add": _matmul_add,
    "bn_fold": _bn_fold,
    "relu_requant": _relu_requant,
    "clip_range": _clip_range,
    "mini_cnn": _mini_cnn,
}


def build(name):
    """The float ModelProto of the named test graph."""
    return GRAPHS[name]()


def _input_shape(model):
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return tuple(d.dim_value for d in dims[1:])


def sample_input(model, seed=0, count=1):
    """Deterministic float32 input(s) ``(count, *shape)`` for ``model`` (standard normal)."""
    rng = np.random.default_rng(1000 + seed)
    return rng.normal(0.0, 1.0, (count, *_input_shape(model))).astype(np.float32)


def calibration_data(model, count=8, seed=0):
    """Calibration samples ``(count, *shape)`` drawn like :func:`sample_input`."""
    return sample_input(model, seed=seed + 500, count=count)


def quantized(name, tmp_path, preprocess=True):
    """Quantize the named graph (seeded calibration data) and return the QDQ model's path."""
    model = build(name)
    float_path = tmp_path / f"{name}_float.onnx"
    float_path.write_bytes(model.SerializeToString())
    out_path = tmp_path / f"{name}_qdq.onnx"
    quantize_model(float_path, calibration_data(model), out_path, preprocess=preprocess)
    return out_path


class HandQDQ:
    """Hand-written QDQ graphs, for patterns onnxruntime's quantizer does not emit itself.

    ``x`` is the float output of the input's DequantizeLinear; add float operators with
    :meth:`node` (weights with :meth:`weight`) and close with :meth:`model`, which quantizes
    the last float tensor and dequantizes it to the output ``output``.
    """

    def __init__(self, shape, scale=0.04, zero_point=3):
        self.nodes, self.inits, self.params = [], [], {}
        self.shape = shape
        self.rng = np.random.default_rng(7)
        self.x = self.dq(self.q("input", scale, zero_point))

    def const(self, name, array):
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op, inputs, name, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [name + "_out"], name=name, **attrs))
        return name + "_out"

    def q(self, x, scale, zero_point):
        s = self.const(x + "_s", np.float32(scale))
        z = self.const(x + "_z", np.int8(zero_point))
        self.params[x + "_q"] = (s, z)
        self.nodes.append(helper.make_node("QuantizeLinear", [x, s, z], [x + "_q"],
                                           name=x + "_Q"))
        return x + "_q"

    def dq(self, xq):
        self.nodes.append(helper.make_node("DequantizeLinear", [xq, *self.params[xq]],
                                           [xq + "_dq"], name=xq + "_DQ"))
        return xq + "_dq"

    def weight(self, name, w, axis=0):
        """Symmetric per-channel int8 weights behind a DequantizeLinear."""
        other = tuple(i for i in range(w.ndim) if i != axis)
        scale = np.abs(w).max(axis=other) / 127.0
        q = np.rint(w / np.expand_dims(scale, other)).astype(np.int8)
        self.const(name + "_wq", q)
        self.const(name + "_ws", scale.astype(np.float32))
        self.const(name + "_wz", np.zeros_like(scale, np.int8))
        self.nodes.append(helper.make_node("DequantizeLinear", [name + "_wq", name + "_ws",
                                                                name + "_wz"], [name + "_w"],
                                           axis=axis))
        return name + "_w"

    def model(self, y, scale, zero_point, out_shape, opset=13):
        out = self.dq(self.q(y, scale, zero_point))
        self.nodes.append(helper.make_node("Identity", [out], ["output"], name="out"))
        graph = helper.make_graph(
            self.nodes, "hand",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, *self.shape])],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, *out_shape])],
            self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model
