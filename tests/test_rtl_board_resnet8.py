"""ResNet-8 on the ULX3S board top with SDRAM on Verilator: the board's default configuration
(``ulx3s-8x4``: four cores of 8x4, four tenants, as ``vdla.boards.ulx3s.BOARD`` builds it),
its DRAM LiteDRAM's controller and SDRAM model (``vdla.sim.rtl_build.TOPS
["board_top_sdram"]``), driven through its UART pins only by the host code a board runs.

ResNet-8 (32x32x3 input, 10 classes, quantized as ``make demo`` quantizes it) runs as one
tenant on all four cores and must match the golden model bit for bit. Its DRAM segment
(weights, activations, inputs and outputs; the program goes to the on-chip instruction
memory) is several times the board's on-chip RAM, so it can only be in the SDRAM, the top's
one memory.

Slow: the first run builds the 4-core top in Verilator (cached under
build/rtl/board_top_sdram-<hash>), and the run moves the weights over a simulated line.
"""

import time

import numpy as np
import onnx
import pytest

from test_rtl_accelerator import assert_all_exact
from vdla.boards.ulx3s import BOARD
from vdla.compiler import zoo
from vdla.config import get_config
from vdla.sim.rtl_build import get_build
from vdla.sim.rtl_scenario import run_scenario_rtl
from vdla.sim.scenario_file import load_scenario

pytestmark = [pytest.mark.rtl, pytest.mark.slow]

#: The board's own configuration, unchanged (its tenants and its 50 MHz clock).
CONFIG = get_config(BOARD.config)
INFERENCES = 2
SDRAM_BYTES = 32 << 20


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("board-resnet8")
    onnx.save(zoo.resnet8(size=32, classes=10), folder / "resnet8.onnx")
    # sim/demo.py's calibration and input data, so this is the demo's model and samples.
    np.save(folder / "calib.npy",
            np.random.default_rng(1).standard_normal((8, 3, 32, 32)).astype(np.float32))
    np.save(folder / "inputs.npy", np.random.default_rng(2).standard_normal(
        (INFERENCES, 3, 32, 32)).astype(np.float32))
    path = folder / "resnet8.toml"
    path.write_text(f'description = "ResNet-8 on all cores of the ULX3S board top with SDRAM"'
                    f'\n\n[[tenant]]\nname = "resnet8"\nmodel = "resnet8.onnx"\n'
                    f'calib = "calib.npy"\ncores = {CONFIG.cores}\n'
                    f'inferences = {INFERENCES}\ninputs = "inputs.npy"\n')
    scenario = load_scenario(path, CONFIG)
    started = time.perf_counter()
    rtl = get_build(CONFIG, "board_top_sdram")
    print(f"\nVerilator model: {'reused' if rtl.reused else 'built'} in "
          f"{time.perf_counter() - started:.0f} s ({rtl.build_dir.name})")
    # No read-back of the DRAM: at 40 cycles a byte it would cost as much as the run.
    report = run_scenario_rtl(scenario, top="board_top_sdram", ram_bytes=SDRAM_BYTES,
                              log=lambda message: None)
    sim, link = report["simulator"], report["link"]
    resnet, = report["tenants"]
    print(f"ResNet-8 on {CONFIG.name}, board top with SDRAM: {sim['sim_cycles']} cycles in "
          f"{sim['wall_seconds']} s ({sim['cycles_per_second']} cycles/s); "
          f"{link['bytes_sent']} bytes sent, {link['bytes_received']} received; latency "
          f"{resnet['latency_cycles']} cycles, device {resnet['device_cycles']} cycles")
    return scenario, report


def test_resnet8_through_the_sdram_matches_the_golden_model(run):
    scenario, report = run
    spec, = scenario.tenants
    assert spec.allocation.core_mask == (1 << CONFIG.cores) - 1
    # Too large for the board's on-chip RAM: the SDRAM holds it.
    assert scenario.dram_bytes > BOARD.ram_bytes
    assert report["backend"] == "rtl-uart"
    assert report["config"] == BOARD.config
    assert_all_exact(report)
    resnet, = report["tenants"]
    assert resnet["completed"] == resnet["compared"] == INFERENCES
    assert resnet["exact_per_inference"] == [True] * INFERENCES
    assert resnet["faults"] == []
    assert report["link"]["ram_bytes"] == SDRAM_BYTES
