"""ReduceMean, MaxPool with ceil_mode and Pad, lowered onto layers the compiler already has.

Small models built with the zoo's GraphBuilder, quantized with onnxruntime's
``quantize_static`` and compiled for ``small``: the instruction-set simulator stays within one
output step of ONNX Runtime (graph optimizations disabled) and bit-identical to the layer
reference (:func:`test_concat.check_against_references`). What stays unsupported is refused in
one line naming the node.
"""

import numpy as np
import pytest

from graphs import calibration_data, sample_input
from test_concat import check_against_references
from vdla.compiler.errors import UnsupportedError
from vdla.compiler.frontend import load_model
from vdla.compiler.ifp import dumps, loads
from vdla.compiler.quantize import quantize_model
from vdla.compiler.static import compile_graph
from vdla.compiler.zoo import GraphBuilder
from vdla.config import get_config
from vdla.sim.host import quantize
from vdla.sim.reference import run_graph

CONFIG = get_config("small")


def _qdq(model, tmp_path, preprocess=True):
    """QDQ model path. Without ``preprocess``: onnxruntime's optimizer would fuse a Pad into
    the Conv after it before quantizing, leaving no Pad to test."""
    float_path, qdq_path = tmp_path / "float.onnx", tmp_path / "qdq.onnx"
    float_path.write_bytes(model.SerializeToString())
    quantize_model(float_path, calibration_data(model), qdq_path, preprocess=preprocess)
    return qdq_path


def _check(model, tmp_path, preprocess=True):
    """Compile ``model`` and check it against ORT; ``(IR graph, worst steps)``."""
    path = _qdq(model, tmp_path, preprocess)
    graph = load_model(path)
    program = loads(dumps(compile_graph(graph, CONFIG)), CONFIG)
    worst = check_against_references(model, path, graph, program)
    print(f"{model.graph.name}: {len(graph.layers)} layers, worst {worst:.2f} steps")
    return graph, worst


def _refused(model, tmp_path, node, what, preprocess=True):
    with pytest.raises(UnsupportedError) as info:
        load_model(_qdq(model, tmp_path, preprocess))
    message = str(info.value)
    assert message.startswith(f"node {node!r} ") and what in message and "\n" not in message, \
        message


def pad(g, x, pads, out_shape, value=None, **attrs):
    """Pad with ``pads`` as an initializer (opset 11+), constant ``value`` if given."""
    inputs = [x, g.const("pads", np.asarray(pads), np.int64)]
    if value is not None:
        inputs.append(g.const("value", np.float32(value)))
    return g.node("Pad", inputs, out_shape, **attrs)


def reduce_mean(g, x, axes, keepdims, opset=13):
    """ReduceMean with ``axes`` as an attribute, or from opset 18 on as an input."""
    c = g.shapes[x][0]
    shape = (c, 1, 1) if keepdims else (c,)
    if opset >= 18:
        return g.node("ReduceMean", [x, g.const("axes", np.asarray(axes), np.int64)], shape,
                      keepdims=keepdims)
    return g.node("ReduceMean", [x], shape, axes=axes, keepdims=keepdims)


# -- ReduceMean ------------------------------------------------------------------------------
@pytest.mark.parametrize("axes, keepdims, opset", [([2, 3], 0, 13), ([-2, -1], 1, 13),
                                                   ([3, 2], 0, 18)])
def test_reduce_mean_then_gemm(axes, keepdims, opset, tmp_path):
    """A classifier head written as ReduceMean -> Gemm: a global average pooling."""
    g = GraphBuilder("reduce_mean", (3, 9, 10), seed=31)
    x = g.relu(g.conv(g.relu(g.conv("input", 8, 3)), 16, 3, stride=2))
    y = reduce_mean(g, x, axes, keepdims, opset)
    model = g.build(g.gemm(y if not keepdims else g.flatten(y), 10), opset=opset)
    graph, _ = _check(model, tmp_path)
    pool = graph.layers[-2]
    assert (pool.kind, pool.mode, pool.kernel) == ("pool", "avg", (5, 5))


def test_reduce_mean_over_channels_is_refused(tmp_path):
    g = GraphBuilder("reduce_c", (3, 6, 6), seed=32)
    y = reduce_mean(g, g.relu(g.conv("input", 8, 3)), [1], 0)
    g.shapes[y] = (36,)
    _refused(g.build(g.gemm(g.node("Flatten", [y], (36,), axis=1), 4)), tmp_path,
             "reducemean_0", "axes=[1] are not supported")


# -- MaxPool ceil_mode -----------------------------------------------------------------------
def test_maxpool_ceil_mode_extends_the_bottom_right_pads(tmp_path):
    """3x3 stride 2 on 10x10: floor gives 4x4, ceil 5x5, whose last windows start at 8 and
    run one past the input; that row and column pad with -128."""
    g = GraphBuilder("ceil_max", (3, 10, 10), seed=33)
    x = g.maxpool(g.conv("input", 8, 3), 3, 2, (0, 0, 0, 0), ceil_mode=1)
    assert g.shapes[x] == (8, 5, 5)
    graph, _ = _check(g.build(g.conv(x, 6, 1, pads=(0, 0, 0, 0))), tmp_path)
    pool = graph.layers[1]
    assert pool.kind == "pool" and tuple(pool.pads) == (0, 0, 1, 1)
    assert graph.tensors[pool.output].shape == (8, 5, 5)


def test_maxpool_ceil_mode_drops_a_window_starting_in_the_padding(tmp_path):
    """8x8, kernel 2, stride 3, pads 1: ceil would add a window starting at 9 = the input's
    end plus the top pad, inside the bottom padding; ONNX Runtime drops it (3x3 as floor)."""
    g = GraphBuilder("ceil_drop", (3, 8, 8), seed=34)
    x = g.maxpool(g.conv("input", 8, 3), 2, 3, (1, 1, 1, 1), ceil_mode=1)
    g.shapes[x] = (8, 3, 3)
    graph, _ = _check(g.build(g.conv(x, 6, 1, pads=(0, 0, 0, 0))), tmp_path)
    assert graph.tensors[graph.layers[1].output].shape == (8, 3, 3)


def test_avgpool_ceil_mode_is_refused(tmp_path):
    g = GraphBuilder("ceil_avg", (3, 10, 10), seed=35)
    x = g.avgpool(g.conv("input", 8, 3), 3, 2, ceil_mode=1, count_include_pad=1)
    _refused(g.build(g.conv(x, 6, 1, pads=(0, 0, 0, 0))), tmp_path, "averagepool_0",
             "not supported for AveragePool")


# -- Pad folded into its consumer's pads -----------------------------------------------------
def test_spatial_pad_folds_into_conv(tmp_path):
    """Asymmetric Pad (top 1, left 2, bottom 2, right 1) then a 5x5 convolution with pads of
    its own: one convolution with the sum of both."""
    g = GraphBuilder("pad_conv", (3, 9, 8), seed=36)
    x = g.conv("input", 8, 3)
    p = pad(g, x, [0, 0, 1, 2, 0, 0, 2, 1], (8, 12, 11))
    graph, _ = _check(g.build(g.conv(p, 8, 5, pads=(1, 1, 1, 1))), tmp_path, preprocess=False)
    assert [layer.kind for layer in graph.layers] == ["conv", "conv"]
    assert tuple(graph.layers[1].pads) == (2, 3, 3, 2)


def test_spatial_pad_folds_into_pooling(tmp_path):
    """After a Relu (zero point -128) a Pad of 0 reads what max pooling pads with; an average
    pooling that excludes its own (absent) pads still counts the Pad's zeros."""
    g = GraphBuilder("pad_pool", (3, 9, 9), seed=37)
    x = g.relu(g.conv("input", 8, 3))
    m = g.maxpool(pad(g, x, [0, 0, 0, 0, 0, 0, 1, 1], (8, 10, 10)), 3, 2, (0, 0, 0, 0))
    a = g.avgpool(pad(g, m, [0, 0, 1, 1, 0, 0, 1, 1], (8, 6, 6)), 3, 1)
    graph, _ = _check(g.build(g.conv(a, 6, 1, pads=(0, 0, 0, 0))), tmp_path, preprocess=False)
    assert [layer.kind for layer in graph.layers] == ["conv", "pool", "pool", "conv"]
    assert tuple(graph.layers[1].pads) == (0, 0, 1, 1)
    assert tuple(graph.layers[2].pads) == (1, 1, 1, 1)


def test_pad_before_maxpool_not_at_minus_128_is_refused(tmp_path):
    """Without a Relu the zero point is not -128: the Pad's 0 would beat negative values."""
    g = GraphBuilder("pad_max_bad", (3, 8, 8), seed=38)
    p = pad(g, g.conv("input", 8, 3), [0, 0, 1, 1, 0, 0, 1, 1], (8, 10, 10))
    x = g.maxpool(p, 3, 2, (0, 0, 0, 0))
    _refused(g.build(g.conv(x, 6, 1, pads=(0, 0, 0, 0))), tmp_path, "pad_0",
             "but MaxPool 'maxpool_0' pads with -128", preprocess=False)


def test_pad_of_another_value_before_conv_is_refused(tmp_path):
    g = GraphBuilder("pad_value", (3, 8, 8), seed=39)
    p = pad(g, g.conv("input", 8, 3), [0, 0, 1, 1, 0, 0, 1, 1], (8, 10, 10), value=0.7)
    _refused(g.build(g.conv(p, 6, 3, pads=(0, 0, 0, 0))), tmp_path, "pad_0",
             "but Conv 'conv_1' pads with", preprocess=False)


# -- Pad of the channel axis -----------------------------------------------------------------
@pytest.mark.parametrize("value", [None, 0.4])
def test_blazeface_block_channel_pad(value, tmp_path):
    """BlazeFace's stride-2 block: depthwise 5x5 / 1x1 on one branch, MaxPool and channels
    appended on the other (zeros as BlazeFace has them, or another constant), a residual
    Add, a Relu. The copy's extra channels hold exactly the quantized constant."""
    g = GraphBuilder("blaze_block", (3, 12, 12), seed=40)
    x = g.relu(g.conv("input", 8, 3))
    branch = g.conv(g.conv(x, 8, 5, stride=2, groups=8), 12, 1, pads=(0, 0, 0, 0))
    pooled = g.maxpool(x, 2, 2, (0, 0, 0, 0))
    skip = pad(g, pooled, [0, 0, 0, 0, 0, 4, 0, 0], (12, 6, 6), value)
    y = g.relu(g.add(branch, skip))
    model = g.build(g.conv(y, 6, 1, pads=(0, 0, 0, 0)))
    graph, _ = _check(model, tmp_path)
    (copy,) = [layer for layer in graph.layers if layer.name.startswith("pad_")]
    assert copy.kind == "conv" and copy.weight.shape == (12, 8, 1, 1)
    assert not copy.weight[8:].any()
    padded = graph.tensors[copy.output]
    x_in = graph.tensors["input"]
    q = quantize(sample_input(model)[0], x_in.scale, x_in.zero_point)
    tensors = run_graph(graph, {"input": q})
    constant = np.clip(np.rint(np.float32(value or 0.0) / np.float32(padded.scale))
                       + padded.zero_point, -128, 127)
    assert np.all(tensors[copy.output][8:] == constant)
    np.testing.assert_array_equal(tensors[copy.output][:8], tensors[copy.input])


#: Pads the compiler refuses: (pads, attributes, output shape, what the message says)
REFUSED_PADS = {
    "reflect": ([0, 0, 1, 1, 0, 0, 1, 1], {"mode": "reflect"}, (8, 8, 8), "mode 'reflect'"),
    "batch": ([1, 0, 0, 0, 0, 0, 0, 0], {}, (8, 6, 6), "are not supported"),
    "negative": ([0, 0, -1, 0, 0, 0, 0, 0], {}, (8, 5, 6), "are not supported"),
    "channels_first": ([0, 2, 0, 0, 0, 0, 0, 0], {}, (10, 6, 6), "appended channels only"),
    "both": ([0, 0, 1, 1, 0, 2, 1, 1], {}, (10, 8, 8), "channel and spatial pads together"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_PADS))
def test_pad_refused(case, tmp_path):
    pads, attrs, shape, what = REFUSED_PADS[case]
    g = GraphBuilder(f"pad_{case}", (3, 6, 6), seed=41)
    p = pad(g, g.conv("input", 8, 3), pads, shape, **attrs)
    _refused(g.build(g.conv(p, 6, 1, pads=(0, 0, 0, 0))), tmp_path, "pad_0", what,
             preprocess=False)


def test_spatial_pad_before_add_is_refused(tmp_path):
    g = GraphBuilder("pad_add", (3, 6, 6), seed=42)
    x = g.conv("input", 8, 3)
    p = pad(g, x, [0, 0, 1, 1, 0, 0, 1, 1], (8, 8, 8))
    y = g.add(p, g.conv(x, 8, 3, pads=(2, 2, 2, 2)))
    _refused(g.build(g.conv(y, 6, 1, pads=(0, 0, 0, 0))), tmp_path, "pad_0",
             "only folds into the input of a Conv", preprocess=False)
