"""Float work at a model's edges done by the host: input relayout and output tails.

Exported models take an NHWC input (a Transpose before the first QuantizeLinear) and end in a
Softmax; an MLP on raw pixels flattens its float input. The front end records that work as
host steps (:mod:`vdla.compiler.onnx_host`, :mod:`vdla.compiler.host_steps`), the IFP carries
them (format version 2) and every host path applies them (:func:`vdla.sim.host.quantize_input`
and :func:`~vdla.sim.host.dequantize_output`).

The outside reference is ONNX Runtime with graph optimizations disabled
(:mod:`vdla.sim.onnx_reference`): accelerator tensors stay within one output quantization step
of it. A Softmax output is compared as floats, within the bound that the one-step logits imply
(:func:`softmax_bound`).
"""

import asyncio
import json
import pathlib
import struct
import sys
import zlib

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from vdla import cli
from vdla.compiler import host_steps, ifp, zoo
from vdla.compiler.errors import CompileError, IFPError, UnsupportedError
from vdla.compiler.frontend import load_model
from vdla.compiler.quantize import quantize_model
from vdla.compiler.static import compile_graph
from vdla.config import get_config
from vdla.sim.host import (dequantize, quantize, quantize_input, quantize_inputs, run_program,
                           run_program_int)
from vdla.sim.onnx_reference import reference_session, run_batch
from vdla.sim.reference import run_graph

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import graphs  # noqa: E402

CONFIG = get_config("small")
ONE_STEP = 1.0001           # one output quantization step, with float slack
NHWC = (0, 3, 1, 2)


# -- models --------------------------------------------------------------------------------------
def nhwc_softmax_model():
    """NHWC input -> Transpose -> Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm ->
    Softmax, as tf2onnx / TFLite exports are."""
    g = zoo.GraphBuilder("nhwc_softmax", (9, 11, 3), seed=21)
    x = g.node("Transpose", ["input"], (3, 9, 11), perm=list(NHWC))
    x = g.relu(g.conv(x, 12, 3))
    x = g.gemm(g.flatten(g.global_avgpool(x)), 10)
    return g.build(g.node("Softmax", [x], (10,), axis=-1))


def mlp_pixels_model():
    """An MLP on raw pixels: Flatten of the float input -> Gemm -> Relu -> Gemm."""
    g = zoo.GraphBuilder("mlp_pixels", (1, 8, 8), seed=22)
    x = g.relu(g.gemm(g.flatten("input"), 32))
    return g.build(g.gemm(x, 10))


def nchw_to_nhwc_output_model():
    """A convolution whose output is transposed back to NHWC at the end."""
    g = zoo.GraphBuilder("nhwc_out", (3, 7, 6), seed=23)
    x = g.relu(g.conv("input", 5, 3))
    return g.build(g.node("Transpose", [x], (7, 6, 5), perm=[0, 2, 3, 1]))


def final_reshape_model():
    """A final reshape the accelerator cannot express as a view of its tensor."""
    g = zoo.GraphBuilder("final_reshape", (4, 8, 8), seed=5)
    return g.build(g.reshape(g.conv("input", 4, 3), (1, 4, 64)))


def quantized_path(model, directory):
    """Quantize ``model`` with ONNX Runtime (seeded calibration data) into ``directory``."""
    path = directory / f"{model.graph.name}_qdq.onnx"
    quantize_model(model, graphs.calibration_data(model), path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """QDQ paths of the models above, each quantized once by ONNX Runtime."""
    directory = tmp_path_factory.mktemp("host_io")
    cache = {}

    def get(build):
        if build not in cache:
            cache[build] = quantized_path(build(), directory)
        return cache[build]
    return get


def compiled(path):
    """The IR graph and the program of ``path``, the program through an IFP round trip."""
    graph = load_model(path)
    return graph, ifp.loads(ifp.dumps(compile_graph(graph, CONFIG)), CONFIG)


def with_output(model, name):
    """The model (a path or a ModelProto) with the float tensor ``name`` as an extra (second)
    graph output."""
    model = onnx.load(str(model)) if not isinstance(model, onnx.ModelProto) else \
        onnx.ModelProto.FromString(model.SerializeToString())
    model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return model


def steps_off(ours, reference, scale):
    return float(np.abs(np.asarray(ours, np.float64) - reference).max() / scale)


# -- the softmax bound ---------------------------------------------------------------------------
def softmax_bound(logit_scale, out_scale=None):
    """Largest difference between two Softmax outputs whose logits are each within one logit
    step of the other's, after the graph's QuantizeLinear of step ``out_scale`` if any.

    Along the segment between the two logit vectors ``z`` and ``z + d`` (``|d_j| <= s``),
    ``dp_i/dt = p_i (d_i - sum_j p_j d_j)``, and ``|d_i - sum_j p_j d_j| <= 2 (1 - p_i) s``,
    so ``|dp_i/dt| <= 2 p_i (1 - p_i) s <= s / 2``: the probabilities differ by at most
    ``s / 2``. Rounding two reals at most ``e`` apart to a grid of step ``q`` gives grid points
    at most ``e + q`` apart. A little float32 slack on top.
    """
    return logit_scale / 2 + (out_scale or 0.0) + 1e-6


# -- (i) NHWC input, Softmax tail ----------------------------------------------------------------
def test_nhwc_softmax_records_host_steps(models):
    graph = load_model(models(nhwc_softmax_model))
    x, y = graph.tensors["input"], graph.tensors["output"]
    assert [layer.kind for layer in graph.layers] == ["conv", "pool", "dense"]
    assert x.onnx_shape == (1, 9, 11, 3) and x.shape == (3, 9, 11)
    assert x.host == (host_steps.transpose(NHWC),)
    assert y.onnx_shape == (1, 10) and y.shape == (10, 1, 1)
    ops = [step["op"] for step in y.host]
    assert ops == ["reshape", "softmax", "quantize"]
    assert y.host[1]["axis"] == 1
    # The graph's QuantizeLinear after the Softmax (ORT's fixed softmax range).
    assert y.host[2]["zero_point"] == -128 and y.host[2]["scale"] == pytest.approx(1 / 255)


def test_nhwc_input_is_transposed_once_on_the_host(models):
    _, program = compiled(models(nhwc_softmax_model))
    entry = program.tensor("input")
    x = graphs.sample_input(nhwc_softmax_model())[0]
    expected = quantize(x.transpose(2, 0, 1), entry.scale, entry.zero_point)
    np.testing.assert_array_equal(quantize_input(entry, x[None]), expected)
    np.testing.assert_array_equal(quantize_inputs(program, {"input": x})["input"], expected)


def test_nhwc_softmax_on_iss_matches_onnxruntime(models):
    path = models(nhwc_softmax_model)
    graph, program = compiled(path)
    softmax = next(n for n in onnx.load(str(path)).graph.node if n.op_type == "Softmax")
    session = reference_session(with_output(path, softmax.input[0]))
    out = program.tensor("output")
    bound = softmax_bound(out.scale, out.host[2]["scale"])
    for seed, cores in ((0, 1), (1, 3), (2, 2)):
        x = graphs.sample_input(nhwc_softmax_model(), seed=seed)
        probs_ref, logits_ref = session.run(None, {"input": x})
        # The accelerator's logits: bit-exact to the layer reference, one step from ORT.
        q = quantize_inputs(program, {"input": x})
        logits = run_program_int(program, CONFIG, q, cores=cores)["output"]
        np.testing.assert_array_equal(logits, run_graph(graph, q)["output"])
        assert steps_off(dequantize(logits, out.scale, out.zero_point).reshape(1, 10),
                         logits_ref, out.scale) <= ONE_STEP
        probs = run_program(program, CONFIG, {"input": x}, cores=cores)["output"]
        assert probs.shape == probs_ref.shape == (1, 10)
        assert np.abs(probs - probs_ref).max() <= bound, (seed, np.abs(probs - probs_ref).max())


# -- (ii) MLP on raw pixels ----------------------------------------------------------------------
def test_mlp_on_raw_pixels_matches_onnxruntime(models):
    path = models(mlp_pixels_model)
    graph, program = compiled(path)
    entry, out = program.tensor("input"), program.tensor("output")
    assert entry.onnx_shape == (1, 1, 8, 8) and entry.shape == (64, 1, 1)
    assert entry.host == (host_steps.reshape((1, 64)),) and out.host == ()
    assert [layer.kind for layer in graph.layers] == ["dense", "dense"]
    session = reference_session(path)
    for seed, cores in ((0, 1), (1, 2)):
        x = graphs.sample_input(mlp_pixels_model(), seed=seed)
        got = run_program(program, CONFIG, {"input": x}, cores=cores)["output"]
        assert steps_off(got, session.run(None, {"input": x})[0], out.scale) <= ONE_STEP


# -- other relayouts and tails -------------------------------------------------------------------
def _hand_nhwc_pair():
    """input -> Q -> DQ -> Transpose -> Q -> DQ -> Conv (a Q/DQ pair around the Transpose),
    with different parameters on either side so that the first pair's rounding matters."""
    h = graphs.HandQDQ((6, 5, 3), scale=0.03, zero_point=2)
    t = h.node("Transpose", [h.x], "tr", perm=list(NHWC))
    x = h.dq(h.q(t, 0.05, -1))
    w = h.weight("c", h.rng.normal(0, 0.3, (4, 3, 3, 3)))
    y = h.node("Conv", [x, w], "conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    return h.model(y, 0.1, 0, (4, 6, 5))


def test_transpose_between_qdq_pairs_is_a_host_relayout():
    model = _hand_nhwc_pair()
    graph, program = compiled(model)
    entry = program.tensor("input")
    assert entry.onnx_shape == (1, 6, 5, 3)
    assert entry.host == (host_steps.quantize(np.float32(0.03), 2), host_steps.transpose(NHWC))
    assert (entry.scale, entry.zero_point) == (pytest.approx(0.05), -1)
    assert [layer.kind for layer in graph.layers] == ["conv"]
    session = reference_session(model)
    for seed in (0, 1):
        x = graphs.sample_input(model, seed=seed)
        got = run_program(program, CONFIG, {"input": x})["output"]
        assert steps_off(got, session.run(None, {"input": x})[0], 0.1) <= ONE_STEP


@pytest.mark.parametrize("build, steps", [
    (nchw_to_nhwc_output_model, ["reshape", "transpose", "quantize"]),
    (final_reshape_model, ["reshape", "reshape", "quantize"]),
])
def test_final_transpose_and_reshape_run_on_the_host(build, steps, models):
    path = models(build)
    _, program = compiled(path)
    out = program.tensor("output")
    assert [step["op"] for step in out.host] == steps
    session = reference_session(path)
    x = graphs.sample_input(build())
    got = run_program(program, CONFIG, {"input": x})["output"]
    expected = session.run(None, {"input": x})[0]
    assert got.shape == expected.shape == out.onnx_shape
    assert steps_off(got, expected, out.scale) <= ONE_STEP


def _opset11_softmax():
    """Gemm -> Reshape (1, 2, 5) -> Softmax(axis=1) at opset 11: one softmax over all ten
    values (before opset 13, Softmax normalizes the input flattened to 2-D at ``axis``)."""
    rng = np.random.default_rng(3)
    w = rng.integers(-90, 90, (10, 6)).astype(np.int8)
    inits = [numpy_helper.from_array(np.float32(s), n) for n, s in
             (("xs", 0.03), ("ys", 0.08), ("ws", 0.01))]
    inits += [numpy_helper.from_array(np.int8(z), n) for n, z in (("xz", 1), ("yz", -3),
                                                                   ("wz", 0))]
    inits += [numpy_helper.from_array(w, "wq"),
              numpy_helper.from_array(np.array([1, 2, 5], np.int64), "shape")]
    nodes = [helper.make_node("QuantizeLinear", ["input", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["x"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"]),
             helper.make_node("Gemm", ["x", "w"], ["g"], name="fc", transB=1),
             helper.make_node("QuantizeLinear", ["g", "ys", "yz"], ["gq"]),
             helper.make_node("DequantizeLinear", ["gq", "ys", "yz"], ["logits"]),
             helper.make_node("Reshape", ["logits", "shape"], ["r"], name="reshape"),
             helper.make_node("Softmax", ["r"], ["output"], name="softmax", axis=1)]
    graph = helper.make_graph(
        nodes, "opset11",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 6])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def test_softmax_before_opset13_normalizes_the_flattened_rows():
    model = _opset11_softmax()
    _, program = compiled(model)
    out = program.tensor("output")
    assert [step["op"] for step in out.host] == ["reshape", "reshape", "reshape", "softmax",
                                                 "reshape"]
    session = reference_session(with_output(model, "logits"))
    x = graphs.sample_input(model, seed=4)
    probs_ref, logits_ref = session.run(None, {"input": x})
    got = run_program(program, CONFIG, {"input": x})["output"]
    assert got.shape == (1, 2, 5) and got.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.abs(got - probs_ref).max() <= softmax_bound(out.scale)


def test_driver_path_applies_the_host_steps(models):
    from vdla.sim.board_host import run_program_on_bus
    from vdla.sim.bus import IssBus
    _, program = compiled(models(nhwc_softmax_model))
    samples = [{"input": x[None]} for x in graphs.sample_input(nhwc_softmax_model(), count=2)]
    bus = IssBus(CONFIG, 1 << 16)
    results = asyncio.run(run_program_on_bus(program, CONFIG, samples, bus))
    for sample, result in zip(samples, results):
        np.testing.assert_array_equal(result["output"],
                                      run_program(program, CONFIG, sample)["output"])


def test_scenario_inputs_get_the_host_relayout(models, tmp_path):
    from vdla.sim.scenario_file import load_scenario
    path = models(nhwc_softmax_model)
    x = graphs.sample_input(nhwc_softmax_model(), count=2)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "s.toml").write_text(f'[[tenant]]\nname = "nhwc"\nmodel = "{path.as_posix()}"\n'
                                     f'cores = 1\ninferences = 2\ninputs = "x.npy"\n')
    spec = load_scenario(tmp_path / "s.toml").tenants[0]
    entry = spec.program.tensor("input")
    for sample, expected in zip(spec.samples, x):
        np.testing.assert_array_equal(sample["input"],
                                      quantize(expected.transpose(2, 0, 1), entry.scale,
                                               entry.zero_point))


# -- refusals stay one line ----------------------------------------------------------------------
def _float_then_q(op):
    """input -> ``op`` (float, on the model input) -> Q -> DQ -> output."""
    nodes = [helper.make_node(op, ["input"], ["f"], name="first"),
             helper.make_node("QuantizeLinear", ["f", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["output"])]
    inits = [numpy_helper.from_array(np.float32(0.1), "s"),
             numpy_helper.from_array(np.int8(0), "z")]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT,
                                                             [1, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _softmax_between_layers(g):
    x = g.node("Softmax", [g.gemm(g.flatten(g.global_avgpool("input")), 12)], (12,), axis=-1)
    return g.gemm(x, 5)


def _transpose_between_layers(g):
    x = g.node("Transpose", [g.conv("input", 4, 3)], (4, 8, 8), perm=[0, 1, 3, 2])
    return g.conv(x, 4, 3)


@pytest.mark.parametrize("build, message", [
    (_softmax_between_layers, "node 'softmax_0' (Softmax): Softmax is supported only at the end "
                              "of the model, where the host computes it; here it feeds another "
                              "layer"),
    (_transpose_between_layers, "node 'transpose_0' (Transpose): Transpose is supported only "
                                "between the float model input and its QuantizeLinear, or at "
                                "the end of the model, where the host does it; here it is "
                                "between two layers"),
])
def test_host_ops_between_layers_are_refused(build, message, tmp_path):
    g = zoo.GraphBuilder("case", (4, 8, 8), seed=5)
    with pytest.raises(UnsupportedError) as info:
        load_model(quantized_path(g.build(build(g)), tmp_path))
    assert str(info.value) == message


def test_float_op_on_the_input_is_refused():
    with pytest.raises(UnsupportedError) as info:
        load_model(_float_then_q("Relu"))
    assert str(info.value) == ("node 'first' (Relu): consumes the float model input 'input'; "
                               "only QuantizeLinear may, after at most a Transpose, Reshape or "
                               "Flatten that the host does")


def test_input_relayout_must_reach_a_supported_shape():
    model = _float_then_q("Flatten")
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 2
    model.graph.input[0].type.tensor_type.shape.dim.add().dim_value = 3
    model.graph.input[0].type.tensor_type.shape.dim.add().dim_value = 4
    model.graph.node[0].attribute.append(helper.make_attribute("axis", 3))   # (6, 4)
    with pytest.raises(CompileError, match=r"^input 'input' of shape \(1, 2, 3, 4\) reaches its "
                                           r"QuantizeLinear as \(6, 4\); expected"):
        load_model(model)


# -- the IFP -------------------------------------------------------------------------------------
def _meta_offset(data):
    return struct.unpack_from("<IIQQI4x", data, struct.calcsize("<8sII16sII") + 3 * 32)[2]


def _rewrite(data, edit=None, version=None):
    """``data`` with its metadata edited and/or its version changed, every CRC redone."""
    head_struct = struct.Struct("<8sII16sII")
    end = head_struct.size + 4 * 32
    start = _meta_offset(data)
    meta = data[start:]
    if edit is not None:
        body = json.loads(meta)
        edit(body)
        meta = json.dumps(body).encode()
    table = bytearray(data[head_struct.size:end])
    struct.pack_into("<IIQQI4x", table, 3 * 32, 4, 0, start, len(meta), zlib.crc32(meta))
    magic, old, size, core, count, _ = head_struct.unpack_from(data)
    version = old if version is None else version
    crc = zlib.crc32(head_struct.pack(magic, version, size, core, count, 0) + table)
    return head_struct.pack(magic, version, size, core, count, crc) + table + data[end:start] + meta


def _tensor(meta, name):
    return next(t for t in meta["tensors"] if t["name"] == name)


def test_ifp_carries_host_steps(models):
    program = compile_graph(load_model(models(nhwc_softmax_model)), CONFIG)
    data = ifp.dumps(program)
    assert struct.unpack_from("<8sI", data)[1] == ifp.FORMAT_VERSION == 2
    loaded = ifp.loads(data, CONFIG)
    assert loaded.tensors == program.tensors
    meta = json.loads(data[_meta_offset(data):])
    assert _tensor(meta, "input")["host"] == [{"op": "transpose", "perm": list(NHWC)}]
    assert "host" not in next(t for t in meta["tensors"] if t["role"] == "activation")


def test_ifp_version_1_reads_without_host_steps(models, tmp_path):
    plain = ifp.dumps(compile_graph(load_model(graphs.quantized("conv3_odd", tmp_path)),
                                    CONFIG))
    assert ifp.loads(_rewrite(plain, version=1)).inputs == ["input"]
    data = ifp.dumps(compile_graph(load_model(models(nhwc_softmax_model)), CONFIG))
    with pytest.raises(IFPError, match="'host' needs format version 2, the file is version 1"):
        ifp.loads(_rewrite(data, version=1))
    with pytest.raises(IFPError, match=r"format version 3 is not supported \(this reader: 1, 2\)"):
        ifp.loads(_rewrite(data, version=3))


def _set_host(name, steps):
    return lambda meta: _tensor(meta, name).update(host=steps)


@pytest.mark.parametrize("edit, message", [
    (_set_host("input", [{"op": "transpose", "perm": [0, 1, 2]}]), "not a permutation"),
    (_set_host("input", [{"op": "transpose", "perm": [0, 3, 1, 9]}]), "outside 0..3"),
    (_set_host("input", [{"op": "reshape", "shape": [1, 2]}]), "changes the element count"),
    (_set_host("input", [{"op": "spin"}]), "not one of transpose, reshape, softmax, quantize"),
    (_set_host("input", [{"op": "softmax", "axis": 1, "x": 0}]), "needs exactly the fields"),
    (_set_host("input", {"op": "softmax"}), "is not a list"),
    (_set_host("output", [{"op": "softmax", "axis": 3}]), r"softmax axis 3 is not an axis of "
                                                          r"\(10, 1, 1\)"),
    (_set_host("output", [{"op": "quantize", "scale": 0.0, "zero_point": 0}]),
     "not a positive float32"),
    (_set_host("output", [{"op": "quantize", "scale": 0.1, "zero_point": 200}]), "-128..127"),
    (_set_host("output", [{"op": "softmax", "axis": True}]), "softmax axis True"),
    (lambda meta: next(t for t in meta["tensors"] if t["role"] == "activation").update(
        host=[]), "belong to a model input or output"),
])
def test_ifp_refuses_malformed_host_steps(edit, message, models):
    data = ifp.dumps(compile_graph(load_model(models(nhwc_softmax_model)), CONFIG))
    with pytest.raises(IFPError, match=message) as info:
        ifp.loads(_rewrite(data, edit))
    assert "\n" not in str(info.value)


_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 70), st.floats(allow_nan=True),
              st.sampled_from(list(host_steps.OPS) + ["op", "perm", "shape", "axis", "scale",
                                                      "zero_point"])),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
        st.sampled_from(["op", "perm", "shape", "axis", "scale", "zero_point"]), inner,
        max_size=3),
    max_leaves=12)
_STEP = st.one_of(
    st.builds(lambda p: {"op": "transpose", "perm": p}, st.permutations([0, 1, 2, 3])),
    st.builds(lambda d: {"op": "reshape", "shape": d}, st.sampled_from(
        [[1, 60], [60, 1, 1], [1, 3, 4, 5], [5, 4, 3, 1], [2, 30]])),
    st.builds(lambda a: {"op": "softmax", "axis": a}, st.integers(0, 3)),
    st.builds(lambda s, z: {"op": "quantize", "scale": s, "zero_point": z},
              st.floats(1e-3, 1.0), st.integers(-128, 127)),
    _JSON)


@settings(max_examples=200, deadline=None)
@given(st.one_of(_JSON, st.lists(_STEP, max_size=4)))
def test_host_steps_check_refuses_in_one_line_or_applies(steps):
    """Whatever the metadata holds, the reader's check raises a one-line ValueError or
    accepts steps that apply to the shape it predicts."""
    try:
        shape = host_steps.check(steps, (1, 3, 4, 5))
    except ValueError as error:
        assert "\n" not in str(error)
        return
    x = np.random.default_rng(0).normal(size=(1, 3, 4, 5)).astype(np.float32)
    y = host_steps.apply(steps, x)
    assert y.shape == shape and y.dtype == np.float32 and np.isfinite(y).all()
    assert isinstance(host_steps.describe(steps), str)


# -- the command line ----------------------------------------------------------------------------
def test_cli_compile_and_run_nhwc_softmax(models, tmp_path, capsys):
    path = models(nhwc_softmax_model)
    model_ifp = tmp_path / "m.ifp"
    assert cli.main(["compile", str(path), "-o", str(model_ifp)]) == 0
    assert cli.main(["info", str(model_ifp)]) == 0
    info = capsys.readouterr().out
    assert "input        input (1, 9, 11, 3)" in info
    assert "host: transpose(0, 3, 1, 2), quantize to (3, 9, 11)" in info
    assert "host: dequantize (10, 1, 1), reshape(1, 10) -> softmax(axis=1) -> quantize(" in info

    x = graphs.sample_input(nhwc_softmax_model(), seed=5, count=3)      # NHWC, batch of 3
    np.save(tmp_path / "x.npy", x)
    status = cli.main(["run", str(model_ifp), "--input", str(tmp_path / "x.npy"), "--output",
                       str(tmp_path / "y.npy"), "--cores", "2"])
    assert status == 0, capsys.readouterr().err
    y = np.load(tmp_path / "y.npy")
    program = ifp.read_ifp(model_ifp)
    out = program.tensor("output")
    step = out.host[2]["scale"]
    assert y.shape == (3, 10) and y.dtype == np.float32
    # Probabilities quantized to steps of `step`: each within half a step of its real value.
    assert np.all(y >= 0) and np.abs(y.sum(axis=1) - 1).max() <= 10 * step / 2
    ref = run_batch(reference_session(path), x)
    assert np.abs(y - ref).max() <= softmax_bound(out.scale, step)


def test_cli_refusal_of_a_mid_graph_softmax_is_one_line(tmp_path, capsys):
    g = zoo.GraphBuilder("case", (4, 8, 8), seed=5)
    path = quantized_path(g.build(_softmax_between_layers(g)), tmp_path)
    status = cli.main(["compile", str(path), "-o", str(tmp_path / "m.ifp")])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "softmax_0" in err and "only at the end of the model" in err
