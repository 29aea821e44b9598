"""Dead output channels: weights of about zero (a pruned, BatchNormalization-folded channel).

Such a channel's output is a constant: the requantized bias. Its own requantization need not
fit the hardware (ONNX Runtime's quantizer scales its weights to about 1e-20 so that the bias
fits int32, and the zero-point correction then overflows it), so the front end compiles it as
that constant, exactly as ONNX Runtime computes it, and warns once per layer naming the
channels.
"""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from test_cli import run_cli
from vdla.compiler import ir
from vdla.compiler.errors import DeadChannelWarning
from vdla.compiler.frontend import load_model
from vdla.compiler.onnx_lower import Affine, Out, linear
from vdla.compiler.quantize import quantize_model
from vdla.compiler.static import compile_graph
from vdla.config import get_config
from vdla.sim.host import run_program
from vdla.sim.onnx_reference import reference_session

CONFIG = get_config("small")
ONE_STEP = 1.0001           # one output quantization step, with float slack
SHAPE = (8, 7, 6)
#: channel -> (its weights, its bias): the one the old requantization refused (a bias whose
#: int32 sits at the top of the range), one whose constant is not the zero point, and one of
#: exactly zero weights.
DEAD = {2: (1e-13, 6e-8), 4: (1e-13, 0.3), 5: (0.0, -0.2)}
CHANNELS = 7


def _dead_conv(relu):
    """Conv with the :data:`DEAD` channels among normal ones (Relu after it or not)."""
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.3, (CHANNELS, SHAPE[0], 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, CHANNELS).astype(np.float32)
    for channel, (weight, bias) in DEAD.items():
        w[channel], b[channel] = weight, bias
    last = "conv_out" if relu else "output"
    nodes = [helper.make_node("Conv", ["input", "w", "b"], [last], name="conv0",
                              pads=[1, 1, 1, 1])]
    if relu:
        nodes.append(helper.make_node("Relu", [last], ["output"], name="relu0"))
    graph = helper.make_graph(
        nodes, "dead_relu" if relu else "dead",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, *SHAPE])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, CHANNELS, 7, 6])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _inputs(count, seed):
    # Non-negative inputs: the input zero point is -128, the largest |x_q - zp| reach.
    rng = np.random.default_rng(seed)
    return np.abs(rng.normal(0, 1, (count, *SHAPE))).astype(np.float32)


@pytest.fixture(scope="module", params=[False, True], ids=["signed", "relu"])
def dead_qdq(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("dead") / "dead_qdq.onnx"
    quantize_model(_dead_conv(request.param), _inputs(8, 0), path)
    return path


def test_dead_channels_compile_with_one_warning(dead_qdq):
    with pytest.warns(DeadChannelWarning) as record:
        graph = load_model(dead_qdq)        # "requantization bias ... does not fit" before
    messages = [str(w.message) for w in record if w.category is DeadChannelWarning]
    assert messages == ["node 'conv0' (Conv): output channels 2, 4, 5 (of 7) do not depend on "
                        "the input (weights of about zero): compiled as constants"]
    (conv,) = graph.layers
    dead = list(DEAD)
    assert not conv.weight[dead].any()
    assert list(conv.requant.mult_a[dead]) == [1, 1, 1] and not conv.requant.shift[dead].any()


def test_dead_channels_match_onnxruntime(dead_qdq):
    with pytest.warns(DeadChannelWarning):
        program = compile_graph(load_model(dead_qdq), CONFIG)
    session = reference_session(dead_qdq)
    scale = program.tensor("output").scale
    dead = list(DEAD)
    for x in _inputs(3, 1):
        expected = session.run(None, {"input": x[None]})[0]
        got = run_program(program, CONFIG, {"input": x[None]}, cores=2)["output"]
        assert np.abs(got - expected).max() / scale <= ONE_STEP
        np.testing.assert_array_equal(got[0, dead], expected[0, dead])
    # The channel of bias 0.3 is a constant other than the zero point (ReLU or not).
    assert np.unique(got[0, 4]).tolist() == [pytest.approx(0.3, abs=scale)]


def test_compile_prints_the_warning_as_one_line(dead_qdq, tmp_path, capsys):
    status, _, err = run_cli(capsys, "compile", dead_qdq, "-o", tmp_path / "dead.ifp")
    assert status == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert warnings == ["vdla compile: warning: node 'conv0' (Conv): output channels 2, 4, 5 "
                        "(of 7) do not depend on the input (weights of about zero): compiled "
                        "as constants"]


def test_many_dead_channels_are_counted():
    x = ir.Tensor("x", (4, 3, 3), 0.02, -3)
    weight = np.zeros((24, 4, 1, 1), np.int64)
    weight[:4] = 5
    with pytest.warns(DeadChannelWarning, match=r"output channels 4, 5, .*, 19, \.\.\. "
                                                r"\(20 in all\) \(of 24\)"):
        w, rq = linear(("fc", "Conv"), x, weight, np.full(24, 0.01), np.full(24, 0.1),
                       Affine.identity(24), Out(0.05, 1))
    # 0.1 / 0.05 = 2 steps above the zero point, through bias * 1 >> 0.
    assert not w[4:].any() and list(rq.bias[4:]) == [2] * 20
