"""Concat on the channel axis: producers write into channel offsets of one tensor.

A SqueezeNet fire module, DenseNet blocks (a tensor concatenated with a convolution of it)
and a concat whose channel counts do not fill the core's channel blocks (copied instead of
written in place): each built with
onnx.helper, quantized with onnxruntime's ``quantize_static`` and compiled for ``small``. The
instruction-set simulator stays within one output step of ONNX Runtime (graph optimizations
disabled) and bit-identical to the layer reference.
"""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from graphs import calibration_data, sample_input
from vdla.compiler.errors import CompileError, UnsupportedError
from vdla.compiler.frontend import load_model
from vdla.compiler.ifp import dumps, loads
from vdla.compiler.memplan import plan_memory
from vdla.compiler.quantize import quantize_model
from vdla.compiler.static import compile_graph
from vdla.compiler.zoo import GraphBuilder
from vdla.config import get_config
from vdla.sim.host import quantize, run_program, run_program_int
from vdla.sim.onnx_reference import reference_session
from vdla.sim.reference import run_graph

CONFIG = get_config("small")


def concat(g, parts):
    """Concat of ``parts`` on the channel axis."""
    shapes = [g.shapes[p] for p in parts]
    channels = sum(s[0] for s in shapes)
    return g.node("Concat", parts, (channels, *shapes[0][1:]), axis=1)


def fire(g, x, squeeze, expand1, expand3):
    """SqueezeNet fire module: squeeze 1x1 -> (expand 1x1 | expand 3x3) -> Concat."""
    s = g.relu(g.conv(x, squeeze, 1, pads=(0, 0, 0, 0)))
    e1 = g.relu(g.conv(s, expand1, 1, pads=(0, 0, 0, 0)))
    e3 = g.relu(g.conv(s, expand3, 3))
    return concat(g, [e1, e3])


def head(g, x, classes=10):
    """conv 1x1 + relu -> max pool -> global average pool -> Flatten -> Gemm."""
    x = g.relu(g.conv(x, 16, 1, pads=(0, 0, 0, 0)))
    x = g.maxpool(x, 3, 2, (1, 1, 1, 1))
    x = g.flatten(g.global_avgpool(x))
    return g.gemm(x, classes)


def squeezenet_fire():
    g = GraphBuilder("fire", (3, 12, 12), seed=11)
    x = g.relu(g.conv("input", 16, 3, stride=1))
    return g.build(head(g, fire(g, x, 8, 16, 16)))


def densenet_block():
    """Dense block: the block input, read by the next convolution too, concatenated with the
    convolution's output (larger, so the concatenation takes its scale and the block input
    is requantized into its part)."""
    g = GraphBuilder("dense_block", (8, 10, 10), seed=12)
    x = g.relu(g.conv("input", 16, 3))
    y = g.conv_bn(x, 8, 3, gain=4.0)
    return g.build(head(g, concat(g, [x, y])))


def densenet_input():
    """The model input itself concatenated with a convolution of it (copied into a part)."""
    g = GraphBuilder("dense_input", (8, 9, 11), seed=14)
    y = g.relu(g.conv("input", 8, 3))
    return g.build(head(g, concat(g, ["input", y])))


def misaligned():
    g = GraphBuilder("misaligned", (3, 10, 10), seed=13)
    return g.build(head(g, fire(g, "input", 6, 5, 7)))


def _qdq(model, tmp_path):
    """Quantize ``model`` with seeded calibration data; the QDQ model's path."""
    float_path, qdq_path = tmp_path / "float.onnx", tmp_path / "qdq.onnx"
    float_path.write_bytes(model.SerializeToString())
    quantize_model(float_path, calibration_data(model), qdq_path)
    return qdq_path


def compiled(builder, tmp_path):
    """``(float model, QDQ path, IR graph, program)`` of one test graph."""
    model = builder()
    qdq_path = _qdq(model, tmp_path)
    graph = load_model(qdq_path)
    return model, qdq_path, graph, loads(dumps(compile_graph(graph, CONFIG)), CONFIG)


def check_against_references(model, qdq_path, graph, program, samples=3):
    """ISS within one output step of ORT, bit-identical to the layer reference; returns the
    largest difference in steps."""
    (name,), (out,) = program.inputs, program.outputs
    entry_in, entry_out = program.tensor(name), program.tensor(out)
    session = reference_session(qdq_path)
    worst = 0.0
    for seed in range(samples):
        x = sample_input(model, seed=seed)
        expected = session.run(None, {session.get_inputs()[0].name: x})[0]
        got = run_program(program, CONFIG, {name: x}, cores=1 + seed % 3)[out]
        worst = max(worst, float(np.abs(got - expected).max() / entry_out.scale))
        q = quantize(x.reshape(entry_in.shape), entry_in.scale, entry_in.zero_point)
        ours = run_program_int(program, CONFIG, {name: q}, cores=2)[out]
        np.testing.assert_array_equal(ours, run_graph(graph, {name: q})[out])
    assert worst <= 1.0001, f"{worst:.2f} steps off ONNX Runtime"
    return worst


def part_offsets(program, concat):
    """Byte offsets of the parts of ``concat`` relative to it, by part name."""
    base = program.tensor(concat).offset
    return {t.name: t.offset - base for t in program.tensors if t.name != concat}


def test_fire_module_writes_expand_branches_in_place(tmp_path):
    model, path, graph, program = compiled(squeezenet_fire, tmp_path)
    ((concat, parts),) = graph.concats.items()
    assert len(parts) == 2 and all(graph.producer(p).kind == "conv" for p in parts)
    # No copy: the five convolutions, two poolings and the Gemm only.
    assert [layer.kind for layer in graph.layers].count("conv") == 5 and len(graph.layers) == 8
    # The 3x3 branch is quantized at its own scale in the QDQ graph: its convolution now
    # requantizes straight to the concatenation's.
    qdq = onnx.load(path)
    scales = {i.name: float(numpy_helper.to_array(i)) for i in qdq.graph.initializer
              if i.name.endswith("_scale") and numpy_helper.to_array(i).size == 1}
    own = {n.output[0]: scales[n.input[1]] for n in qdq.graph.node if n.op_type == "QuantizeLinear"}
    assert own[parts[1]] != graph.tensors[concat].scale == graph.tensors[parts[1]].scale
    offsets = part_offsets(program, concat)
    _, h, w = graph.tensors[concat].shape
    assert offsets[parts[0]] == 0 and offsets[parts[1]] == 16 * h * w
    check_against_references(model, path, graph, program)


def test_dense_block_copies_a_shared_input_at_the_concat_scale(tmp_path):
    model, path, graph, program = compiled(densenet_block, tmp_path)
    ((concat, parts),) = graph.concats.items()
    first = graph.producer(parts[0])
    assert first.kind == "pool" and first.kernel == (1, 1)       # the requantizing copy
    assert graph.producer(parts[1]).kind == "conv"
    check_against_references(model, path, graph, program)


def test_model_input_is_copied_into_its_part(tmp_path):
    model, path, graph, program = compiled(densenet_input, tmp_path)
    ((concat, parts),) = graph.concats.items()
    assert graph.producer(parts[0]).input == "input"
    check_against_references(model, path, graph, program)


def test_misaligned_parts_are_copied(tmp_path):
    """5 + 7 channels: the 3x3 branch would start inside a block, so both branches are
    widened by 1x1 convolutions and added, bit for bit the stacked parts."""
    model, path, graph, program = compiled(misaligned, tmp_path)
    ((concat, parts),) = graph.concats.items()
    kinds = {layer.name: layer.kind for layer in program.layers}
    assert kinds[f"{concat}_widen0"] == kinds[f"{concat}_widen1"] == "conv"
    assert kinds[f"{concat}_add1"] == "add"
    assert program.tensor(concat).offset not in [program.tensor(p).offset for p in parts]
    check_against_references(model, path, graph, program)


def test_memory_plan_refuses_a_misaligned_part_in_one_line(tmp_path):
    graph = load_model(_qdq(misaligned(), tmp_path))
    with pytest.raises(CompileError, match=r"starts at channel 5, not a multiple of the "
                                           r"core's 8-channel block") as info:
        plan_memory(graph, CONFIG)
    assert "\n" not in str(info.value)


def test_concat_on_another_axis_is_refused(tmp_path):
    g = GraphBuilder("concat_h", (8, 6, 6), seed=15)
    a = g.relu(g.conv("input", 8, 3))
    b = g.relu(g.conv("input", 8, 3))
    model = g.build(g.node("Concat", [a, b], (8, 12, 6), axis=2))
    with pytest.raises(UnsupportedError, match="on the channel axis"):
        load_model(_qdq(model, tmp_path))


def inception_block():
    """Four branches (1x1, 3x3, 3x3-3x3, max pool-1x1) concatenated, as in Inception."""
    g = GraphBuilder("inception", (8, 10, 10), seed=16)
    x = g.relu(g.conv("input", 16, 3))
    b1 = g.relu(g.conv(x, 8, 1, pads=(0, 0, 0, 0)))
    b2 = g.relu(g.conv(g.relu(g.conv(x, 8, 1, pads=(0, 0, 0, 0))), 16, 3))
    b3 = g.relu(g.conv(g.relu(g.conv(x, 8, 3)), 8, 3))
    b4 = g.relu(g.conv(g.maxpool(x, 3, 1, (1, 1, 1, 1)), 8, 1, pads=(0, 0, 0, 0)))
    return g.build(head(g, concat(g, [b1, b2, b3, b4])))


def densenet_two_layers():
    """x1 = [x0, conv(x0)], x2 = [x1, conv(x1)]: a concatenation inside another."""
    g = GraphBuilder("dense_two", (8, 8, 8), seed=17)
    x0 = g.relu(g.conv("input", 16, 3))
    x1 = concat(g, [x0, g.relu(g.conv(x0, 8, 3))])
    x2 = concat(g, [x1, g.relu(g.conv(x1, 8, 3))])
    return g.build(head(g, x2))


def test_inception_block_writes_four_branches_in_place(tmp_path):
    model, path, graph, program = compiled(inception_block, tmp_path)
    ((concat, parts),) = graph.concats.items()
    assert len(parts) == 4 and all(graph.producer(p).kind == "conv" for p in parts)
    _, h, w = graph.tensors[concat].shape
    offsets = part_offsets(program, concat)
    assert [offsets[p] for p in parts] == [0, 8 * h * w, 24 * h * w, 32 * h * w]
    check_against_references(model, path, graph, program)


def test_two_layer_dense_block(tmp_path):
    model, path, graph, program = compiled(densenet_two_layers, tmp_path)
    assert len(graph.concats) == 2
    check_against_references(model, path, graph, program)
