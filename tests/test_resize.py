"""Nearest-neighbour Resize by an integer factor (upsampling: FPNs, YOLO necks, CenterFace).

Small graphs built with the zoo's GraphBuilder, quantized with onnxruntime's
``quantize_static`` and compiled for ``small``: every frame passes the verifier, the
instruction-set simulator on 1 and 2 cores gives the same int8 output, within one output
step of ONNX Runtime (graph optimizations disabled); an IR graph of one Resize is checked
bit for bit. What stays unsupported is refused in one line naming the node.
"""

import numpy as np
import pytest

from graphs import calibration_data
from test_concat import check_against_references
from vdla.compiler import ir
from vdla.compiler.errors import UnsupportedError
from vdla.compiler.frontend import load_model
from vdla.compiler.ifp import dumps, loads
from vdla.compiler.quantize import quantize_model
from vdla.compiler.static import compile_graph
from vdla.compiler.upsample import plan_resize
from vdla.compiler.verify import check_program
from vdla.compiler.zoo import GraphBuilder
from vdla.config import get_config
from vdla.sim.host import run_program_int

CONFIG = get_config("small")


def resize(g, x, k, sizes=False, mode="nearest", ctm="asymmetric", nearest="floor", kw=None):
    """Resize by ``k`` (``kw`` along W if given) from ``scales`` or ``sizes`` (opset 11+)."""
    c, h, w = g.shapes[x]
    kw = k if kw is None else kw
    out = (c, int(h * k), int(w * kw))
    roi = g.const("roi", np.zeros(0))
    if sizes:
        inputs = [x, roi, "", g.const("sizes", np.asarray((1, *out)), np.int64)]
    else:
        inputs = [x, roi, g.const("scales", np.asarray([1, 1, k, kw]))]
    return g.node("Resize", inputs, out, mode=mode, coordinate_transformation_mode=ctm,
                  nearest_mode=nearest)


def _qdq(model, tmp_path):
    """QDQ model path (ORT's optimizer left out: the graph as built, Resize included)."""
    float_path, qdq_path = tmp_path / "float.onnx", tmp_path / "qdq.onnx"
    float_path.write_bytes(model.SerializeToString())
    quantize_model(float_path, calibration_data(model), qdq_path, preprocess=False)
    return qdq_path


def _check(model, tmp_path, samples=3):
    """Compile ``model``: the ISS within one step of ORT on 1 to 3 cores, bit-identical to the
    layer reference. Returns ``(IR graph, program, worst steps)``."""
    path = _qdq(model, tmp_path)
    graph = load_model(path)
    program = loads(dumps(compile_graph(graph, CONFIG)), CONFIG)
    check_program(program, CONFIG)
    worst = check_against_references(model, path, graph, program, samples)
    print(f"{model.graph.name}: {len(graph.layers)} layers, worst {worst:.2f} steps")
    return graph, program, worst


def _resizes(graph):
    return [layer for layer in graph.layers if layer.kind == "resize"]


@pytest.mark.parametrize("k, sizes, ctm, nearest", [
    (2, False, "asymmetric", "floor"),              # nn.Upsample(scale_factor=2)
    (2, True, "asymmetric", "floor"),
    (3, False, "half_pixel", "round_prefer_floor"),
    (2, True, "pytorch_half_pixel", "round_prefer_ceil"),
    (3, True, "tf_half_pixel_for_nn", "floor")])
def test_conv_resize_conv(k, sizes, ctm, nearest, tmp_path):
    g = GraphBuilder("upsample", (3, 5, 6), seed=61)
    x = g.relu(g.conv("input", 12, 3))
    y = resize(g, x, k, sizes, ctm=ctm, nearest=nearest)
    graph, _, _ = _check(g.build(g.conv(y, 6, 3)), tmp_path)
    (layer,) = _resizes(graph)
    assert layer.factor == k and graph.tensors[layer.output].shape == (12, 5 * k, 6 * k)


@pytest.mark.parametrize("shape, k", [((10, 3, 4), 2), ((20, 5, 7), 4), ((8, 9, 70), 3)])
def test_resize_layer_is_bit_exact(shape, k):
    """An IR graph of one Resize with a scrambled table: the output is the input repeated
    k x k times through the table, exactly, on 1 and 2 cores."""
    c, h, w = shape
    table = np.random.default_rng(7).permutation(256).astype(np.int64) - 128
    tensors = {"x": ir.Tensor("x", shape, 0.1, 0, (1, *shape)),
               "y": ir.Tensor("y", (c, h * k, w * k), 0.1, 0, (1, c, h * k, w * k))}
    graph = ir.Graph(tensors, [ir.Resize("up", "x", "y", k, table.astype(np.int8))], ["x"],
                     ["y"], "resize_only")
    program = loads(dumps(compile_graph(graph, CONFIG)), CONFIG)
    check_program(program, CONFIG)
    x = np.random.default_rng(5).integers(-128, 128, shape).astype(np.int8)
    expect = table[np.repeat(np.repeat(x.astype(np.int64), k, 1), k, 2) + 128]
    for cores in (1, 2):
        np.testing.assert_array_equal(run_program_int(program, CONFIG, {"x": x},
                                                      cores=cores)["y"], expect)


def fpn():
    """FPN merge: a stride-2 level upsampled x2 and added to the lateral 1x1 convolution."""
    g = GraphBuilder("fpn", (4, 8, 10), seed=63)
    c1 = g.relu(g.conv("input", 16, 3))
    lateral = g.conv(c1, 16, 1)
    top = g.conv(g.relu(g.conv(c1, 16, 3, stride=2)), 16, 1)
    merged = g.add(resize(g, top, 2), lateral)
    return g.build(g.conv(merged, 8, 3))


def test_fpn_top_down_add(tmp_path):
    graph, _, _ = _check(fpn(), tmp_path)
    assert len(_resizes(graph)) == 1 and any(layer.kind == "add" for layer in graph.layers)


def test_yolo_neck_concat(tmp_path):
    """YOLO neck: the upsampled deep level concatenated with the lateral one."""
    g = GraphBuilder("neck", (3, 8, 8), seed=64)
    c1 = g.relu(g.conv("input", 8, 3))
    deep = g.relu(g.conv(c1, 16, 3, stride=2))
    up = resize(g, deep, 2)
    cat = g.node("Concat", [up, c1], (24, 8, 8), axis=1)
    graph, _, _ = _check(g.build(g.conv(cat, 8, 1)), tmp_path)
    assert len(_resizes(graph)) == 1


@pytest.mark.parametrize("shape, k", [((16, 14, 12), 2), ((8, 2, 150), 2), ((8, 20, 9), 3)])
def test_large_feature_maps_tile(shape, k, tmp_path):
    """Outputs far larger than half of OBUF (256 entries): bands of rows, several blocks,
    and (W 150 -> 300) bands of columns; several frames, so several cores share the layer."""
    g = GraphBuilder("big_upsample", shape, seed=65)
    x = g.relu(g.conv("input", shape[0], 1, pads=(0, 0, 0, 0)))
    y = resize(g, x, k)
    graph, program, _ = _check(g.build(g.conv(y, 8, 1, pads=(0, 0, 0, 0))), tmp_path,
                               samples=1)
    (layer,) = _resizes(graph)
    plan = plan_resize(layer.name, graph.tensors[layer.input].shape, k, CONFIG)
    assert len(plan.chunks) > 2 and len(plan.frames) > 1
    if shape[2] * k > 256:
        assert any(nw < shape[2] for *_, nw in plan.chunks)
    index = [i for i, entry in enumerate(program.layers) if entry.kind == "resize"]
    assert (program.frames["layer"] == index[0]).sum() == len(plan.frames)


def _refused(model, tmp_path, node, what):
    with pytest.raises(UnsupportedError) as info:
        load_model(_qdq(model, tmp_path))
    message = str(info.value)
    assert message.startswith(f"node {node!r} ") and what in message and "\n" not in message, \
        message


@pytest.mark.parametrize("k, kw, kwargs, what", [
    (1.5, None, {}, "integer upscaling factor"),
    (2, 3, {}, "the same in H and W"),
    (2, None, {"mode": "linear"}, "mode 'linear' is not supported"),
    (3, None, {"ctm": "align_corners"}, "coordinate_transformation_mode 'align_corners'"),
    (3, None, {"nearest": "ceil"}, "nearest_mode 'ceil'"),         # ORT: 117 steps off
    (3, None, {"ctm": "half_pixel"}, "nearest_mode 'floor'")])     # ORT: 152 steps off
def test_refusals(k, kw, kwargs, what, tmp_path):
    g = GraphBuilder("refused", (3, 4, 4), seed=66)
    y = resize(g, g.relu(g.conv("input", 8, 3)), k, kw=kw, **kwargs)
    _refused(g.build(g.conv(y, 4, 3)), tmp_path, "resize_0", what)
