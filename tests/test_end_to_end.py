"""ONNX -> compile -> link -> instruction-set simulator, against ONNX Runtime and the reference.

Every graph of tests/graphs.py: the ISS output (run the way `vdla run --backend iss` runs it)
is bit-identical to the layer reference and within one output quantization step of ONNX
Runtime on the same QDQ model (graph optimizations disabled: :mod:`vdla.sim.onnx_reference`), on one and on several cores, under both ISS schedules.
"""

import pathlib

import numpy as np
import pytest

from graphs import GRAPHS, build, quantized, sample_input
from vdla.compiler.frontend import load_model
from vdla.compiler.ifp import dumps, loads
from vdla.compiler.static import compile_graph
from vdla.config import get_config
from vdla.sim.host import quantize, run_program, run_program_int
from vdla.sim.onnx_reference import reference_session
from vdla.sim.reference import run_graph

CONFIG = get_config("small")
DIGITS = pathlib.Path(__file__).resolve().parent.parent / "models" / "digits" / "digits_qdq.onnx"


@pytest.fixture(scope="module")
def qdq_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e")


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_iss_matches_onnxruntime_and_reference(name, qdq_dir):
    path = quantized(name, qdq_dir)
    graph = load_model(path)
    program = loads(dumps(compile_graph(graph, CONFIG)), CONFIG)
    (in_name,), (out_name,) = program.inputs, program.outputs
    entry_in, entry_out = program.tensor(in_name), program.tensor(out_name)
    session = reference_session(path)
    for seed, cores in ((0, 1), (1, 3)):
        x = sample_input(build(name), seed=seed)
        expected = session.run(None, {session.get_inputs()[0].name: x})[0]
        got = run_program(program, CONFIG, {in_name: x}, cores=cores)[out_name]
        assert got.shape == expected.shape
        steps = np.abs(got - expected) / entry_out.scale
        assert steps.max() <= 1.0001, f"{name}: {steps.max():.2f} steps off on {cores} cores"

        q = quantize(x.reshape(entry_in.shape), entry_in.scale, entry_in.zero_point)
        golden = run_graph(graph, {in_name: q})[out_name]
        for policy in ("load-first", "compute-first"):
            ours = run_program_int(program, CONFIG, {in_name: q}, cores=cores, policy=policy)
            np.testing.assert_array_equal(ours[out_name], golden)


def test_digits_accuracy_matches_onnxruntime():
    from models.digits.data import held_out
    images, labels = held_out()
    graph = load_model(DIGITS)
    program = compile_graph(graph, CONFIG)
    session = reference_session(DIGITS)
    (in_name,), (out_name,) = program.inputs, program.outputs
    ours, ref = [], []
    for image in images:
        ours.append(run_program(program, CONFIG, {in_name: image[None]}, cores=2)[out_name])
        ref.append(session.run(None, {"input": image[None]})[0])
    ours, ref = np.concatenate(ours), np.concatenate(ref)
    assert np.abs(ours - ref).max() <= 1.0001 * program.tensor(out_name).scale
    ours_acc = (ours.argmax(1) == labels).mean()
    ref_acc = (ref.argmax(1) == labels).mean()
    assert ours_acc == ref_acc
    assert ours_acc > 0.95
