"""cocotb test module: a scenario (:mod:`.scenario`) on the Verilator-built
:class:`~vdla.hw.accelerator.Accelerator`.

Driven by :mod:`vdla.sim.rtl_scenario`, which pickles the loaded scenario into the job
directory (``VDLA_ACCEL_JOB``: ``job.json`` + ``scenario.pkl``) and reads back the report and,
when asked for, the whole DRAM after the run (for isolation checks). The host side is the
same async driver and scenario runner as on the ISS, over :class:`.cocotb_bus.CocotbBus`.
"""

import json
import os
import pathlib
import pickle
import time

import cocotb
import numpy as np
from cocotb.clock import Clock

from .cocotb_bus import PERIOD_NS, CocotbBus
from .scenario import run_scenario


@cocotb.test()
async def run_job(dut):
    job_dir = pathlib.Path(os.environ["VDLA_ACCEL_JOB"])
    job = json.loads((job_dir / "job.json").read_text())
    with open(job_dir / "scenario.pkl", "rb") as f:
        scenario = pickle.load(f)
    Clock(dut.clk, PERIOD_NS, unit="ns").start()
    bus = CocotbBus(dut, scenario.config, job["dram_bytes"])
    bus.backend = "rtl"
    await bus.reset()
    lines = []

    def log(message):
        lines.append(message)
        dut._log.info("%s", message)

    wall = time.perf_counter()
    started = bus.now()
    try:
        report = await run_scenario(scenario, bus, log, job.get("keep_outputs", False))
    except Exception as error:          # reported to the parent as one line, not a traceback
        report = {"error": f"{type(error).__name__}: {error}"}
    wall = time.perf_counter() - wall
    report["simulator"] = {"sim_cycles": bus.now() - started, "wall_seconds": round(wall, 2),
                           "cycles_per_second": round((bus.now() - started) / wall)
                           if wall else 0}
    report["log"] = lines
    (job_dir / "report.json").write_text(json.dumps(report))
    if job.get("dram_dump"):
        np.save(job_dir / "dram.npy", bus.snapshot())
