"""Convolution kernels above 7 in either direction.

The PE array's loop nest takes any window the SETUP fields encode (8 bits a direction), so a
big kernel is one CONV like any other, and one whose weights exceed a WBUF half is cut into
bands of rows summed in ABUF. What bounds it is the 4-bit top / left padding of CONV and a
kernel row's weights in WBUF. Small models built with the
zoo's GraphBuilder, quantized with onnxruntime's ``quantize_static`` and compiled for
``small``: the instruction-set simulator stays within one output step of ONNX Runtime (graph
optimizations disabled, 1 to 3 cores) and bit-identical to the layer reference.
"""

import pytest

from test_more_ops import _check, _qdq, _refused
from vdla.compiler.errors import CompileError
from vdla.compiler.frontend import load_model
from vdla.compiler.static import compile_graph
from vdla.compiler.tiling import geometry, plan_layer
from vdla.compiler.zoo import GraphBuilder
from vdla.config import get_config

CONFIG = get_config("small")


def _conv_layers(graph):
    return [layer for layer in graph.layers if layer.kind == "conv"]


def _plans(graph):
    """Tiling plans of the convolutions."""
    return [plan_layer(c.name, geometry(c, graph, CONFIG.cb), CONFIG)
            for c in _conv_layers(graph)]


def test_ds_cnn_first_layer(tmp_path):
    """MLPerf Tiny DS-CNN (keyword spotting): 49x10 MFCCs, a 10x4 stride-2 convolution with
    TensorFlow's SAME pads (top 4, left 1, bottom 5, right 1), a depthwise-separable block,
    global average pooling and the classifier (64 channels reduced to 16)."""
    g = GraphBuilder("ds_cnn", (1, 49, 10), seed=61)
    x = g.relu(g.conv("input", 16, (10, 4), stride=2, pads=(4, 1, 5, 1)))
    assert g.shapes[x] == (16, 25, 5)
    x = g.relu(g.conv(x, 16, 3, groups=16))
    x = g.relu(g.conv(x, 16, 1))
    model = g.build(g.gemm(g.flatten(g.global_avgpool(x)), 12))
    graph, _ = _check(model, tmp_path)
    first = _conv_layers(graph)[0]
    assert first.kernel == (10, 4) and first.stride == 2 and tuple(first.pads) == (4, 1, 5, 1)
    assert graph.tensors[first.output].shape == (16, 25, 5)


def test_9x9_with_padding_4(tmp_path):
    g = GraphBuilder("conv9", (3, 12, 12), seed=62)
    x = g.relu(g.conv("input", 8, 3))
    model = g.build(g.conv(x, 16, 9, pads=(4, 4, 4, 4)))
    graph, _ = _check(model, tmp_path)
    big = _conv_layers(graph)[1]
    assert big.kernel == (9, 9) and tuple(big.pads) == (4, 4, 4, 4)
    assert graph.tensors[big.output].shape == (16, 12, 12)


def test_1x11(tmp_path):
    g = GraphBuilder("conv1x11", (3, 6, 20), seed=63)
    x = g.relu(g.conv("input", 8, 3))
    model = g.build(g.conv(x, 8, (1, 11), pads=(0, 5, 0, 5)))
    graph, _ = _check(model, tmp_path)
    big = _conv_layers(graph)[1]
    assert big.kernel == (1, 11) and graph.tensors[big.output].shape == (8, 6, 20)


def test_15x1_and_11x11_fit_wbuf_whole(tmp_path):
    """The largest kernels whose weights (one input block) fit small's 128 WBUF entries: one
    CONV per tile, no band."""
    g = GraphBuilder("conv15x1", (3, 20, 14), seed=64)
    x = g.relu(g.conv("input", 8, (15, 1), pads=(7, 0, 7, 0)))
    model = g.build(g.conv(x, 8, 11, pads=(5, 5, 5, 5)))
    graph, _ = _check(model, tmp_path)
    assert [layer.kernel for layer in _conv_layers(graph)] == [(15, 1), (11, 11)]
    assert all(not p.kr for p in _plans(graph))


def test_15x15_in_row_bands(tmp_path):
    """225 weight blocks an input block: more than a WBUF half, so the kernel is cut into
    row bands (4, 4, 4, 3 rows) summed in ABUF; two input blocks as well."""
    g = GraphBuilder("conv15", (3, 16, 16), seed=68)
    x = g.relu(g.conv("input", 16, 3))
    model = g.build(g.conv(x, 8, 15, pads=(7, 7, 7, 7)))
    graph, _ = _check(model, tmp_path)
    assert _conv_layers(graph)[1].kernel == (15, 15)
    assert _plans(graph)[1].kr == 4


def bands_in_the_padding():
    """A 15x15 kernel on a 4-row input: its first band (rows -7..-1) and last (rows 5..7) see
    only padding; they still add ``pad_value * weights``."""
    g = GraphBuilder("conv15_pad", (8, 4, 6), seed=69)
    return g.build(g.conv("input", 8, 15, pads=(7, 7, 7, 7)))


def test_bands_wholly_in_the_padding(tmp_path):
    graph, _ = _check(bands_in_the_padding(), tmp_path)
    assert _plans(graph)[0].kr == 4


# -- what stays refused ----------------------------------------------------------------------
def test_top_padding_above_15_is_refused(tmp_path):
    g = GraphBuilder("pad16", (3, 4, 40), seed=65)
    model = g.build(g.conv("input", 8, (1, 33), pads=(0, 16, 0, 16)))
    _refused(model, tmp_path, "conv_0", "pads (0, 16, 0, 16) are not supported (top and left "
             "at most 15)")


def test_kernel_above_the_setup_field_is_refused(tmp_path):
    g = GraphBuilder("k256", (3, 1, 256), seed=66)
    model = g.build(g.conv("input", 8, (1, 256), pads=(0, 0, 0, 0)))
    _refused(model, tmp_path, "conv_0", "kernel 1x256 is not supported (1 to 255)")


def test_a_kernel_row_beyond_wbuf_is_refused(tmp_path):
    """Bands cut rows: a single 129-wide row is more weight blocks than small's WBUF holds;
    the tiler names the layer."""
    g = GraphBuilder("k129", (3, 1, 129), seed=67)
    graph = load_model(_qdq(g.build(g.conv("input", 8, (1, 129), pads=(0, 0, 0, 0))),
                            tmp_path))
    with pytest.raises(CompileError) as info:
        compile_graph(graph, CONFIG)
    message = str(info.value)
    assert message.startswith("layer conv_0: cannot be tiled for configuration 'small' "
                              "(kernel 1x129") and "\n" not in message, message
