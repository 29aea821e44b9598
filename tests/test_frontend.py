"""ONNX front end: QDQ models -> IR, checked against onnxruntime running the same QDQ model.

The criterion is the project's: every output element of the layer reference
(:func:`vdla.sim.reference.run_graph`) dequantized within one output quantization step of
onnxruntime with graph optimizations disabled (:mod:`vdla.sim.onnx_reference`; its optimized
int8 kernels depend on the CPU and decide nothing here). onnxruntime computes each layer in
float (DequantizeLinear, float op,
QuantizeLinear) while the IR requantizes with a 16-bit integer multiplier, so an element near
a rounding boundary can land one step apart; deep networks may propagate such differences,
which is why they are also checked layer by layer (each layer fed onnxruntime's own inputs).
"""

import importlib.util
import pathlib
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from vdla.compiler import ir, zoo
from vdla.compiler.errors import CompileError, DeadChannelWarning, UnsupportedError
from vdla.compiler.frontend import load_model
from vdla.compiler.quantize import quantize_model
from vdla.sim.onnx_reference import reference_session
from vdla.sim.reference import run_graph, run_layer

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import graphs  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOLERANCE = 1.0001          # in output quantization steps


# -- helpers -------------------------------------------------------------------------------------
def quantize_input(x, tensor):
    """Float model input -> the int8 IR input, as onnxruntime's QuantizeLinear does it."""
    q = np.rint(np.asarray(x, np.float32) / np.float32(tensor.scale)) + tensor.zero_point
    return np.clip(q, -128, 127).astype(np.int8).reshape(tensor.shape)


def dequantize(q, tensor):
    return (q.astype(np.float64) - tensor.zero_point) * tensor.scale


def output_steps(model, graph, x):
    """Max |vdla - onnxruntime| per output, in output steps."""
    inp = graph.tensors[graph.inputs[0]]
    ours = run_graph(graph, {inp.name: quantize_input(x, inp)})
    steps = {}
    results = reference_session(model).run(None, {inp.name: x})
    for name, ref in zip(graph.outputs, results):
        out = graph.tensors[name]
        assert tuple(ref.shape) == tuple(out.onnx_shape)
        steps[name] = float((np.abs(dequantize(ours[name], out).reshape(ref.shape) - ref)
                             / out.scale).max())
    return steps


def check_end_to_end(model, graph=None, seeds=(0, 1)):
    """Every output within one step of onnxruntime's, on a few seeded inputs."""
    graph = graph or load_model(model)
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    worst = {}
    for seed in seeds:
        x = graphs.sample_input(proto, seed)
        for key, steps in output_steps(model, graph, x).items():
            worst[key] = max(worst.get(key, 0.0), steps)
    assert all(v <= TOLERANCE for v in worst.values()), worst
    return graph


def check_layerwise(model, graph=None):
    """Every layer, fed onnxruntime's int8 inputs, within one step of onnxruntime's output."""
    graph = graph or load_model(model)
    proto = onnx.load(str(model)) if not isinstance(model, onnx.ModelProto) else model
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    declared = {o.name for o in proto.graph.output}
    for name in graph.tensors:
        if name not in declared and name not in graph.inputs:
            proto.graph.output.append(helper.make_tensor_value_info(name, TensorProto.INT8, None))
    inp = graph.tensors[graph.inputs[0]]
    x = graphs.sample_input(proto)
    values = {inp.name: quantize_input(x, inp)}
    for value, y in zip(proto.graph.output, reference_session(proto).run(None, {inp.name: x})):
        t = graph.tensors[value.name]
        if y.dtype != np.int8:
            y = np.clip(np.rint(y / np.float32(t.scale)) + t.zero_point, -128, 127)
        values[value.name] = np.asarray(y, np.int8).reshape(t.shape)
    for layer in graph.layers:
        diff = np.abs(run_layer(layer, values).astype(int) - values[layer.output].astype(int))
        assert diff.max() <= 1, (layer.name, int(diff.max()))
    return graph


@pytest.fixture(scope="module")
def qdq_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("qdq")


_CACHE = {}


def qdq(name, directory, preprocess=True):
    key = (name, preprocess)
    if key not in _CACHE:
        sub = directory / ("pre" if preprocess else "raw")
        sub.mkdir(exist_ok=True)
        _CACHE[key] = graphs.quantized(name, sub, preprocess=preprocess)
    return _CACHE[key]


def kinds(graph):
    return [layer.kind for layer in graph.layers]


# -- every test graph --------------------------------------------------------------------------
def test_enough_graphs():
    assert len(graphs.GRAPHS) >= 14


@pytest.mark.parametrize("name", sorted(graphs.GRAPHS))
def test_graph_matches_onnxruntime(name, qdq_dir):
    path = qdq(name, qdq_dir)
    graph = check_end_to_end(path)
    graph.validate()
    assert graph.inputs == ["input"] and graph.outputs == ["output"]
    check_layerwise(path, graph)


@pytest.mark.parametrize("name", sorted(graphs.GRAPHS))
def test_graph_without_preprocessing(name, qdq_dir):
    # Without quant_pre_process, BatchNormalization and MatMul+Add stay separate quantized
    # operators: standalone per-channel layers that must match layer by layer.
    check_layerwise(qdq(name, qdq_dir, preprocess=False))


# -- IR structure --------------------------------------------------------------------------------
def test_conv_lowering(qdq_dir):
    path = qdq("conv3_odd", qdq_dir)
    graph = load_model(path)
    (conv,) = graph.layers
    x, y = graph.tensors["input"], graph.tensors["output"]
    assert x.shape == (3, 13, 11) and x.onnx_shape == (1, 3, 13, 11)
    assert y.shape == (5, 13, 11) and y.onnx_shape == (1, 5, 13, 11)
    assert conv.weight.dtype == np.int8 and conv.weight.shape == (5, 3, 3, 3)
    assert conv.pads == (1, 1, 1, 1) and conv.stride == 1 and conv.pad_value == x.zero_point
    # ReLU was dropped by the quantizer: the output range starts at real 0 anyway.
    assert conv.requant.zp_out == y.zero_point == -128
    # bias = ORT int32 bias - zp_x * sum(w)
    proto = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    bias_q = next(v for k, v in inits.items() if v.dtype == np.int32)
    expected = bias_q - x.zero_point * conv.weight.astype(np.int64).reshape(5, -1).sum(1)
    assert np.array_equal(conv.requant.bias, expected)
    assert np.all((conv.requant.mult_a >= 1 << 15) & (conv.requant.mult_a < 1 << 16))


def test_same_upper_padding(qdq_dir):
    (conv,) = load_model(qdq("conv7_same_upper", qdq_dir)).layers
    # 17 -> 9 needs 6 rows of padding (3 + 3); 16 -> 8 needs 5 columns (2 left, 3 right).
    assert conv.pads == (3, 2, 3, 3) and conv.stride == 2


def test_pool_lowering(qdq_dir):
    graph = load_model(qdq("maxpool_pad", qdq_dir))
    pool = graph.layers[1]
    x = graph.tensors[pool.input]
    assert pool.mode == "max" and pool.pad_value == -128 and pool.pads == (1, 1, 1, 1)
    assert np.all(pool.requant.bias == -x.zero_point)
    graph = load_model(qdq("avgpool", qdq_dir))
    avg = graph.layers[2]
    x = graph.tensors[avg.input]
    assert avg.mode == "avg" and avg.kernel == (3, 3) and avg.pad_value == x.zero_point
    assert np.all(avg.requant.bias == -9 * x.zero_point)


def test_gap_and_flatten_output(qdq_dir):
    graph = load_model(qdq("gap_output", qdq_dir))
    assert kinds(graph) == ["conv", "pool"]
    gap = graph.layers[1]
    assert gap.kernel == (7, 9) and gap.stride == 1
    out = graph.tensors["output"]
    assert out.shape == (20, 1, 1) and out.onnx_shape == (1, 20)


def test_gemm_reads_spatial_tensor(qdq_dir):
    graph = load_model(qdq("gemm_flatten", qdq_dir))
    conv, dense = graph.layers
    assert dense.input == conv.output and graph.tensors[conv.output].shape == (12, 3, 3)
    assert dense.weight.shape == (10, 108)
    assert graph.tensors["output"].onnx_shape == (1, 10)


def test_matmul_add_is_dense(qdq_dir):
    graph = load_model(qdq("matmul_add", qdq_dir))
    assert kinds(graph) == ["dense", "dense"]
    assert graph.tensors["input"].shape == (20, 1, 1)
    assert graph.tensors["input"].onnx_shape == (1, 20)


def test_add_common_shift(qdq_dir):
    graph = load_model(qdq("residual_add", qdq_dir))
    add = graph.layers[-1]
    assert add.kind == "add"
    a, b, y = (graph.tensors[n] for n in (add.a, add.b, add.output))
    assert a.scale != b.scale
    rq = add.requant
    big = np.maximum(rq.mult_a, rq.mult_b)
    assert np.all((big >= 1 << 15) & (big < 1 << 16))
    assert rq.zp_a == a.zero_point and rq.zp_b == b.zero_point and np.all(rq.bias == 0)
    np.testing.assert_allclose(rq.mult_a / 2.0 ** rq.shift, a.scale / y.scale, rtol=1e-4)
    assert rq.lo == y.zero_point        # the ReLU after the Add


def test_standalone_relu_is_pool_1x1(qdq_dir):
    graph = load_model(qdq("relu_requant", qdq_dir))
    assert kinds(graph) == ["conv", "pool", "add"]
    relu = graph.layers[1]
    assert relu.kernel == (1, 1) and relu.stride == 1 and relu.requant.lo == relu.requant.zp_out


def test_clip_ranges(qdq_dir):
    graph = load_model(qdq("clip_range", qdq_dir))
    for layer, (low, high) in zip(graph.layers, ((-1.0, 1.5), (0.0, 6.0))):
        y = graph.tensors[layer.output]
        assert layer.requant.lo >= round(low / y.scale) + y.zero_point - 1
        assert layer.requant.hi <= round(high / y.scale) + y.zero_point + 1


def test_depthwise(qdq_dir):
    graph = load_model(qdq("depthwise", qdq_dir))
    assert [layer.groups for layer in graph.layers] == [12, 12, 1]
    assert graph.layers[1].weight.shape == (12, 1, 5, 5)


def test_symbolic_batch(tmp_path):
    g = zoo.GraphBuilder("sym", (3, 7, 6), seed=3, batch="N")
    model = g.build(g.relu(g.conv("input", 5, 3)))
    path = tmp_path / "sym_qdq.onnx"
    quantize_model(model, graphs.calibration_data(model), path)
    graph = load_model(path)
    assert graph.tensors["input"].onnx_shape == (1, 3, 7, 6)
    check_end_to_end(path, graph)


def test_uint8_activations(tmp_path):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    model = graphs.build("mini_cnn")
    src, dst = tmp_path / "f.onnx", tmp_path / "u8.onnx"
    onnx.save(model, src)
    samples = iter([{"input": s[None]} for s in graphs.calibration_data(model)])

    class Reader:
        def get_next(self):
            return next(samples, None)
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    check_end_to_end(dst)


# -- BatchNormalization folding --------------------------------------------------------------------
def test_bn_folded_by_preprocessing(qdq_dir):
    graph = load_model(qdq("bn_fold", qdq_dir))
    assert kinds(graph) == ["conv", "conv"]


def test_bn_standalone_without_preprocessing(qdq_dir):
    graph = load_model(qdq("bn_fold", qdq_dir, preprocess=False))
    # conv -> BN (depthwise 1x1 carrying the per-channel affine map) -> conv -> BN
    assert kinds(graph) == ["conv", "conv", "conv", "conv"]
    assert [layer.groups for layer in graph.layers] == [1, 12, 1, 5]
    check_end_to_end(qdq("bn_fold", qdq_dir, preprocess=False), graph)


def test_bn_in_float_folds_into_conv():
    h = graphs.HandQDQ((3, 9, 8))
    w = h.weight("c", h.rng.normal(0, 0.3, (6, 3, 3, 3)))
    y = h.node("Conv", [h.x, w], "conv", pads=[1, 1, 1, 1])
    gamma = np.array([1.2, -0.8, 0.0, 0.5, -1.5, 1.0], np.float32)
    bn = [h.const(n, np.asarray(v, np.float32)) for n, v in
          (("gamma", gamma), ("beta", h.rng.normal(0, 0.2, 6)), ("mean", h.rng.normal(0, 0.1, 6)),
           ("var", h.rng.uniform(0.5, 1.5, 6)))]
    y = h.node("Relu", [h.node("BatchNormalization", [y] + bn, "bn")], "relu")
    model = h.model(y, 0.02, -128, (6, 9, 8))
    with pytest.warns(DeadChannelWarning, match=r"'conv' \(Conv\): output channel 2 \(of 6\)"):
        graph = load_model(model)
    (conv,) = graph.layers
    assert conv.kind == "conv"
    assert np.all(conv.weight[2] == 0)                       # gamma 0: constant channel
    q = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "c_wq"))
    assert np.array_equal(conv.weight[1], np.clip(-q[1].astype(int), -128, 127))
    check_end_to_end(model, graph)


def test_matmul_add_in_float_is_one_dense():
    h = graphs.HandQDQ((20,))
    w = h.weight("m", h.rng.normal(0, 0.3, (20, 7)), axis=1)
    y = h.node("MatMul", [h.x, w], "mm")
    y = h.node("Add", [y, h.const("bias", h.rng.normal(0, 0.3, 7).astype(np.float32))], "badd")
    model = h.model(y, 0.03, 0, (7,))
    graph = load_model(model)
    assert kinds(graph) == ["dense"]
    check_end_to_end(model, graph)


def test_scale_change_and_affine_layers():
    h = graphs.HandQDQ((4, 5, 6))
    requant = h.dq(h.q(h.x, 0.07, -5))                          # bare scale change
    scaled = h.node("Mul", [requant, h.const("k", np.array([1.5, -0.5, 2.0, 0.25], np.float32)
                                              .reshape(4, 1, 1))], "mul")
    shifted = h.node("Sub", [scaled, h.const("o", np.float32(0.3))], "sub")
    model = h.model(shifted, 0.05, 2, (4, 5, 6))
    graph = load_model(model)
    assert kinds(graph) == ["pool", "conv"]
    assert graph.layers[0].kernel == (1, 1) and graph.layers[1].groups == 4
    assert list(graph.layers[1].weight.reshape(-1)) == [127, -127, 127, 127]
    check_end_to_end(model, graph)


def test_output_is_model_input():
    h = graphs.HandQDQ((2, 3, 3))
    model = h.model(h.x, 0.04, 3, (2, 3, 3))
    graph = load_model(model)
    assert graph.inputs == ["input"] and graph.outputs == ["output"]
    assert kinds(graph) == ["pool"]
    check_end_to_end(model, graph)


def test_requant_overflow_names_node():
    h = graphs.HandQDQ((3, 5, 5))
    y = h.node("Conv", [h.x, h.weight("c", h.rng.normal(0, 1, (2, 3, 3, 3)))], "huge")
    model = h.model(y, 1e-9, 0, (2, 3, 3))
    with pytest.raises(CompileError, match=r"^node 'huge' \(Conv\): requantization scale .* "
                                           r"is too large"):
        load_model(model)


# -- what is not supported -----------------------------------------------------------------------
def _quantized_float(tmp_path, build):
    g = zoo.GraphBuilder("case", (4, 8, 8), seed=5)
    model = g.build(build(g))
    path = tmp_path / "case_qdq.onnx"
    quantize_model(model, graphs.calibration_data(model, count=2), path)
    return path


UNSUPPORTED = {
    # Dilation is supported (a zero-expanded kernel); its padding is still bounded.
    "dilation_pad16": (lambda g: g.conv("input", 4, 3, dilation=9, pads=(16, 16, 16, 16)),
                       "node 'conv_0' (Conv): pads (16, 16, 16, 16) are not supported (top "
                       "and left at most 15)"),
    "stride3": (lambda g: g.conv("input", 4, 3, stride=3),
                "node 'conv_0' (Conv): strides=[3, 3] are not supported (each in [1, 2] "
                "only)"),
    "pad16": (lambda g: g.conv("input", 4, 33, pads=(16, 16, 16, 16)),
              "node 'conv_0' (Conv): pads (16, 16, 16, 16) are not supported (top and left "
              "at most 15)"),
    "group2": (lambda g: g.conv("input", 6, 3, groups=2),
               "node 'conv_0' (Conv): group=2 is not supported (1, or depthwise with group == "
               "input channels == output channels)"),
    "avg_exclude_pad": (lambda g: g.avgpool(g.conv("input", 4, 3), 3, 1, (1, 1, 1, 1)),
                        "node 'averagepool_0' (AveragePool): count_include_pad=0 with nonzero "
                        "pads is not supported"),
    "ceil_mode": (lambda g: g.avgpool(g.conv("input", 4, 3), 3, 2, (0, 0, 0, 0), ceil_mode=1,
                                      count_include_pad=1),
                  "node 'averagepool_0' (AveragePool): ceil_mode=1 changes the output size; "
                  "not supported for AveragePool (its divisor leaves out the positions past "
                  "the padded input, the hardware's does not)"),
    # Between two layers; the same reshape as the model's last operator is the host's
    # (tests/test_host_io.py).
    "reshape": (lambda g: g.conv(g.reshape(g.conv("input", 4, 3), (1, 4, 4, 16)), 4, 3),
                "node 'reshape_0' (Reshape): reshape of (1, 4, 8, 8) to (1, 4, 4, 16) is not "
                "supported (only flattening to (1, N))"),
}


@pytest.mark.parametrize("case", sorted(UNSUPPORTED))
def test_unsupported_message(case, tmp_path):
    build, message = UNSUPPORTED[case]
    with pytest.raises(UnsupportedError) as info:
        load_model(_quantized_float(tmp_path, build))
    assert str(info.value) == message


def test_ceil_mode_without_effect_is_accepted(tmp_path):
    # 9 -> 4 with kernel 3, stride 2: ceil and floor agree.
    g = zoo.GraphBuilder("ceil", (3, 9, 9), seed=2)
    model = g.build(g.maxpool(g.relu(g.conv("input", 4, 3)), 3, 2, (0, 0, 0, 0), ceil_mode=1))
    path = tmp_path / "ceil_qdq.onnx"
    quantize_model(model, graphs.calibration_data(model), path)
    check_end_to_end(path)


def test_unsupported_operator_lstm():
    h = graphs.HandQDQ((5, 3))
    w = h.const("W", np.zeros((1, 16, 3), np.float32))
    r = h.const("R", np.zeros((1, 16, 4), np.float32))
    h.nodes.append(helper.make_node("LSTM", [h.x, w, r], ["lstm_y"], name="lstm",
                                    hidden_size=4))
    y = h.node("Reshape", ["lstm_y", h.const("shp", np.array([1, 20], np.int64))], "flat")
    model = h.model(y, 0.01, 0, (20,))
    with pytest.raises(UnsupportedError) as info:
        load_model(model)
    assert str(info.value) == "node 'lstm' (LSTM): operator LSTM is not supported"


def test_qoperator_format_is_refused(tmp_path):
    from onnxruntime.quantization import QuantFormat, quantize_static
    model = graphs.build("conv3_odd")
    src, dst = tmp_path / "f.onnx", tmp_path / "qop.onnx"
    onnx.save(model, src)
    samples = iter([{"input": s[None]} for s in graphs.calibration_data(model)])

    class Reader:
        def get_next(self):
            return next(samples, None)
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QOperator)
    with pytest.raises(UnsupportedError) as info:
        load_model(dst)
    assert info.value.op_type == "QLinearConv"
    assert str(info.value).endswith("(QLinearConv): operator QLinearConv is not supported")


def test_float_model_is_refused():
    with pytest.raises(CompileError, match="^the model has no QuantizeLinear: it is not an int8 "
                                           "QDQ model; quantize it first"):
        load_model(graphs.build("conv3_odd"))


def test_unreadable_model(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not protobuf")
    for path in (bad, tmp_path / "missing.onnx"):
        with pytest.raises(CompileError) as info:
            load_model(path)
        assert str(info.value).startswith("cannot read ONNX model") and "\n" not in str(info.value)


def test_quantize_errors(tmp_path):
    model = graphs.build("conv3_odd")
    with pytest.raises(CompileError, match=r"calibration data of shape \(4, 3, 11, 13\) does "
                                           r"not match input 'input'"):
        quantize_model(model, np.zeros((4, 3, 11, 13), np.float32), tmp_path / "x.onnx")
    with pytest.raises(CompileError, match="^cannot read ONNX model"):
        quantize_model(tmp_path / "missing.onnx", np.zeros((1, 3, 13, 11)), tmp_path / "y.onnx")


def test_quantize_accepts_batched_calibration(tmp_path):
    model = graphs.build("conv3_odd")
    calib = graphs.calibration_data(model)[:, None]          # (N, 1, C, H, W)
    out = quantize_model(model, calib, tmp_path / "b.onnx")
    assert kinds(load_model(out)) == ["conv"]


# -- model generators and the example model ----------------------------------------------------
@pytest.mark.parametrize("make", [zoo.resnet18, zoo.resnet50, zoo.vgg16, zoo.mobilenetv2])
def test_zoo_models_are_valid(make):
    model = make(size=32)
    onnx.checker.check_model(model)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert model.graph.input[0].name == "input" and dims == [1, 3, 32, 32]
    assert model.graph.output[0].name == "output"
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [1, 1000]


def test_zoo_mobilenet_through_front_end(tmp_path):
    model = zoo.mobilenetv2(size=32, classes=10)
    path = tmp_path / "mnv2.onnx"
    quantize_model(model, graphs.calibration_data(model, count=2), path)
    graph = check_layerwise(path)
    assert sum(1 for layer in graph.layers if getattr(layer, "groups", 1) > 1) == 17
    assert kinds(graph).count("add") == 10 and kinds(graph)[-2:] == ["pool", "dense"]


def _digits_data():
    spec = importlib.util.spec_from_file_location("digits_data", ROOT / "models/digits/data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_digits_model():
    path = ROOT / "models/digits/digits_qdq.onnx"
    graph = load_model(path)
    assert kinds(graph) == ["conv", "conv", "conv", "pool", "dense"]
    x, labels = _digits_data().held_out()
    assert x.shape == (360, 1, 8, 8)
    inp, out = graph.tensors["input"], graph.tensors["output"]
    session = reference_session(path)
    hits = agree = 0
    for image, label in zip(x, labels):
        ours = dequantize(run_graph(graph, {"input": quantize_input(image, inp)})["output"], out)
        ref = session.run(None, {"input": image[None]})[0].reshape(-1)
        assert np.abs(ours.reshape(-1) - ref).max() <= TOLERANCE * out.scale
        hits += int(ours.argmax() == label)
        agree += int(ours.argmax() == ref.argmax())
    assert hits / len(labels) > 0.95 and agree / len(labels) >= 0.99


def test_no_torch_import():
    assert "torch" not in sys.modules
    assert isinstance(load_model(ROOT / "models/digits/digits_qdq.onnx"), ir.Graph)
    assert "torch" not in sys.modules


def test_per_tensor_weights(tmp_path):
    model = graphs.build("mini_cnn")
    path = tmp_path / "pt.onnx"
    quantize_model(model, graphs.calibration_data(model), path, per_channel=False)
    check_end_to_end(path)


def test_identity_and_dropout_pass_through(qdq_dir):
    for preprocess in (True, False):
        graph = load_model(qdq("gemm_chain", qdq_dir, preprocess))
        assert kinds(graph) == ["conv", "dense", "dense"]
