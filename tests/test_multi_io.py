"""Models of several inputs or outputs through `vdla compile`, `vdla run` and `vdla sim`.

A detector's two heads (one Conv trunk feeding two Conv heads, each a model output) and a
two-input model (each input through a Conv, then Add; `vdla quantize` calibrates it from an
.npz of one array per input name). `vdla run` takes an .npz holding one
array per model input by name (a single .npy still works for a one-input model) and writes an
.npz holding one array per output by name (an .npy for a one-output model); a scenario's
``inputs`` may be such an .npz too. Outputs stay within one quantization step of ONNX Runtime.
"""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from test_cli import assert_one_line_error, run_cli
from vdla import cli
from vdla.compiler.quantize import quantize_model
from vdla.compiler.zoo import GraphBuilder
from vdla.sim.onnx_reference import reference_session

ONE_STEP = 1.0001           # one output quantization step, with float slack
TRUNK = (3, 9, 9)
INPUTS = {"a": (3, 8, 8), "b": (2, 8, 8)}


def _two_heads():
    """Conv trunk -> Conv head ``box`` (4 channels) and Conv head ``cls`` (6 channels)."""
    g = GraphBuilder("two_heads", TRUNK, seed=31)
    trunk = g.relu(g.conv("input", 8, 3))
    box = g.conv(trunk, 4, 3)
    cls = g.conv(trunk, 6, 1, pads=(0, 0, 0, 0))
    model = g.build(box, "box")
    for node in model.graph.node:
        node.output[:] = ["cls" if name == cls else name for name in node.output]
    model.graph.output.append(helper.make_tensor_value_info("cls", TensorProto.FLOAT,
                                                            [1, 6, *TRUNK[1:]]))
    onnx.checker.check_model(model)
    return model


def _two_inputs():
    """Inputs ``a`` and ``b``, each through a Conv to 4 channels, then Add -> ``output``."""
    rng = np.random.default_rng(32)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (4, c, 3, 3)).astype(np.float32),
                                     f"w_{name}") for name, (c, _, _) in INPUTS.items()]
    nodes = [helper.make_node("Conv", [name, f"w_{name}"], [f"conv_{name}"], name=f"conv_{name}",
                              pads=[1, 1, 1, 1]) for name in INPUTS]
    nodes.append(helper.make_node("Add", ["conv_a", "conv_b"], ["output"], name="add0"))
    graph = helper.make_graph(
        nodes, "two_inputs",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, *shape])
         for name, shape in INPUTS.items()],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _batch(shape, count, seed):
    return np.random.default_rng(seed).normal(0, 1, (count, *shape)).astype(np.float32)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Both models quantized and compiled (through the CLI), and the arrays of the runs."""
    d = tmp_path_factory.mktemp("multi_io")
    heads = _two_heads()
    quantize_model(heads, _batch(TRUNK, 8, 30), d / "heads.onnx")
    onnx.save(_two_inputs(), d / "inputs_float.onnx")
    np.savez(d / "calib_ab.npz", **{name: _batch(shape, 8, 40 + i)
                                    for i, (name, shape) in enumerate(INPUTS.items())})
    assert cli.main(["quantize", str(d / "inputs_float.onnx"), "--calib",
                     str(d / "calib_ab.npz"), "-o", str(d / "inputs.onnx")]) == 0
    for name in ("heads", "inputs"):
        assert cli.main(["compile", str(d / f"{name}.onnx"), "-o", str(d / f"{name}.ifp")]) == 0
    np.save(d / "x.npy", _batch(TRUNK, 3, 1))
    np.savez(d / "x.npz", input=_batch(TRUNK, 3, 1))
    ab = {name: _batch(shape, 2, 2 + i) for i, (name, shape) in enumerate(INPUTS.items())}
    np.savez(d / "ab.npz", **ab)
    np.savez(d / "a_only.npz", a=ab["a"])
    np.savez(d / "ab_extra.npz", **ab, c=ab["b"])
    np.savez(d / "ab_shape.npz", a=ab["a"], b=ab["a"])
    np.savez(d / "ab_counts.npz", a=ab["a"], b=ab["b"][:1])
    return d


def _reference(model_path, inputs):
    """ONNX Runtime's outputs by name for each sample of ``inputs`` (name -> batch), stacked."""
    session = reference_session(model_path)
    names = [o.name for o in session.get_outputs()]
    count = len(next(iter(inputs.values())))
    runs = [session.run(None, {k: v[i:i + 1] for k, v in inputs.items()}) for i in range(count)]
    return {name: np.concatenate([run[j] for run in runs]) for j, name in enumerate(names)}


def _output_scales(model_path):
    """Scale of each model output's last DequantizeLinear, by output name."""
    model = onnx.load(model_path)
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    return {o.name: float(consts[producer[o.name].input[1]]) for o in model.graph.output}


def test_two_heads_run_to_an_npz_per_output(work, capsys):
    status, out, err = run_cli(capsys, "run", work / "heads.ifp", "--input", work / "x.npz",
                               "--output", work / "y.npz", "--cores", 2)
    assert status == 0, err
    assert "box (3, 4, 9, 9), cls (3, 6, 9, 9)" in out
    with np.load(work / "y.npz") as archive:
        got = dict(archive)
    expected = _reference(work / "heads.onnx", {"input": np.load(work / "x.npy")})
    assert sorted(got) == ["box", "cls"]
    for name, scale in _output_scales(work / "heads.onnx").items():
        assert got[name].shape == expected[name].shape and got[name].dtype == np.float32
        assert np.abs(got[name] - expected[name]).max() / scale <= ONE_STEP, name


def test_two_heads_take_an_npy_input_and_refuse_an_npy_output(work, capsys):
    status, _, err = run_cli(capsys, "run", work / "heads.ifp", "--input", work / "x.npy",
                             "--output", work / "y2.npz")
    assert status == 0, err
    with np.load(work / "y2.npz") as archive, np.load(work / "y.npz") as before:
        for name in ("box", "cls"):
            np.testing.assert_array_equal(archive[name], before[name])
    status, _, err = run_cli(capsys, "run", work / "heads.ifp", "--input", work / "x.npy",
                             "--output", work / "y.npy")
    assert_one_line_error(status, err, "y.npy: the model has 2 outputs ('box', 'cls')",
                          "name an .npz file")
    assert not (work / "y.npy").exists()


def test_two_inputs_run_from_an_npz(work, capsys):
    status, _, err = run_cli(capsys, "run", work / "inputs.ifp", "--input", work / "ab.npz",
                             "--output", work / "ab_out.npy", "--cores", 3)
    assert status == 0, err
    with np.load(work / "ab.npz") as archive:
        expected = _reference(work / "inputs.onnx", dict(archive))["output"]
    got = np.load(work / "ab_out.npy")
    scale = _output_scales(work / "inputs.onnx")["output"]
    assert got.shape == expected.shape == (2, 4, 8, 8)
    assert np.abs(got - expected).max() / scale <= ONE_STEP


@pytest.mark.parametrize("ifp, x, fragments", [
    ("inputs", "a_only.npz", ["a_only.npz: no array for the model input 'b'"]),
    ("inputs", "ab_extra.npz", ["ab_extra.npz: array 'c' is not a model input"]),
    ("inputs", "ab_shape.npz", ["ab_shape.npz, array 'b': shape (2, 3, 8, 8) does not match "
                                "the model input b (1, 2, 8, 8)"]),
    ("inputs", "ab_counts.npz", ["different numbers of samples ('a': 2, 'b': 1)"]),
    ("inputs", "x.npy", ["x.npy: the model has 2 inputs ('a', 'b')", "give an .npz"]),
    ("heads", "ab.npz", ["ab.npz: no array for the model input 'input'"]),
], ids=["missing", "extra", "shape", "counts", "npy-for-two", "wrong-names"])
def test_bad_npz_input_is_a_one_line_error(work, capsys, ifp, x, fragments):
    out = work / f"refused_{x}.npz"
    status, _, err = run_cli(capsys, "run", work / f"{ifp}.ifp", "--input", work / x,
                             "--output", out)
    assert_one_line_error(status, err, "vdla run: error:", *fragments)
    assert not out.exists()


def _scenario(work, name, inputs, model="inputs.onnx", extra=""):
    path = work / f"{name}.toml"
    path.write_text(f'[[tenant]]\nname = "AB"\nmodel = "{model}"\ncores = 2\n'
                    f'inferences = 3\ninputs = "{inputs}"\n{extra}')
    return path


def test_scenario_takes_an_npz_per_input(work, capsys):
    status, out, err = run_cli(capsys, "sim", _scenario(work, "ab", "ab.npz"))
    assert status == 0, err
    assert "all outputs exact" in out


def test_scenario_quantizes_a_two_input_model_from_an_npz(work, capsys):
    """The float model and its calibration .npz in the scenario: quantized, compiled, run."""
    path = _scenario(work, "ab_float", "ab.npz", model="inputs_float.onnx",
                     extra='calib = "calib_ab.npz"\n')
    status, out, err = run_cli(capsys, "sim", path)
    assert status == 0, err
    assert "all outputs exact" in out


@pytest.mark.parametrize("x, fragment", [
    ("ab_extra.npz", "ab_extra.npz: array 'c' is not a model input"),
    ("ab_counts.npz", "different numbers of samples ('a': 2, 'b': 1)"),
    ("a_only.npz", "a_only.npz has no array 'b'"),
], ids=["extra", "counts", "missing"])
def test_scenario_refuses_a_bad_npz(work, capsys, x, fragment):
    status, _, err = run_cli(capsys, "sim", _scenario(work, "bad", x))
    assert_one_line_error(status, err, "tenant[0] (AB).inputs", fragment)


@pytest.mark.parametrize("calib, message", [
    ("x.npy", "model has 2 inputs (a, b); give the calibration data as one array per input "
              "name (an .npz)"),
    ("a_only.npz", "calibration data has no array for input 'b' (inputs: a, b)"),
    ("ab_extra.npz", "calibration data has an array 'c' that is no model input (inputs: a, b)"),
    ("ab_counts.npz", "calibration data holds different numbers of samples per input (a 2, "
                      "b 1)"),
    ("ab_shape.npz", "calibration data of shape (2, 3, 8, 8) does not match input 'b' of "
                     "per-sample shape (2, 8, 8)"),
])
def test_quantize_refuses_calibration_that_does_not_fit_the_inputs(work, tmp_path, capsys,
                                                                   calib, message):
    out = tmp_path / "q.onnx"
    status, _, err = run_cli(capsys, "quantize", work / "inputs_float.onnx", "--calib",
                             work / calib, "-o", out)
    assert_one_line_error(status, err, "vdla quantize: error:", message)
    assert not out.exists()
