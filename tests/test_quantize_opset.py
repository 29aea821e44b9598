"""Float models of an opset older than 13 through `vdla quantize` and `vdla compile`.

Per-channel QuantizeLinear / DequantizeLinear (their ``axis``) exist from opset 13 on, and
onnxruntime's quantizer writes them whatever the model's opset says. vdla's quantize path
converts the float model to opset 13 first, so ONNX Runtime loads what it writes; the front end
refuses a QDQ model that still has per-channel Q/DQ under an older opset (ONNX Runtime refuses
it too, so there is no reference for it).
"""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from test_cli import assert_one_line_error, run_cli
from test_host_io import softmax_bound
from vdla import cli
from vdla.compiler.errors import CompileError
from vdla.compiler.frontend import load_model
from vdla.compiler.quantize import QDQ_OPSET, quantize_model
from vdla.compiler.static import compile_graph
from vdla.config import get_config
from vdla.sim.host import run_program
from vdla.sim.onnx_reference import reference_session

CONFIG = get_config("small")
ONE_STEP = 1.0001           # one output quantization step, with float slack
SHAPE = (3, 8, 8)


def _opset11_model(tail):
    """Conv (per-channel weights once quantized) -> ``tail``, written at opset 11.

    ``tail`` is ``"relu"`` (output ``(1, 6, 8, 8)``) or ``"softmax"``: an opset-11 Softmax
    over axis 1 of the 4-D output, which the opset converter rewrites with a Shape node.
    """
    rng = np.random.default_rng(11)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (6, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.1, 6).astype(np.float32), "b")]
    op = "Relu" if tail == "relu" else "Softmax"
    extra = {} if tail == "relu" else {"axis": 1}
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["conv_out"], name="conv0",
                              pads=[1, 1, 1, 1]),
             helper.make_node(op, ["conv_out"], ["output"], name="tail0", **extra)]
    graph = helper.make_graph(
        nodes, f"opset11_{tail}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, *SHAPE])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 6, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def _samples(count, seed):
    return np.random.default_rng(seed).normal(0, 1, (count, *SHAPE)).astype(np.float32)


def _default_opset(model):
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _per_channel_qdq(model):
    return [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
            and any(a.name == "axis" for a in n.attribute)]


@pytest.fixture(scope="module")
def relu_qdq(tmp_path_factory):
    """The opset-11 Conv+Relu quantized through `vdla quantize` (the CLI)."""
    directory = tmp_path_factory.mktemp("opset11")
    onnx.save(_opset11_model("relu"), directory / "float.onnx")
    np.save(directory / "calib.npy", _samples(8, 0))
    assert cli.main([str(a) for a in ("quantize", directory / "float.onnx", "--calib",
                                      directory / "calib.npy", "-o",
                                      directory / "qdq.onnx")]) == 0
    return directory / "qdq.onnx"


def test_opset11_model_quantizes_to_one_onnxruntime_loads(relu_qdq):
    model = onnx.load(relu_qdq)
    assert _default_opset(model) >= QDQ_OPSET and _per_channel_qdq(model)
    session = reference_session(relu_qdq)           # raised INVALID_GRAPH before the fix
    program = compile_graph(load_model(relu_qdq), CONFIG)
    scale = program.tensor("output").scale
    for x in _samples(2, 1):
        expected = session.run(None, {"input": x[None]})[0]
        got = run_program(program, CONFIG, {"input": x[None]}, cores=2)["output"]
        assert np.abs(got - expected).max() / scale <= ONE_STEP


def test_compile_refuses_per_channel_qdq_under_an_old_opset(relu_qdq, tmp_path, capsys):
    # What the quantizer wrote before the fix: per-channel DequantizeLinear at opset 11.
    model = onnx.load(relu_qdq)
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = 11
    with pytest.raises(CompileError, match=r"DequantizeLinear\): per-channel quantization "
                                           r"needs opset 13, the model has opset 11"):
        load_model(model)
    onnx.save(model, tmp_path / "old.onnx")
    status, _, err = run_cli(capsys, "compile", tmp_path / "old.onnx", "-o", tmp_path / "m.ifp")
    assert_one_line_error(status, err, "vdla compile: error:", "opset 11", "vdla quantize")
    assert not (tmp_path / "m.ifp").exists()


def test_opset11_softmax_quantized_without_preprocessing(tmp_path):
    # The converter computes the opset-11 Softmax's 2-D shape with a Shape node; without
    # quant_pre_process nothing folds it, so the quantize path does.
    path = tmp_path / "softmax_qdq.onnx"
    quantize_model(_opset11_model("softmax"), _samples(8, 0), path, preprocess=False)
    model = onnx.load(path)
    assert _default_opset(model) >= QDQ_OPSET
    assert not any(n.op_type == "Shape" for n in model.graph.node)
    session = reference_session(path)
    program = compile_graph(load_model(path), CONFIG)
    out = program.tensor("output")
    # The host's Softmax starts from the accelerator's logits (the tensor's own scale) and
    # ends at the graph's QuantizeLinear after it (the last quantize step).
    final_scale = [step["scale"] for step in out.host if step["op"] == "quantize"][-1]
    for x in _samples(2, 2):
        expected = session.run(None, {"input": x[None]})[0]
        got = run_program(program, CONFIG, {"input": x[None]})["output"]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= softmax_bound(out.scale, final_scale)
