"""The board top with SDRAM on Verilator: :class:`~vdla.hw.board_top.BoardTop` without on-chip
RAM, its DRAM traffic through the AXI clock crossing (``sync`` at 10 ns -> ``sdram`` at 20 ns)
into LiteDRAM's generated controller and behavioural SDRAM model
(``vdla.sim.rtl_build.TOPS["board_top_sdram"]``), driven through its UART pins only by the
host code a board runs. A small CNN (the netlist check's) on the one-core ``smoke``
configuration of tests/test_board_flow.py must match the golden model bit for bit, its
weights, inputs and outputs all held in the SDRAM (the program in the on-chip instruction
memory).

Slow: the first run makes LiteDRAM's environment and its simulation core (build/sdram/) and
builds the top in Verilator (cached under build/rtl/board_top_sdram-<hash>).
"""

import re

import numpy as np
import pytest

from test_rtl_accelerator import assert_all_exact
from vdla.boards.netlist_check import check_model
from vdla.config import get_config
from vdla.sim.rtl_build import get_build
from vdla.sim.rtl_scenario import run_scenario_rtl
from vdla.sim.scenario_file import load_scenario

pytestmark = [pytest.mark.rtl, pytest.mark.slow]

#: One core of 8x1 and one tenant (tests/test_board_flow.py's).
CONFIG = get_config("icebreaker").replace(name="smoke", tenants=1, clock_mhz=50.0)
INFERENCES = 2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("board-sdram")
    model = check_model(folder / "check_qdq.onnx")
    path = folder / "check.toml"
    path.write_text(f'description = "a small CNN on the board top with SDRAM"\n\n'
                    f'[[tenant]]\nname = "check"\nmodel = "{model.as_posix()}"\n'
                    f'cores = 1\ninferences = {INFERENCES}\nseed = 5\n')
    scenario = load_scenario(path, CONFIG)
    report = run_scenario_rtl(scenario, top="board_top_sdram", ram_bytes=32 << 20,
                              dram_dump=True, log=lambda message: None)
    sim, link = report["simulator"], report["link"]
    print(f"board top with SDRAM: {sim['sim_cycles']} cycles in {sim['wall_seconds']} s "
          f"({sim['cycles_per_second']} cycles/s); {link['bytes_sent']} bytes sent, "
          f"{link['bytes_received']} received")
    return scenario, report


def test_the_build_holds_the_crossing_and_the_sdram_model():
    rtl = get_build(CONFIG, "board_top_sdram")
    text = rtl.verilog.read_text()
    header = re.search(r"^module board_top_sdram\((.*?)\);", text, re.M | re.S)
    assert header, "no board_top_sdram module"
    ports = set(re.findall(r"\w+", header[1]))
    assert {"clk", "rst", "sdram_clk", "sdram_rst", "sdram_init_done", "uart_rx",
            "uart_tx"} <= ports
    assert not any(port.startswith("dram__") for port in ports)    # the DRAM is inside
    # The converted design instantiates the generated core, built from its own Verilog.
    assert re.search(r"^\s*litedram_sim_[0-9a-f]{8} \w+ \(", text, re.M)
    assert any(path.name.startswith("litedram_sim_") for path in rtl.build_dir.parent.parent
               .joinpath("sdram").glob("*.v"))


def test_small_cnn_through_the_sdram_matches_the_golden_model(run):
    scenario, report = run
    assert report["backend"] == "rtl-uart"
    assert_all_exact(report)
    check, = report["tenants"]
    assert check["completed"] == check["compared"] == INFERENCES
    assert check["exact_per_inference"] == [True] * INFERENCES
    assert check["faults"] == []
    assert report["link"]["ram_bytes"] == 32 << 20


def test_the_weights_are_in_the_sdram(run):
    """Read back over the line after the run: the tenant's weights sit in the SDRAM where
    the program put them."""
    scenario, report = run
    spec = scenario.tenants[0]
    weights = np.asarray(spec.program.weights).tobytes()
    dram = report["dram"].tobytes()
    assert len(weights) > 0 and weights in dram
