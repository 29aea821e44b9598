"""Channel Concat and two-output models on the Verilator-simulated accelerator, bit for bit
against the instruction-set simulator.

tests/test_concat.py and tests/test_multi_io.py check these models against ONNX Runtime on the
ISS only. Here three of them share the ``small`` accelerator in one simulator launch (the
launch costs more than the inferences): the SqueezeNet fire module (expand branches written in
place into the concatenation) on two cores, the misaligned 5 + 7 concat (branches widened and
added) on one core and the detector's two heads (two model outputs) on one core, two
inferences each. Every output the RTL wrote must equal the ISS running that tenant alone on the
same number of cores (and the layer reference, which the scenario runner compares with), with
no fault; and the tenant's whole DRAM segment after its last inference (every intermediate
tensor, the concatenations among them) must equal the ISS's after the same inferences, so a
difference is named by the tensors and layers it falls in, not only seen in the logits. The
accelerator is the one the other RTL tests build (cached under build/rtl).
"""

import numpy as np
import pytest

from graphs import sample_input
from test_concat import _qdq, misaligned, squeezenet_fire
from test_multi_io import TRUNK, _batch, _two_heads
from vdla.compiler.quantize import quantize_model
from vdla.compiler.program import Allocation
from vdla.config import get_config
from vdla.sim.host import Host
from vdla.sim.rtl_scenario import run_scenario_rtl
from vdla.sim.scenario_file import load_scenario

pytestmark = pytest.mark.rtl

CONFIG = get_config("small")
INFERENCES = 2
#: tenant name -> (cores, expected model outputs)
TENANTS = {"fire": (2, 1), "misaligned": (1, 1), "heads": (1, 2)}


def quiet(message):
    pass


def _models(d):
    """QDQ models of the three tenants and two float inputs each (.npy), by tenant name."""
    paths = {}
    for name, builder in (("fire", squeezenet_fire), ("misaligned", misaligned)):
        model = builder()
        sub = d / name
        sub.mkdir()
        paths[name] = _qdq(model, sub)
        np.save(d / f"{name}_x.npy", sample_input(model, seed=7, count=INFERENCES))
    paths["heads"] = d / "heads.onnx"
    quantize_model(_two_heads(), _batch(TRUNK, 8, 30), paths["heads"])
    np.save(d / "heads_x.npy", _batch(TRUNK, INFERENCES, 5))
    return paths


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """``(scenario, RTL report)`` of the three tenants running together."""
    d = tmp_path_factory.mktemp("rtl_models")
    paths = _models(d)
    text = 'config = "small"\n'
    for name, (cores, _) in TENANTS.items():
        text += (f'\n[[tenant]]\nname = "{name}"\nmodel = "{paths[name]}"\ncores = {cores}\n'
                 f'inferences = {INFERENCES}\ninputs = "{d / f"{name}_x.npy"}"\n')
    (d / "models.toml").write_text(text)
    scenario = load_scenario(d / "models.toml")
    report = run_scenario_rtl(scenario, log=quiet, keep_outputs=True, dram_dump=True)
    return scenario, report


def iss_run(spec):
    """The ISS running the tenant alone on as many cores, its inferences one after another:
    ``(outputs per inference, segment bytes after the last)``."""
    program = spec.reference
    host = Host(CONFIG, -(-program.segment_size // 4096) * 4096)
    handle = host.tenant(0, Allocation(cores=spec.cores))
    handle.load(program)
    outputs = []
    for i in range(spec.inferences):
        for name in program.inputs:
            handle.write_input(name, spec.sample(i)[name])
        handle.start()
        host.run()
        handle.check()
        outputs.append({name: handle.read_output(name) for name in program.outputs})
    return outputs, handle.read_segment(0, program.segment_size)


def _segment_mismatch(program, got, want):
    """Lines naming the tensors (and their producing layers) whose bytes differ; tensors
    sharing memory (the memory plan reuses it) are all named."""
    differ = np.flatnonzero(got != want)
    producers = {layer.output: f"{layer.name} ({layer.kind})" for layer in program.layers}
    lines = [f"{len(differ)} bytes of the {len(got)}-byte segment differ, offsets "
             f"0x{differ[0]:x}..0x{differ[-1]:x}"]
    for t in program.tensors:
        hit = differ[(differ >= t.offset) & (differ < t.offset + t.size)]
        if len(hit):
            lines.append(f"  tensor {t.name} {t.shape} ({t.role}, made by "
                         f"{producers.get(t.name, 'the host')}): {len(hit)}/{t.size} bytes, "
                         f"first at +0x{hit[0] - t.offset:x}")
    return lines


def rtl_problems(spec, t, report):
    """``(problems, segment)``: lines naming where tenant ``t`` of an RTL ``report`` differs
    from the ISS running ``spec`` alone (every inference's outputs, then the whole segment
    after the last), and the RTL's segment bytes."""
    iss_outputs, iss_segment = iss_run(spec)
    problems = []
    for i, (out, want) in enumerate(zip(t["outputs"], iss_outputs)):
        assert sorted(out) == sorted(want)
        for output, values in out.items():
            got = np.array(values, np.int8)
            assert got.shape == want[output].shape, (output, got.shape)
            if not np.array_equal(got, want[output]):
                problems.append(f"inference {i}, " + _mismatch(output, got, want[output]))
    base = spec.allocation.seg_base
    segment = report["dram"][base:base + spec.reference.segment_size]
    if not np.array_equal(segment, iss_segment):
        problems += _segment_mismatch(spec.reference, segment, iss_segment)
    return problems, segment


def _mismatch(name, got, want):
    """One line describing where ``got`` differs from ``want`` (int8 (C, H, W))."""
    diff = got.astype(np.int16) - want.astype(np.int16)
    bad = np.argwhere(diff)
    channels = sorted({int(c) for c in bad[:, 0]})
    return (f"{name}: {len(bad)}/{got.size} values differ (max |diff| "
            f"{int(np.abs(diff).max())}), channels {channels}, first at (c, y, x) = "
            f"{tuple(int(v) for v in bad[0])}: RTL {int(got[tuple(bad[0])])}, ISS "
            f"{int(want[tuple(bad[0])])}")


@pytest.mark.parametrize("name", list(TENANTS))
def test_rtl_matches_iss(run, name):
    scenario, report = run
    spec = next(s for s in scenario.tenants if s.name == name)
    t = next(t for t in report["tenants"] if t["name"] == name)
    cores, outputs = TENANTS[name]
    assert len(spec.reference.outputs) == outputs
    assert not t["faults"] and t["state"] == "finished", t
    assert t["completed"] == t["inferences"] == len(t["outputs"]) == INFERENCES, t
    assert [a["cores"] for a in t["allocations"]] == [cores]
    problems, segment = rtl_problems(spec, t, report)
    assert not problems, f"{name}: RTL differs from the ISS:\n" + "\n".join(problems)
    # The scenario runner's own check (against the layer reference) agrees.
    assert t["exact"] == t["compared"] == INFERENCES, t
    print(f"{name} ({cores} core{'s' * (cores > 1)}, outputs "
          f"{', '.join(spec.reference.outputs)}): {INFERENCES} inferences and the "
          f"{len(segment)}-byte segment exact, latency {t['latency_cycles']} cycles")
