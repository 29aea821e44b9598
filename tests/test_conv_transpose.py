"""ConvTranspose with stride 2 (U-Net / DBNet / CenterFace decoders): four phase convolutions.

Small graphs built with the zoo's GraphBuilder, quantized with onnxruntime's
``quantize_static`` and compiled for ``small``: every frame passes the verifier, the
instruction-set simulator on 1 to 3 cores stays within one output step of ONNX Runtime
(graph optimizations disabled) and is bit-identical to the layer reference. What stays
unsupported is refused in one line naming the node.
"""

import numpy as np
import onnx
import pytest

from graphs import calibration_data
from test_concat import check_against_references
from test_resize import _check, _qdq
from vdla.compiler.codegen import LayerAddrs, layer_frames
from vdla.compiler.errors import UnsupportedError
from vdla.compiler.frontend import load_model
from vdla.compiler.ifp import dumps, loads
from vdla.compiler.quantize import quantize_model
from vdla.compiler.static import compile_graph
from vdla.compiler.verify import check_program
from vdla.compiler.zoo import GraphBuilder
from vdla.config import get_config

CONFIG = get_config("small")


def conv_transpose(g, x, cout, kernel, stride=2, pads=(0, 0, 0, 0), output_padding=(0, 0),
                   group=1, dilation=1, strides=None, bias=True):
    """A float ConvTranspose node of ``x`` (weights ``(C, cout // group, k, k)``)."""
    c, h, w = g.shapes[x]
    strides = list(strides or (stride, stride))
    weight = g.rng.normal(0.0, np.sqrt(2.0 / (c * kernel * kernel)),
                          (c, cout // group, kernel, kernel))
    inputs = [x, g.const("wt", weight)]
    if bias:
        inputs.append(g.const("bt", g.rng.normal(0.0, 0.05, cout)))
    span = [dilation * (kernel - 1) + 1] * 2
    out = [s * (n - 1) + e + k - pads[i] - pads[i + 2]
           for i, (s, n, e, k) in enumerate(zip(strides, (h, w), output_padding, span))]
    return g.node("ConvTranspose", inputs, (cout, *out), strides=strides, pads=list(pads),
                  output_padding=list(output_padding), group=group,
                  dilations=[dilation, dilation], kernel_shape=[kernel, kernel])


def conv_transpose_model(channels=8, size=8, kernel=4, pads=(1, 1, 1, 1),
                         output_padding=(0, 0), seed=71, bias=True):
    """conv -> ReLU -> ConvTranspose(stride 2) -> ReLU -> conv on a ``channels`` x ``size`` x
    ``size`` input: a small 2x decoder stage."""
    g = GraphBuilder("conv_transpose", (channels, size, size), seed=seed)
    x = g.relu(g.conv("input", channels, 3))
    y = g.relu(conv_transpose(g, x, channels, kernel, pads=pads,
                              output_padding=output_padding, bias=bias))
    return g.build(g.conv(y, 8, 3))


def _convt(graph):
    (layer,) = [layer for layer in graph.layers if layer.kind == "convt"]
    return layer


@pytest.mark.parametrize("kernel, pads, extra, bias", [
    (2, (0, 0, 0, 0), (0, 0), True),            # nn.ConvTranspose2d(k=2, s=2): U-Net
    (4, (1, 1, 1, 1), (0, 0), True),            # k=4, s=2, p=1: the common 2x decoder
    (3, (1, 1, 1, 1), (1, 1), False),           # k=3, s=2, p=1, output_padding=1
    (3, (0, 1, 2, 0), (1, 0), True)])           # uneven pads and output_padding
def test_conv_transpose_matches_onnxruntime(kernel, pads, extra, bias, tmp_path):
    model = conv_transpose_model(8, 6, kernel, pads, extra, bias=bias)
    graph, program, _ = _check(model, tmp_path)
    layer = _convt(graph)
    assert [(p.a, p.b) for p in layer.phases] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert sum(1 for f in program.frames if program.layers[f["layer"]].kind == "convt") >= 4


def test_per_tensor_weights(tmp_path):
    """quantize_static with per_channel=False: one weight scale, no axis."""
    model = conv_transpose_model(8, 6, 4, seed=74)
    float_path, path = tmp_path / "float.onnx", tmp_path / "qdq.onnx"
    float_path.write_bytes(model.SerializeToString())
    quantize_model(float_path, calibration_data(model), path, per_channel=False,
                   preprocess=False)
    graph = load_model(path)
    program = loads(dumps(compile_graph(graph, CONFIG)), CONFIG)
    check_program(program, CONFIG)
    assert _convt(graph) and check_against_references(model, path, graph, program) <= 1.0001


def test_large_feature_map_tiles(tmp_path):
    """24 channels at 20x20 -> 40x40: each phase's 20x20 output exceeds half of OBUF, so
    every phase is cut into several tiles (frames the cores share)."""
    g = GraphBuilder("big_convt", (16, 20, 20), seed=72)
    x = g.relu(g.conv("input", 24, 1, pads=(0, 0, 0, 0)))
    y = conv_transpose(g, x, 16, 4, pads=(1, 1, 1, 1))
    graph, program, _ = _check(g.build(g.conv(y, 8, 1, pads=(0, 0, 0, 0))), tmp_path,
                               samples=1)
    layer = _convt(graph)
    assert graph.tensors[layer.output].shape == (16, 40, 40)
    plans, frames = layer_frames(layer, graph, CONFIG, LayerAddrs([0], 0, 0, 0))
    assert len(plans) == 4 and all(p.th * p.tw < 20 * 20 for p in plans) and len(frames) > 8


@pytest.mark.parametrize("attrs, message", [
    ({"stride": 3}, "strides=[3, 3]"),
    ({"strides": (2, 1)}, "strides=[2, 1]"),
    ({"group": 2}, "group=2"),
    ({"dilation": 2}, "dilations=[2, 2]")])
def test_refusals_name_the_node(attrs, message, tmp_path):
    g = GraphBuilder("bad_convt", (4, 5, 5), seed=73)
    x = g.relu(g.conv("input", 4, 3))
    group = attrs.pop("group", 1)
    model = g.build(g.conv(conv_transpose(g, x, 4, 3, **attrs), 4, 1))
    path = _qdq(model, tmp_path)
    if group > 1:
        # ORT's quantizer fails on a grouped ConvTranspose: set the group afterwards.
        qdq = onnx.load(path)
        (node,) = [n for n in qdq.graph.node if n.op_type == "ConvTranspose"]
        next(a for a in node.attribute if a.name == "group").i = group
        onnx.save(qdq, path)
    with pytest.raises(UnsupportedError) as info:
        load_model(path)
    text = str(info.value)
    assert "\n" not in text and "ConvTranspose" in text and message in text
