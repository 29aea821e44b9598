"""Element-wise activations lowered to MISC LUT: small models built with onnx.helper, quantized
with onnxruntime's ``quantize_static`` (QDQ, int8) and compiled for ``small``.

Each is checked as the other model tests are (:func:`test_concat.check_against_references`):
the instruction-set simulator within one output step of ONNX Runtime with graph optimizations
disabled, and bit-identical to the layer reference. The tables themselves are checked on every
one of the 256 int8 inputs, and the patterns a table cannot compute are refused in one line.
"""

import numpy as np
import pytest

from graphs import HandQDQ
from test_concat import _qdq, check_against_references, compiled
from vdla.compiler.errors import UnsupportedError
from vdla.compiler.frontend import load_model
from vdla.compiler.ifp import dumps, loads
from vdla.compiler.static import compile_graph
from vdla.compiler.zoo import GraphBuilder
from vdla.config import get_config
from vdla.sim.host import run_program
from vdla.sim.onnx_reference import reference_session

CONFIG = get_config("small")


def silu(g, x):
    """SiLU as exporters write it: x * Sigmoid(x)."""
    return g.node("Mul", [x, g.node("Sigmoid", [x], g.shapes[x])], g.shapes[x])


def act(g, x, op, **attrs):
    return g.node(op, [x], g.shapes[x], **attrs)


def out(g, x):
    """The model's output: a 1x1 convolution of ``x`` (ORT leaves an activation, or a
    pooling after it, in float at the end of a model, which vdla refuses)."""
    return g.build(g.conv(x, 7, 1, pads=(0, 0, 0, 0)))


def efficientnet_block():
    """Stem and an MBConv block without squeeze-excite: expand 1x1, depthwise 3x3, project
    1x1, residual Add; SiLU after every convolution but the projection."""
    g = GraphBuilder("efficientnet_block", (3, 12, 11), seed=21)
    stem = silu(g, g.conv_bn("input", 8, 3, 1, act=None))
    x = silu(g, g.conv_bn(stem, 24, 1, 1, act=None))
    x = silu(g, g.conv_bn(x, 24, 3, 1, groups=24, act=None))
    x = g.conv_bn(x, 8, 1, 1, act=None)
    return g.build(g.add(x, stem))


def mobilenetv3_block():
    """Stem and an inverted residual without squeeze-excite, HardSwish throughout, and a 1x1
    head with a HardSigmoid of its own alpha and beta, then a 1x1 convolution (at opset 14
    ORT leaves a last HardSigmoid or pooling in float)."""
    g = GraphBuilder("mobilenetv3_block", (3, 11, 12), seed=22)
    stem = act(g, g.conv_bn("input", 8, 3, 2, act=None), "HardSwish")
    x = act(g, g.conv_bn(stem, 16, 1, 1, act=None), "HardSwish")
    x = act(g, g.conv_bn(x, 16, 3, 1, groups=16, act=None), "HardSwish")
    x = g.add(g.conv_bn(x, 8, 1, 1, act=None), stem)
    x = act(g, g.conv(x, 12, 1), "HardSigmoid", alpha=0.25, beta=0.45)
    return g.build(g.conv(x, 6, 1, pads=(0, 0, 0, 0)), opset=14)


def single(op, **attrs):
    """A convolution, ``op`` and a 1x1 convolution; PRelu with one slope for the whole
    tensor."""
    def builder():
        g = GraphBuilder(f"single_{op.lower()}", (5, 9, 10), seed=23)
        x = g.conv("input", 12, 3)
        if op == "PRelu":
            slope = g.const("slope", np.full((1, 1, 1), 0.23))
            return out(g, g.node("PRelu", [x, slope], g.shapes[x]))
        return out(g, act(g, x, op, **attrs))
    return builder


#: builder, LUT layers the compiled model must have (SiLU and HardSwish fold to one each).
MODELS = {
    "efficientnet_silu": (efficientnet_block, 3),
    "mobilenetv3_hardswish": (mobilenetv3_block, 4),
    "sigmoid": (single("Sigmoid"), 1),
    "tanh": (single("Tanh"), 1),
    "leakyrelu": (single("LeakyRelu", alpha=0.07), 1),
    "prelu": (single("PRelu"), 1),
}


@pytest.mark.parametrize("name", MODELS)
def test_model_against_onnxruntime(name, tmp_path):
    builder, luts = MODELS[name]
    model, qdq_path, graph, program = compiled(builder, tmp_path)
    assert [layer.kind for layer in graph.layers].count("lut") == luts, \
        [(layer.name, layer.kind) for layer in graph.layers]
    assert [layer.kind for layer in program.layers].count("lut") == luts
    worst = check_against_references(model, qdq_path, graph, program)
    print(f"{name}: {len(graph.layers)} layers, {luts} lookups, worst {worst:.2f} steps")


def _exhaustive(op, scale=0.05, zero_point=-7, **attrs):
    """QDQ model DQ -> op -> Q -> DQ over a (256, 1, 1) input holding every int8 value once,
    and that input (as floats that quantize to exactly those values)."""
    h = HandQDQ((256, 1, 1), scale, zero_point)
    if op == "SiLU":
        s = h.dq(h.q(h.node("Sigmoid", [h.x], "sig"), 1.0 / 255, -128))
        y = h.node("Mul", [h.x, s], "silu")
    elif op == "PRelu":
        y = h.node("PRelu", [h.x, h.const("slope", np.full((1, 1, 1), -0.4, np.float32))],
                   "prelu")
    else:
        y = h.node(op, [h.x], op.lower(), **attrs)
    model = h.model(y, 0.031, 11, (256, 1, 1), opset=14)
    x = ((np.arange(-128, 128) - zero_point) * scale).astype(np.float32).reshape(1, 256, 1, 1)
    return model, x


#: (op, attributes, whether ONNX Runtime computes it with exact float32 arithmetic: its
#: Sigmoid and Tanh are approximations, which may round a value next to a tie the other way)
EXHAUSTIVE = [
    ("Sigmoid", {}, False), ("Tanh", {}, False), ("SiLU", {}, False),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.6}, True), ("HardSwish", {}, True),
    ("LeakyRelu", {"alpha": 0.2}, True), ("PRelu", {}, True),
]


@pytest.mark.parametrize("op, attrs, exact", EXHAUSTIVE, ids=[e[0] for e in EXHAUSTIVE])
def test_table_of_every_int8_value(op, attrs, exact, tmp_path):
    """The compiled table against ONNX Runtime running the QDQ graph on each int8 input."""
    model, x = _exhaustive(op, **attrs)
    path = tmp_path / f"{op}.onnx"
    path.write_bytes(model.SerializeToString())
    graph = load_model(path)
    assert [layer.kind for layer in graph.layers] == ["lut"]
    program = loads(dumps(compile_graph(graph, CONFIG)), CONFIG)
    expected = reference_session(path).run(None, {"input": x})[0]
    got = run_program(program, CONFIG, {"input": x})["output"]
    steps = np.rint(np.abs(got - expected) / 0.031).astype(int)
    # The function is not constant: the table really maps the inputs.
    assert len(np.unique(expected)) > 20
    assert steps.max() <= (0 if exact else 1), f"{int((steps > 0).sum())} of 256 differ"
    assert (steps == 0).sum() >= 250


def _refused(builder, tmp_path):
    """The one-line UnsupportedError loading the quantized model of ``builder`` raises."""
    model = builder()
    with pytest.raises(UnsupportedError) as info:
        load_model(_qdq(model, tmp_path))
    message = str(info.value)
    assert "\n" not in message
    return info.value, message


def test_per_channel_prelu_slope_is_refused(tmp_path):
    def builder():
        g = GraphBuilder("prelu_per_channel", (4, 6, 6), seed=24)
        x = g.conv("input", 6, 3)
        slope = g.const("slope", np.linspace(0.1, 0.3, 6).reshape(6, 1, 1))
        return out(g, g.node("PRelu", [x, slope], g.shapes[x]))
    error, message = _refused(builder, tmp_path)
    assert error.node == "prelu_0" and error.op_type == "PRelu", message
    assert "slope per channel (6 values)" in message


def test_mul_of_two_activations_is_refused(tmp_path):
    def builder():
        g = GraphBuilder("mul_two", (4, 6, 6), seed=25)
        a = g.conv("input", 6, 3)
        b = g.conv("input", 6, 1, pads=(0, 0, 0, 0))
        return out(g, g.node("Mul", [a, b], g.shapes[a]))
    error, message = _refused(builder, tmp_path)
    assert error.node == "mul_0" and error.op_type == "Mul", message
    assert "Mul of two different activations is not supported" in message
