"""The multitenant section of ``make bench`` on the ISS: metric definitions, the alone
baseline scenario, the re-allocation phases and the section's entry in results.json/.md."""

import importlib.util
import json
import pathlib
import sys

import pytest

from vdla.sim.scenario import load_scenario, run_scenario_iss

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


def _bench_module(name):
    # bench/ is a folder of scripts, not a package; run.py imports its siblings by name.
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mt = _bench_module("multitenant")


def test_metric_definitions():
    # Tenant 1 as fast as alone, tenant 2 twice as slow.
    m = mt.sharing_metrics([100, 300], [100, 600])
    assert m == {"stp": 1.5, "antt": 1.5, "fairness": 0.5}
    assert mt.sharing_metrics([5, 7, 9], [5, 7, 9]) == {"stp": 3.0, "antt": 1.0, "fairness": 1.0}
    assert mt.p99(list(range(1, 101))) == 99 and mt.p99([3, 9, 4]) == 9
    assert mt.median([4, 1, 10]) == 4.0 and mt.median([]) is None


def test_alone_scenario_takes_the_whole_pool():
    scenario = load_scenario(ROOT / "scenarios" / "four_tenants.toml")
    spec = scenario.tenants[3]          # explicit core mask, region and segment not at 0
    alone = mt.alone_scenario(scenario, spec, inferences=2)
    (t,) = alone.tenants
    a = t.allocation
    assert (t.index, t.cores, t.inferences, t.delay, alone.events) == (0, 4, 2, 0, [])
    assert (a.cores, a.core_mask, a.prog_base, a.seg_base) == (4, 0b1111, 0, 0)
    assert a.prog_size == spec.allocation.prog_size and alone.dram_bytes == a.seg_size
    assert spec.allocation.core_mask == 0b1000          # the loaded scenario is left as is
    report = run_scenario_iss(alone)
    assert report["exact"] and report["tenants"][0]["completed"] == 2


def test_phases_of_a_tenant_around_moves():
    # 10 inferences, 10 cycles apart: the 5th ends at 540, the 8th starts at 1170.
    t = {"latency_cycles": [100] * 5 + [300] * 2 + [100] * 3, "completed": 10}
    span = sum(t["latency_cycles"]) + 9 * 10
    t["throughput_ips"] = 10 * 100e6 / span
    p = mt.phases(t, 100.0, first_move=540, last_move=1000)
    assert (p["before_n"], p["during_n"], p["after_n"]) == (5, 2, 3)
    assert p["before_median_cycles"] == p["after_median_cycles"] == 100
    assert p["during_median_cycles"] == 300


def test_section_on_the_iss(tmp_path):
    run = _bench_module("run")
    assert run.main(["--out", str(tmp_path), "--only", "multitenant", "--backend", "iss",
                     "--scenarios", "two_tenants,reallocate", "--alone-inferences", "2"]) == 0
    r = json.loads((tmp_path / "results.json").read_text())["multitenant"]
    assert r["backend"] == "iss" and r["config"] == "small" and r["cores"] == 4
    # Once per model on the whole pool, and B's model on the one core B keeps.
    assert [(a["model"], a["cores"]) for a in r["alone"]] == [
        ("digits", 4), ("digits", 1), ("tiny_resnet", 4)]
    assert all(a["exact"] and a["inferences"] == 2 for a in r["alone"])
    two, realloc = r["scenarios"]
    assert two["split"] == "2 + 2" and realloc["split"] == "1->3->2 + 1"
    for s in (two, realloc):
        assert s["exact"] and all(t["exact"] for t in s["tenants"])
        ratios = [t["alone_median_cycles"] / t["median_cycles"] for t in s["tenants"]]
        assert s["stp"] == pytest.approx(sum(ratios), abs=1e-3)
        assert s["antt"] == pytest.approx(sum(1 / x for x in ratios) / len(ratios), abs=1e-3)
        assert s["fairness"] == pytest.approx(min(ratios) / max(ratios), abs=1e-3)
        alone = {a["model"]: a for a in r["alone"] if a["cores"] == 4}
        sequential = sum(t["inferences"] * alone[t["model"]]["cycles_per_inference"]
                         for t in s["tenants"])
        assert s["spatial_vs_timeshared"] == pytest.approx(sequential / s["total_cycles"],
                                                           abs=1e-3)
        assert 0 < s["all_busy_fraction"] <= 1
    moves = realloc["reallocation"]["moves"]
    assert [(m["tenant"], m["after"], m["cores"]) for m in moves] == [("A", 2, 3), ("A", 4, 2)]
    assert all(m["link_ms"] > 0 and m["move_cycles"] >= 0 for m in moves)
    b = realloc["reallocation"]["others"]["B"]
    # The ISS models no contention: B's latency is the same in every phase.
    assert b["before_n"] + b["during_n"] + b["after_n"] == 18
    assert b["before_median_cycles"] == b["during_median_cycles"] == b["median_cycles"]
    assert b["alone_own_cores_median_cycles"] == b["median_cycles"]
    text = (tmp_path / "results.md").read_text()
    assert "## Multi-tenant" in text and "| two_tenants | 2 + 2 |" in text
    assert "Re-allocation in reallocate" in text
