"""Split and Slice on the channel axis (CSP blocks, ShuffleNet, GhostNet).

Small graphs built with the zoo's GraphBuilder, quantized with onnxruntime's
``quantize_static`` and compiled for ``small``: the instruction-set simulator stays within one
output step of ONNX Runtime (graph optimizations disabled) on 1 to 3 cores and bit-identical
to the layer reference. Other axes, steps and bounds are refused in one line naming the node.
"""

import numpy as np
import pytest
from onnx import helper

from graphs import calibration_data
from test_concat import check_against_references
from vdla.compiler.errors import UnsupportedError
from vdla.compiler.frontend import load_model
from vdla.compiler.ifp import dumps, loads
from vdla.compiler.quantize import quantize_model
from vdla.compiler.static import compile_graph
from vdla.compiler.verify import check_program
from vdla.compiler.zoo import GraphBuilder
from vdla.config import get_config

CONFIG = get_config("small")


def split(g, x, sizes=None, count=2, axis=1, as_input=True, num_outputs=False):
    """Split ``x`` along ``axis`` into ``sizes`` (equal ``count`` parts if None; opset 18's
    ``num_outputs`` attribute if asked)."""
    c, h, w = g.shapes[x]
    name = g.unique("split")
    parts = sizes or [c // count] * count
    outs = [f"{name}_out{i}" for i in range(len(parts))]
    inputs, attrs = [x], {"axis": axis}
    if num_outputs:
        attrs["num_outputs"] = count
    if sizes is not None and as_input:
        inputs.append(g.const("split", np.asarray(sizes), np.int64))
    g.nodes.append(helper.make_node("Split", inputs, outs, name=name, **attrs))
    for out, n in zip(outs, parts):
        g.shapes[out] = (n, h, w)
    return outs


def slice_(g, x, start, end, axes=(1,), steps=None):
    c, h, w = g.shapes[x]
    inputs = [x, g.const("starts", [start], np.int64), g.const("ends", [end], np.int64),
              g.const("axes", list(axes), np.int64)]
    if steps is not None:
        inputs.append(g.const("steps", [steps], np.int64))
    return g.node("Slice", inputs, (min(end, c) - start, h, w))


def concat(g, a, b):
    (ca, h, w), cb = g.shapes[a], g.shapes[b][0]
    return g.node("Concat", [a, b], (ca + cb, h, w), axis=1)


def csp_block(seed=71, opset=None):
    """YOLOv5/v8 C2f-like: conv -> Split into halves -> conv on one half -> Concat."""
    g = GraphBuilder("csp_split", (3, 6, 7), seed=seed)
    x = g.relu(g.conv("input", 16, 3))
    a, b = split(g, x, num_outputs=opset == 18)
    return g.build(g.conv(concat(g, a, g.relu(g.conv(b, 8, 3))), 8, 1), opset=opset)


def misaligned_split(seed=72):
    """12 channels into 5 and 7, each through a convolution, summed by a concat."""
    g = GraphBuilder("misaligned_split", (3, 5, 6), seed=seed)
    x = g.relu(g.conv("input", 12, 3))
    a, b = split(g, x, [5, 7])
    return g.build(g.conv(concat(g, g.relu(g.conv(b, 8, 1)), g.relu(g.conv(a, 4, 3))), 6, 1))


def channel_slice(seed=73):
    """Channels 8..16 of a 24-channel tensor, then a convolution."""
    g = GraphBuilder("channel_slice", (3, 5, 5), seed=seed)
    x = g.relu(g.conv("input", 24, 3))
    return g.build(g.conv(slice_(g, x, 8, 16), 6, 3))


def _qdq(model, tmp_path):
    float_path, qdq_path = tmp_path / "float.onnx", tmp_path / "qdq.onnx"
    float_path.write_bytes(model.SerializeToString())
    quantize_model(float_path, calibration_data(model), qdq_path, preprocess=False)
    return qdq_path


def _check(model, tmp_path):
    path = _qdq(model, tmp_path)
    graph = load_model(path)
    program = loads(dumps(compile_graph(graph, CONFIG)), CONFIG)
    check_program(program, CONFIG)
    worst = check_against_references(model, path, graph, program)
    print(f"{model.graph.name}: {len(graph.layers)} layers, worst {worst:.2f} steps")
    return graph


def _selections(graph, c):
    """``(first, count)`` of the input channels each 1x1 selecting copy takes."""
    out = []
    for layer in graph.layers:
        if layer.kind == "conv" and layer.kernel == (1, 1) and layer.weight.shape[1] == c \
                and np.count_nonzero(layer.weight) == layer.weight.shape[0]:
            cols = np.nonzero(layer.weight[:, :, 0, 0])[1]
            if np.array_equal(cols, cols[0] + np.arange(len(cols))):
                out.append((int(cols[0]), len(cols)))
    return sorted(out)


@pytest.mark.parametrize("opset", [13, 18])
def test_csp_block(opset, tmp_path):
    graph = _check(csp_block(opset=opset), tmp_path)
    assert _selections(graph, 16) == [(0, 8), (8, 8)]
    # The passed-on half is copied straight at the Concat's scale: no copy for the Concat.
    assert len(graph.layers) == 5 and len(graph.concats) == 1


def test_misaligned_split(tmp_path):
    graph = _check(misaligned_split(), tmp_path)
    assert _selections(graph, 12) == [(0, 5), (5, 7)]


def test_channel_slice(tmp_path):
    graph = _check(channel_slice(), tmp_path)
    assert _selections(graph, 24) == [(8, 8)]


def _refused(model, tmp_path, op_type):
    path = _qdq(model, tmp_path)
    with pytest.raises(UnsupportedError) as info:
        load_model(path)
    message = str(info.value)
    assert op_type in message and "\n" not in message
    return message


def test_split_of_another_axis_is_refused(tmp_path):
    g = GraphBuilder("split_h", (3, 6, 6), seed=74)
    x = g.relu(g.conv("input", 8, 3))
    a, _ = split(g, x, [3, 3], axis=2)
    g.shapes[a] = (8, 3, 6)
    assert "axis 2" in _refused(g.build(g.conv(a, 4, 1)), tmp_path, "Split")


@pytest.mark.parametrize("axes, steps, what", [((2,), None, "axes"), ((1,), 2, "steps")])
def test_slice_limits_are_refused(axes, steps, what, tmp_path):
    g = GraphBuilder("slice_bad", (3, 6, 6), seed=75)
    x = g.relu(g.conv("input", 16, 3))
    y = slice_(g, x, 0, 4, axes, steps)
    c, h, w = g.shapes[x]
    g.shapes[y] = (c, 4, w) if axes == (2,) else (2, h, w)
    assert what in _refused(g.build(g.conv(y, 4, 1)), tmp_path, "Slice")


def test_slice_with_computed_bounds_is_refused(tmp_path):
    """Ends computed by an int64 Add of two constants: not a constant to the front end."""
    g = GraphBuilder("slice_computed", (3, 6, 6), seed=76)
    x = g.relu(g.conv("input", 16, 3))
    end = g.node("Add", [g.const("a", [4], np.int64), g.const("b", [4], np.int64)], (1,))
    y = g.node("Slice", [x, g.const("starts", [0], np.int64), end,
                         g.const("axes", [1], np.int64)], (8, 6, 6))
    assert "constant" in _refused(g.build(g.conv(y, 4, 1)), tmp_path, "Slice")
