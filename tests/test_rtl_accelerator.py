"""The 4-core accelerator on Verilator, driven by the async host driver over AXI4-Lite: several
tenants at once, isolation (functional, memory, performance) and re-allocation at run time.

Every test runs a scenario (scenarios/*.toml) through :func:`vdla.sim.rtl_scenario.run_scenario_rtl`;
the accelerator is built once per configuration and reused. Outputs are compared bit for bit
with the golden model running each tenant alone (the scenario runner does that); DRAM after a
fault is compared with the golden model's. Cycle counts are the RTL's, so the performance
bounds below are deterministic.
"""

import asyncio
import dataclasses
import pathlib

import numpy as np
import pytest

from vdla.regs import Fault
from vdla.sim.bus import IssBus
from vdla.sim.driver import POLL_CYCLES
from vdla.sim.rtl_scenario import run_scenario_rtl
from vdla.sim.scenario import run_scenario
from vdla.sim.scenario_file import load_scenario

pytestmark = pytest.mark.rtl

SCENARIOS = pathlib.Path(__file__).resolve().parent.parent / "scenarios"


def quiet(message):
    pass


def rtl(scenario, **kwargs):
    return run_scenario_rtl(scenario, log=quiet, **kwargs)


def iss(scenario):
    """The golden model's report and DRAM for the same scenario."""
    bus = IssBus(scenario.config, scenario.dram_bytes)
    report = asyncio.run(run_scenario(scenario, bus))
    return report, bus.machine.dram.copy()


def tenant(report, name):
    return next(t for t in report["tenants"] if t["name"] == name)


def assert_all_exact(report):
    """Every inference a tenant completed is exact; tenants that were neither stopped nor
    faulted completed all of theirs."""
    for t in report["tenants"]:
        assert t["exact"] == t["compared"] == t["completed"], t
        if t["state"] not in ("faulted", "stopped"):
            assert t["completed"] == t["inferences"], t


@pytest.mark.parametrize("name", ["two_tenants", "four_tenants"])
def test_concurrent_tenants_match_golden_model(name):
    scenario = load_scenario(SCENARIOS / f"{name}.toml")
    report = rtl(scenario)
    assert_all_exact(report)
    assert len({t["model"] for t in report["tenants"]}) >= 2
    for t in report["tenants"]:
        print(f"{name}: {t['name']} ({t['model']}, {t['allocations'][0]['cores']} cores): "
              f"latency {t['latency_cycles']} cycles")


def _segment(scenario, name):
    spec = next(t for t in scenario.tenants if t.name == name)
    a = spec.allocation
    return a.seg_base, a.seg_base + a.seg_size


@pytest.mark.parametrize("inject, code", [("segment", Fault.SEGMENT),
                                          ("illegal", Fault.ILLEGAL)])
def test_fault_stays_with_its_tenant(inject, code, tmp_path):
    """The faulting tenant stops alone with the golden model's fault code, address and core;
    the other tenant finishes exactly; DRAM outside the faulting tenant's segment is
    byte-identical to the golden model's run of the same scenario without the fault."""
    text = (SCENARIOS / "fault.toml").read_text()
    text = text.replace('inject = "segment"', f'inject = "{inject}"')
    text = text.replace('model = "', f'model = "{SCENARIOS}/')
    path = tmp_path / "fault.toml"
    path.write_text(text)
    scenario = load_scenario(path)
    report = rtl(scenario, dram_dump=True)
    want, _ = iss(scenario)
    clean_path = tmp_path / "clean.toml"
    clean_path.write_text(text.replace(f'inject = "{inject}"', ""))
    clean, clean_dram = iss(load_scenario(clean_path))

    bad, want_bad = tenant(report, "bad"), tenant(want, "bad")
    assert bad["state"] == "faulted" and len(bad["faults"]) == 1
    fault, want_fault = bad["faults"][0], want_bad["faults"][0]
    assert fault["code"] == code.name
    assert (fault["code"], fault["pc"], fault["core"]) == \
        (want_fault["code"], want_fault["pc"], want_fault["core"])
    assert_all_exact(report)
    assert tenant(report, "good")["completed"] == tenant(clean, "good")["completed"]

    lo, hi = _segment(scenario, "bad")
    dram = report["dram"][:len(clean_dram)]
    outside = np.ones(len(clean_dram), bool)
    outside[lo:hi] = False
    assert np.array_equal(dram[outside], clean_dram[outside])


def test_reallocation_while_another_tenant_runs():
    """A moves 1 -> 3 -> 2 cores between inferences while B keeps running on core 3:
    nothing lost or repeated, every output exact, B never stopped, moved or restarted."""
    scenario = load_scenario(SCENARIOS / "reallocate.toml")
    report = rtl(scenario)
    assert_all_exact(report)
    a, b = tenant(report, "A"), tenant(report, "B")
    assert [x["cores"] for x in a["allocations"]] == [1, 3, 2]
    assert a["completed"] == a["inferences"] == len(a["latency_cycles"]) == 6
    assert a["restarted"] == b["restarted"] == 0
    assert [x["core_mask"] for x in b["allocations"]] == [0b1000]
    assert b["completed"] == b["inferences"]
    print(f"link per move: {[x['link_ms'] for x in a['allocations']]} ms; A latency "
          f"{a['latency_cycles']}; B latency {b['latency_cycles']} cycles")
    # B (the digits CNN on one core) moves many short rows, so its latency follows the DRAM
    # queue A's cores keep full: measured 11.8k cycles next to A on one core, 18.9k next to
    # A on three. The bound guards that figure; the moves themselves never pause B.
    assert max(b["latency_cycles"]) <= 1.7 * min(b["latency_cycles"])


def test_abort_mid_inference_while_another_tenant_runs():
    """The host aborts A (two cores, in the middle of an inference) and later starts it
    again: the cut inference runs again from its input, every output is exact, and B (on its
    own core) never notices. The driver sees the abort end within a few polls."""
    scenario = load_scenario(SCENARIOS / "abort.toml")
    report = rtl(scenario)
    assert_all_exact(report)
    a, b = tenant(report, "A"), tenant(report, "B")
    assert a["restarted"] == 1 and a["completed"] == a["inferences"] and not a["faults"]
    assert b["restarted"] == 0 and b["completed"] == b["inferences"]
    assert len(a["abort_cycles"]) == 1
    print(f"abort seen by the driver after {a['abort_cycles'][0]} cycles")
    # STATUS is polled every POLL_CYCLES; the gateware's own bound is in test_hw_accelerator.
    assert a["abort_cycles"][0] <= 4 * POLL_CYCLES


def _alone(scenario):
    """The scenario with its first tenant only, on the same cores."""
    return dataclasses.replace(scenario, tenants=scenario.tenants[:1], events=[])


#: Compute-bound A stays within 10 % of its latency alone (the issue's bound; measured 3.6 %);
#: memory-bound A is guaranteed half of the delivered beats, so its latency at most doubles
#: (measured 1.83x).
ISOLATION_BOUNDS = [("isolation_compute", 1.10), ("isolation_memory", 2.0)]


@pytest.mark.parametrize("name, bound", ISOLATION_BOUNDS)
def test_performance_isolation(name, bound):
    """A on cores 0-1 while B saturates DRAM on cores 2-3: A's latency against A alone."""
    scenario = load_scenario(SCENARIOS / f"{name}.toml")
    shared, alone = rtl(scenario), rtl(_alone(scenario))
    assert_all_exact(shared)
    a_shared = tenant(shared, "A")["latency_cycles"]
    a_alone = tenant(alone, "A")["latency_cycles"]
    ratio = float(np.median(a_shared) / np.median(a_alone))
    b = tenant(shared, "B")
    print(f"{name}: A alone {a_alone}, with B {a_shared} cycles: ratio {ratio:.3f} "
          f"(bound {bound}); B ran {b['completed']} inferences meanwhile")
    assert b["completed"] >= 2 and b["state"] == "stopped"
    assert ratio <= bound
