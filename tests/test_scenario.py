"""Scenario files and the scenario runner on the ISS: the example scenarios, re-allocation
without lost or repeated inferences, fault isolation down to the DRAM bytes, the report, and
one-line errors for bad files."""

import asyncio
import dataclasses
import pathlib

import numpy as np
import pytest

from vdla.sim.bus import IssBus
from vdla.sim.scenario import (ScenarioError, format_report, load_scenario, run_scenario,
                               run_scenario_iss)

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"
DIGITS = ROOT / "models" / "digits" / "digits_qdq.onnx"
TENANT_KEYS = {"name", "index", "model", "inject", "state", "inferences", "completed",
               "outputs_written", "exact", "compared", "exact_per_inference", "latency_cycles",
               "device_cycles", "throughput_ips", "allocations", "restarted", "abort_cycles",
               "faults"}


def by_name(report):
    return {t["name"]: t for t in report["tenants"]}


@pytest.mark.parametrize("name", ["two_tenants", "four_tenants"])
def test_example_scenarios_run_exactly(name):
    scenario = load_scenario(SCENARIOS / f"{name}.toml")
    report = run_scenario_iss(scenario)
    assert report["exact"] and report["backend"] == "iss" and report["config"] == "small"
    for spec, t in zip(scenario.tenants, report["tenants"]):
        assert set(t) == TENANT_KEYS
        assert t["state"] == "finished" and t["completed"] == spec.inferences
        assert t["exact"] == t["compared"] == spec.inferences
        assert t["outputs_written"] == spec.inferences * len(spec.program.outputs)
        # On the ISS a latency is the tenant's estimated cycles, the same for every input.
        assert t["latency_cycles"] == t["device_cycles"]
        assert len(set(t["latency_cycles"])) == 1
        span = sum(t["latency_cycles"])
        assert t["throughput_ips"] == pytest.approx(spec.inferences * 100e6 / span, rel=1e-3)
        assert not t["faults"] and t["allocations"][0]["cores"] == spec.cores
    assert report["total_cycles"] >= max(sum(t["latency_cycles"]) + spec.delay
                                         for t, spec in zip(report["tenants"],
                                                            scenario.tenants))
    assert "all outputs exact" in format_report(report)


def test_reallocation_loses_and_repeats_nothing():
    report = run_scenario_iss(SCENARIOS / "reallocate_both.toml")
    a, b = by_name(report)["A"], by_name(report)["B"]
    assert [x["cores"] for x in a["allocations"]] == [1, 3, 2]
    assert [x["cores"] for x in b["allocations"]] == [3, 1, 2]
    assert [x["after"] for x in a["allocations"]] == [0, 2, 4]
    for t in (a, b):
        assert t["completed"] == t["inferences"] == len(t["latency_cycles"])
        assert t["exact"] == t["compared"] == t["inferences"]
        masks = [x["core_mask"] for x in t["allocations"]]
        assert all(bin(m).count("1") == x["cores"] for m, x in zip(masks, t["allocations"]))
        assert all(x["link_ms"] >= 0 for x in t["allocations"])     # a figure, make bench
    # Cores never overlap: at every move the two masks are disjoint.
    assert not a["allocations"][1]["core_mask"] & b["allocations"][1]["core_mask"]
    assert not a["allocations"][2]["core_mask"] & b["allocations"][2]["core_mask"]
    # More cores, shorter inferences: 1 core > 2 cores > 3 cores for A.
    lat = a["latency_cycles"]
    assert lat[0] == lat[1] > lat[4] == lat[5] > lat[2] == lat[3]
    assert b["restarted"] >= 1           # B was stopped mid-inference and ran it again
    assert all(e["applied_cycle"] is not None for e in report["events"])


def test_fault_is_isolated_down_to_the_dram_bytes():
    scenario = load_scenario(SCENARIOS / "fault.toml")

    def run(scenario):
        bus = IssBus(scenario.config, scenario.dram_bytes)
        return asyncio.run(run_scenario(scenario, bus)), bus.machine.dram

    report, dram = run(scenario)
    bad, good = by_name(report)["bad"], by_name(report)["good"]
    assert bad["state"] == "faulted" and bad["completed"] == 0 and bad["compared"] == 0
    assert [f["code"] for f in bad["faults"]] == ["SEGMENT"]
    assert good["state"] == "finished" and good["exact"] == good["compared"] == 4
    assert report["exact"]

    # The same scenario without the fault: no byte outside the bad tenant's segment differs.
    spec = scenario.tenants[0]
    clean = dataclasses.replace(scenario, tenants=[
        dataclasses.replace(spec, program=spec.reference, inject=None), scenario.tenants[1]])
    _, clean_dram = run(clean)
    lo, hi = spec.allocation.seg_base, spec.allocation.seg_base + spec.allocation.seg_size
    np.testing.assert_array_equal(dram[:lo], clean_dram[:lo])
    np.testing.assert_array_equal(dram[hi:], clean_dram[hi:])


def test_stop_start_events_and_file_inputs(tmp_path):
    x = np.random.default_rng(0).random((3, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "s.toml").write_text(f"""
[[tenant]]
name = "A"
model = "{DIGITS.as_posix()}"
cores = 2
inferences = 4
inputs = "x.npy"
[[tenant]]
name = "B"
model = "{DIGITS.as_posix()}"
cores = 1
inferences = 5
[[event]]
tenant = "A"
after = 1
action = "stop"
target = "B"
[[event]]
tenant = "A"
after = 3
action = "start"
target = "B"
[[event]]
tenant = "A"
after = 4
action = "stop"
""")
    scenario = load_scenario(tmp_path / "s.toml")
    assert len(scenario.tenants[0].samples) == 3          # inference 3 reuses sample 0
    report = run_scenario_iss(scenario)
    a, b = by_name(report)["A"], by_name(report)["B"]
    assert a["completed"] == 4 and a["exact"] == 4 and a["state"] == "finished"
    assert b["completed"] == 5 and b["exact"] == 5 and b["state"] == "finished"
    applied = [e["applied_cycle"] for e in report["events"]]
    assert applied[0] < applied[1] <= applied[2]


BASE = f"""
[[tenant]]
name = "A"
model = "{DIGITS.as_posix()}"
cores = 2
inferences = 2
"""


@pytest.mark.parametrize("text, where, message", [
    ("config = 3\n" + BASE, "config", "expected a string"),
    ('config = "huge"\n' + BASE, "config", "unknown configuration 'huge'"),
    ("colour = 1\n" + BASE, "colour", "unknown key"),
    (BASE + "corse = 1\n", "tenant[0] (A).corse", "unknown key"),
    (BASE.replace("cores = 2", 'cores = "2"'), "tenant[0] (A).cores", "expected an integer"),
    (BASE.replace("cores = 2", "cores = 7"), "tenant[0] (A).cores", "exceeds the 4 cores"),
    (BASE.replace("cores = 2", "cores = 2\ncore_mask = 0b111"), "tenant[0] (A).core_mask",
     "holds 3 cores"),
    (BASE + BASE.replace('"A"', '"B"').replace("cores = 2", "cores = 3"),
     "tenant[1] (B).cores", "only 2 of the 4"),
    (BASE.replace("cores = 2", "cores = 2\ncore_mask = 0b11") +
     BASE.replace('"A"', '"B"').replace("cores = 2", "cores = 1\ncore_mask = 0b10"),
     "tenant[1] (B).core_mask", "overlaps"),
    (BASE + BASE, "tenant[1] (A).name", "used by another tenant"),
    (BASE.replace("digits_qdq.onnx", "nothing.onnx"), "tenant[0] (A).model", "no such file"),
    (BASE.replace("digits_qdq.onnx", "README.md"), "tenant[0] (A).model", ".onnx or .ifp"),
    (BASE + 'inject = "gremlins"\n', "tenant[0] (A).inject", "not one of segment, illegal"),
    (BASE + 'inputs = "x.npy"\nseed = 3\n', "tenant[0] (A).seed", "not both"),
    (BASE + '[[event]]\ntenant = "Z"\nafter = 1\naction = "stop"\n', "event[0].tenant",
     "'Z' is not one of A"),
    (BASE + '[[event]]\ntenant = "A"\nafter = 3\naction = "stop"\n', "event[0].after",
     "outside 1..2"),
    (BASE + '[[event]]\ntenant = "A"\nafter = 1\naction = "stop"\ncores = 1\n',
     "event[0].cores", "only a reallocate event"),
    (BASE + '[[event]]\ntenant = "A"\nafter = 1\naction = "reallocate"\n', "event[0].cores",
     "missing"),
    ("tenant = 3\n", "tenant", "expected an array of tables"),
    ("[[tenant]\n", "", "not valid TOML"),
])
def test_bad_scenarios_are_one_line_errors(tmp_path, text, where, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    line = str(info.value)
    assert "\n" not in line and line.startswith(f"{path}: {where}"), line
    assert message in line, line


def test_reallocation_without_free_cores_is_an_error(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(BASE + BASE.replace('"A"', '"B"') +
                    '[[event]]\ntenant = "A"\nafter = 1\naction = "reallocate"\ncores = 3\n')
    with pytest.raises(ScenarioError, match=r"event\[0\]\.cores: A needs 3 cores, only 2"):
        run_scenario_iss(path)


def test_abort_cuts_an_inference_that_runs_again():
    report = run_scenario_iss(SCENARIOS / "abort.toml")
    a, b = by_name(report)["A"], by_name(report)["B"]
    assert a["restarted"] == 1 and len(a["abort_cycles"]) == 1 and not a["faults"]
    for t in (a, b):
        assert t["exact"] == t["compared"] == t["completed"] == t["inferences"], t
