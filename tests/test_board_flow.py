"""The whole board flow on a small configuration, as ``make synth`` runs it: the ULX3S board
top of a one-core accelerator (8x1 PE array on DSP blocks) through Yosys, nextpnr's pack
check, placement and routing, and ecppack, to a bitstream and its report.

The netlist check (the synthesized netlist running the digits CNN in Verilator) takes longer
than the test suite can spend on a gate-level build: it runs in ``make synth``, and here in
the study marked slow. The full ``ulx3s`` configuration is ``make synth BOARD=ulx3s``.
"""

import json

import pytest

from vdla.boards import netlist_check, synth
from vdla.config import get_config

pytestmark = pytest.mark.synth

#: One core of 8 inputs x 1 output channel (the ``icebreaker`` core) and one tenant.
CONFIG = get_config("icebreaker").replace(name="smoke", tenants=1, clock_mhz=50.0)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("ulx3s-smoke")
    lines = []
    # On-chip RAM: the netlist check below runs the board top with its RAM inside.
    report = synth.build(synth.get_board("ulx3s"), CONFIG, out, memory="bram", check=False,
                         progress=lines.append)
    return out, report, lines


def test_a_bitstream_and_its_report(built):
    out, report, lines = built
    bitstream = out / "top.bit"
    assert bitstream.is_file() and bitstream.stat().st_size > 100_000
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    assert report["timing_met"] and min(report["fmax_mhz"].values()) >= report["clock_mhz"]
    assert report["clock_mhz"] == 50.0
    # nextpnr's utilisation: the DSP blocks of one 8x1 PE array and its post-processing.
    assert report["utilisation"]["MULT18X18D"][0] >= CONFIG.icp * CONFIG.ocp
    assert report["peak_gops"] == 2 * CONFIG.icp * CONFIG.ocp * 50.0 / 1000
    assert report["netlist_check"] is None
    assert "Fmax per clock" in (out / "report.md").read_text()
    assert any(line.startswith("seed 1: ") for line in lines)


@pytest.mark.slow
def test_the_placed_netlist_runs_the_model_exactly(built):
    out, report, lines = built
    summary = netlist_check.check(synth.get_board("ulx3s"), CONFIG, out,
                                  progress=lines.append)
    assert summary["exact"] == summary["completed"] == summary["inferences"] >= 1
    assert summary["faults"] == []
