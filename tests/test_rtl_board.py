"""The board top of the ``ulx3s`` configuration on Verilator, driven through its UART pins
only by the host code a board runs (SerialBus over a simulated line): the digits CNN runs as
a one-tenant scenario and its outputs match the golden model bit for bit.

One scenario run serves the first three tests (a module fixture): the board top is built once
(cached under build/rtl/board_top-<hash>), and the run also opens the link as a host of
another configuration, which the bridge's INFO must make it refuse. The last test runs the
cocotb test of this file, :func:`silent_line`, on the same build: a read from a line that
stays silent is a BusError after the transport's bounded wait, not a hang.
"""

import pathlib
import re

import cocotb
import pytest
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles
from cocotb_tools.runner import get_results

from test_rtl_accelerator import assert_all_exact
from vdla import host_link
from vdla.config import get_config
from vdla.hw.sim_board import DIVISOR
from vdla.host_link import Command
from vdla.sim.bus import BusError
from vdla.sim.cocotb_bus import PERIOD_NS
from vdla.sim.cocotb_uart import CocotbUartTransport
from vdla.sim.rtl_build import get_build
from vdla.sim.rtl_scenario import run_scenario_rtl
from vdla.sim.scenario_file import load_scenario
from vdla.sim.serial_bus import LinkClient

pytestmark = pytest.mark.rtl

ROOT = pathlib.Path(__file__).resolve().parent.parent
DIGITS = ROOT / "models" / "digits" / "digits_qdq.onnx"
CONFIG = get_config("ulx3s")
INFERENCES = 2
SCENARIO = f"""\
description = "the digits CNN on one core of the board top, over its UART"
config = "{CONFIG.name}"

[[tenant]]
name = "digits"
model = "{DIGITS.as_posix()}"
cores = 1
inferences = {INFERENCES}
seed = 3
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("board") / "digits.toml"
    path.write_text(SCENARIO)
    scenario = load_scenario(path)
    report = run_scenario_rtl(scenario, top="board_top", log=lambda message: None)
    sim, link = report["simulator"], report["link"]
    print(f"board top: {sim['sim_cycles']} cycles in {sim['wall_seconds']} s "
          f"({sim['cycles_per_second']} cycles/s); {link['bytes_sent']} bytes sent, "
          f"{link['bytes_received']} received at {link['divisor']} cycles a bit")
    return scenario, report


def test_digits_cnn_through_the_uart_matches_the_golden_model(run):
    scenario, report = run
    assert report["backend"] == "rtl-uart"
    assert_all_exact(report)
    digits, = report["tenants"]
    assert digits["completed"] == digits["compared"] == INFERENCES
    assert digits["exact_per_inference"] == [True] * INFERENCES
    assert len(digits["latency_cycles"]) == INFERENCES


def test_program_and_weights_crossed_the_line(run):
    scenario, report = run
    spec, link = scenario.tenants[0], report["link"]
    # Every request is framed: at least the weights and the instruction words went out in
    # WRITE_MEM / WRITE_REG payloads, and every response begins with SYNC and a status.
    assert link["bytes_sent"] > len(spec.program.weights) + 16 * len(spec.program.code)
    # Two INFO answers at least (the refused host's and the scenario's).
    assert link["bytes_received"] > 2 * (4 + host_link.WORD_BYTES * host_link.INFO_WORDS)
    # At 10 bit times a byte the line alone took this many cycles.
    line_cycles = 10 * link["divisor"] * (link["bytes_sent"] + link["bytes_received"])
    assert report["simulator"]["sim_cycles"] > line_cycles


def test_a_host_of_another_configuration_is_refused(run):
    """The bridge answered INFO with the built configuration's hash, and the host, whose
    configuration hashes differently, refused it (BusError, one line)."""
    scenario, report = run
    built = scenario.config.full_hash()
    refused = report["link"]["refused_other_config"]
    assert refused is not None
    match = re.fullmatch(rf"bridge speaks version {host_link.VERSION} for configuration hash "
                         rf"{built}, not version {host_link.VERSION} for "
                         rf"{scenario.config.name} \(([0-9a-f]{{16}})\)", refused)
    assert match, refused
    assert match[1] != built


#: Cycles the transport waits for a byte in :func:`silent_line` (an INFO answer takes ~1k).
IDLE_CYCLES = 5000


@cocotb.test()
async def silent_line(dut):
    """Held in reset the bridge never answers: INFO ends in BusError after IDLE_CYCLES.
    Out of reset, the same transport gets the answer."""
    Clock(dut.clk, PERIOD_NS, unit="ns").start()
    transport = CocotbUartTransport(dut, DIVISOR, PERIOD_NS, idle_cycles=IDLE_CYCLES)
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    started = transport.now()
    try:
        await LinkClient(transport).call(Command.INFO)
    except BusError as error:
        assert str(error) == f"UART: 0 of 2 bytes, then none for {IDLE_CYCLES} cycles"
    else:
        raise AssertionError("INFO was answered by a top held in reset")
    waited = transport.now() - started
    request = 10 * DIVISOR * transport.sent
    assert request + IDLE_CYCLES <= waited <= request + IDLE_CYCLES + 10, waited
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    transport.clear()
    words = await LinkClient(transport).call(Command.INFO)
    assert words == host_link.info_words(CONFIG)


def test_a_silent_line_is_a_bus_error_not_a_hang(tmp_path):
    rtl = get_build(CONFIG, "board_top")
    results = rtl.test(pathlib.Path(__file__).stem, test_dir=tmp_path,
                       log_file=tmp_path / "sim.log")
    assert get_results(results) == (1, 0), (tmp_path / "sim.log").read_text()[-2000:]
