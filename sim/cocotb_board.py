"""cocotb test module: a scenario (:mod:`.scenario`) on the Verilator-built board top
(:func:`vdla.hw.sim_board.sim_board_top`), driven through its UART pins only.

The host is the one a board runs: :class:`~.serial_bus.SerialBus` over
:class:`~.cocotb_uart.CocotbUartTransport`, so program, registers, weights, inputs and
outputs all cross the simulated line as host-link frames, and the bridge's framing is tested
against the built gateware. Only the ports ``clk``, ``rst``, ``uart_rx``, ``uart_tx`` (and
``uart_cycles_per_bit``, where the top has it) are touched, so a synthesized netlist of the
same top runs under this module unchanged. A top with SDRAM (:mod:`vdla.hw.sim_board_sdram`)
also has ``sdram_clk`` and ``sdram_rst``, driven at the SDRAM's own period and reset together
with ``rst``, and ``sdram_init_done``, which the host waits for before it opens the line.

Driven by :mod:`vdla.sim.rtl_scenario` like :mod:`.cocotb_accel` (``VDLA_ACCEL_JOB``: the
job directory with ``job.json`` and ``scenario.pkl``; ``report.json`` and, when asked for,
``dram.npy`` come back). Before the scenario the host opens the link twice: once with a
configuration that differs from the built one, which the bridge's INFO must make it refuse
(the refusal is part of the report), then with the scenario's own.
"""

import json
import os
import pathlib
import pickle
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout

from vdla.hw.sim_board import DIVISOR, RAM_BYTES
from vdla.hw.sim_board_sdram import SDRAM_BYTES, SDRAM_PERIOD_NS

from .bus import BusError
from .cocotb_bus import PERIOD_NS
from .cocotb_uart import CocotbUartTransport
from .scenario import run_scenario
from .serial_bus import SerialBus


def _other(config):
    """A configuration the built top must refuse: ``config`` with twice the instruction
    memory (a hardware parameter, so a different build)."""
    return config.replace(imem_depth=2 * config.imem_depth)


async def _refusal(transport, config, ram_bytes):
    """Open the link as a host of another configuration; the bridge's error message."""
    try:
        await SerialBus(transport, _other(config), ram_bytes).open()
    except BusError as error:
        return str(error)
    raise BusError("the bridge accepted a host of another configuration")


#: ``sdram`` cycles the SDRAM's power-up sequence may take (it takes about 21k).
SDRAM_INIT_CYCLES = 40_000


async def _reset(dut):
    """Hold every domain of the top in reset for 4 cycles of its slowest clock."""
    sdram = hasattr(dut, "sdram_clk")
    if sdram:
        Clock(dut.sdram_clk, SDRAM_PERIOD_NS, unit="ns").start()
        dut.sdram_rst.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.sdram_clk if sdram else dut.clk, 4)
    dut.rst.value = 0
    if sdram:
        dut.sdram_rst.value = 0
        await with_timeout(_sdram_init(dut), SDRAM_INIT_CYCLES * SDRAM_PERIOD_NS, "ns")


async def _sdram_init(dut):
    while not dut.sdram_init_done.value:
        await RisingEdge(dut.sdram_clk)


@cocotb.test()
async def run_job(dut):
    job_dir = pathlib.Path(os.environ["VDLA_ACCEL_JOB"])
    job = json.loads((job_dir / "job.json").read_text())
    ram_bytes = job.get("ram_bytes") or (SDRAM_BYTES if hasattr(dut, "sdram_clk") else
                                         RAM_BYTES)
    with open(job_dir / "scenario.pkl", "rb") as f:
        scenario = pickle.load(f)
    Clock(dut.clk, PERIOD_NS, unit="ns").start()
    transport = CocotbUartTransport(dut, DIVISOR, PERIOD_NS)
    await _reset(dut)
    await ClockCycles(dut.clk, 2)
    transport.clear()
    lines = []

    def log(message):
        lines.append(message)
        dut._log.info("%s", message)

    bus = SerialBus(transport, scenario.config, ram_bytes)
    bus.backend = "rtl-uart"
    wall = time.perf_counter()
    started = bus.now()
    refused = None
    try:
        refused = await _refusal(transport, scenario.config, ram_bytes)
        await bus.open()
        report = await run_scenario(scenario, bus, log, job.get("keep_outputs", False))
    except Exception as error:          # reported to the parent as one line, not a traceback
        report = {"error": f"{type(error).__name__}: {error}"}
    wall = time.perf_counter() - wall
    cycles = bus.now() - started
    report["simulator"] = {"sim_cycles": cycles, "wall_seconds": round(wall, 2),
                           "cycles_per_second": round(cycles / wall) if wall else 0}
    report["link"] = {"divisor": DIVISOR, "ram_bytes": ram_bytes,
                      "bytes_sent": transport.sent, "bytes_received": transport.received,
                      "refused_other_config": refused}
    report["log"] = lines
    if job.get("dram_dump") and "error" not in report:
        # Read back over the line too (the RAM is inside the top); not counted above.
        try:
            dram = await bus.read_dram(0, min(job["dram_bytes"], ram_bytes))
            np.save(job_dir / "dram.npy", dram)
        except BusError as error:
            report["error"] = f"reading DRAM back: {error}"
    (job_dir / "report.json").write_text(json.dumps(report))
