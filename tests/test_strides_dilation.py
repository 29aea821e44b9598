"""Conv with unequal strides (PP-OCR's (2, 1), also (1, 2)) and with dilation (DeepLab's
atrous 3x3).

A dilated kernel is compiled as the kernel with zero taps between its taps; strides (2, 1) /
(1, 2) as two stride-2 phase convolutions whose outputs interleave along the stride-1 axis.
Small graphs built with the zoo's GraphBuilder, quantized with onnxruntime's
``quantize_static`` and compiled for ``small``: every frame passes the verifier, the
instruction-set simulator on 1 to 3 cores stays within one output step of ONNX Runtime
(graph optimizations disabled) and is bit-identical to the layer reference.
"""

import pytest

from test_concat import check_against_references
from test_more_ops import _qdq, _refused
from vdla.compiler.frontend import load_model
from vdla.compiler.ifp import dumps, loads
from vdla.compiler.static import compile_graph
from vdla.compiler.verify import check_program
from vdla.compiler.zoo import GraphBuilder
from vdla.config import get_config

CONFIG = get_config("small")


def _check(model, tmp_path):
    """Compile, verify every frame, compare with ORT and the layer reference."""
    path = _qdq(model, tmp_path)
    graph = load_model(path)
    program = loads(dumps(compile_graph(graph, CONFIG)), CONFIG)
    check_program(program, CONFIG)
    worst = check_against_references(model, path, graph, program)
    print(f"{model.graph.name}: {len(graph.layers)} layers, worst {worst:.2f} steps")
    return graph


def _phases(graph):
    return [(p.a, p.b, p.step, p.conv.stride) for layer in graph.layers
            if layer.kind == "convt" for p in layer.phases]


def strides_atrous_model():
    """A small model for RTL runs: 8x8x8 input, a PP-OCR (2, 1) conv, a (1, 2) conv and an
    atrous 3x3 (dilation 2)."""
    g = GraphBuilder("strides_atrous", (8, 8, 8), seed=91)
    x = g.relu(g.conv("input", 16, 3, stride=(2, 1), pads=(1, 1, 1, 1)))
    x = g.relu(g.conv(x, 16, 3, stride=(1, 2), pads=(1, 1, 1, 1)))
    return g.build(g.conv(x, 8, 3, pads=(2, 2, 2, 2), dilation=2))


def test_stride_2_1(tmp_path):
    g = GraphBuilder("s21", (8, 9, 7), seed=81)
    model = g.build(g.conv("input", 16, 3, stride=(2, 1), pads=(1, 1, 1, 1)))
    graph = _check(model, tmp_path)
    assert graph.tensors[graph.outputs[0]].shape == (16, 5, 7)
    assert _phases(graph) == [(0, 0, (1, 2), 2), (0, 1, (1, 2), 2)]


def test_stride_1_2_unpadded(tmp_path):
    """No left / top padding: the odd phase starts one input row later (a zero kernel row)."""
    g = GraphBuilder("s12", (8, 8, 10), seed=82)
    model = g.build(g.conv("input", 8, (3, 2), stride=(1, 2), pads=(0, 0, 0, 0)))
    graph = _check(model, tmp_path)
    assert graph.tensors[graph.outputs[0]].shape == (8, 6, 5)
    assert _phases(graph) == [(0, 0, (2, 1), 2), (1, 0, (2, 1), 2)]


def test_ppocr_block(tmp_path):
    """PP-OCR's recognition backbone: 3x3 stride (2, 1) pads 1, then a 3x3 conv."""
    g = GraphBuilder("ppocr", (3, 8, 16), seed=83)
    x = g.relu(g.conv("input", 16, 3, pads=(1, 1, 1, 1)))
    x = g.relu(g.conv(x, 16, 3, stride=(2, 1), pads=(1, 1, 1, 1)))
    model = g.build(g.conv(x, 16, 3))
    graph = _check(model, tmp_path)
    assert graph.tensors[graph.outputs[0]].shape == (16, 4, 16)


def test_depthwise_stride_2_1(tmp_path):
    g = GraphBuilder("dw21", (16, 8, 8), seed=84)
    model = g.build(g.conv("input", 16, 3, stride=(2, 1), groups=16))
    graph = _check(model, tmp_path)
    assert graph.tensors[graph.outputs[0]].shape == (16, 4, 8)


def test_atrous_3x3_dilation_2(tmp_path):
    g = GraphBuilder("atrous2", (8, 10, 10), seed=85)
    x = g.relu(g.conv("input", 16, 1))
    model = g.build(g.conv(x, 16, 3, pads=(2, 2, 2, 2), dilation=2))
    graph = _check(model, tmp_path)
    atrous = graph.layers[-1]
    assert atrous.kernel == (5, 5) and not atrous.weight[:, :, 1::2].any()
    assert graph.tensors[atrous.output].shape == (16, 10, 10)


def test_dilation_3(tmp_path):
    g = GraphBuilder("atrous3", (8, 12, 12), seed=86)
    model = g.build(g.conv("input", 8, 3, pads=(3, 3, 3, 3), dilation=3))
    graph = _check(model, tmp_path)
    assert graph.layers[0].kernel == (7, 7)


def test_depthwise_dilation_2(tmp_path):
    g = GraphBuilder("dw_atrous", (16, 9, 9), seed=87)
    model = g.build(g.conv("input", 16, 3, pads=(2, 2, 2, 2), groups=16, dilation=2))
    graph = _check(model, tmp_path)
    assert graph.layers[0].depthwise and graph.layers[0].kernel == (5, 5)


def test_rtl_model(tmp_path):
    graph = _check(strides_atrous_model(), tmp_path)
    assert [layer.kind for layer in graph.layers] == ["convt", "convt", "conv"]


@pytest.mark.parametrize("build, what", [
    (lambda g: g.conv("input", 4, 3, stride=(3, 1)), "strides=[3, 1] are not supported"),
    (lambda g: g.conv("input", 4, 3, dilation=9, pads=(16, 16, 16, 16)),
     "pads (16, 16, 16, 16) are not supported"),
    (lambda g: g.conv("input", 4, 3, stride=(1, 3), dilation=2),
     "strides=[1, 3] are not supported (each in [1, 2] only)"),
])
def test_refusals(tmp_path, build, what):
    g = GraphBuilder("refused", (4, 40, 40), seed=88)
    _refused(g.build(build(g)), tmp_path, "conv_0", what)
