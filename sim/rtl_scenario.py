"""``vdla sim --backend rtl``: a scenario on the Verilator-simulated accelerator.

The accelerator of the scenario's configuration is built once (cached under
``build/rtl/accelerator-<hash>``, see :mod:`.rtl_build`); each call is one simulator launch
running :mod:`.cocotb_accel`, whose host is the same driver and scenario runner as the ISS
backend's. The report has the same fields as the ISS's, plus the simulator's speed. With
``top="board_top"`` the board top runs instead, driven over its UART by the serial host
(:mod:`.cocotb_board`; its report adds the bytes that crossed the line), and with
``top="board_top_sdram"`` the board top whose DRAM is LiteDRAM's controller and SDRAM model
(:mod:`vdla.hw.sim_board_sdram`), through the same testbench.
"""

import json
import pathlib
import pickle
import shutil
import sys
import tempfile

import numpy as np

from .rtl_build import BuildError, get_build, log_tail
from .scenario import write_report

__all__ = ["run_scenario_rtl", "RtlScenarioError"]

TEST_MODULE = "vdla.sim.cocotb_accel"
TOPLEVEL = "accelerator"
#: Top levels a scenario runs on (keys of :data:`.rtl_build.TOPS`) -> their test module: the
#: accelerator with the host on its AXI ports, or the board top driven over its UART.
TEST_MODULES = {TOPLEVEL: TEST_MODULE, "board_top": "vdla.sim.cocotb_board",
                "board_top_sdram": "vdla.sim.cocotb_board"}


class RtlScenarioError(RuntimeError):
    """The build or the simulator failed (one line, naming the log)."""


def run_scenario_rtl(scenario, report_path=None, *, dram_dump=False, keep_outputs=False,
                     build_dir=None, log=None, top=TOPLEVEL, rtl=None, ram_bytes=None):
    """Run ``scenario`` (a loaded :class:`~.scenario_file.Scenario`) on the RTL of ``top``
    (a key of :data:`TEST_MODULES`; ``"board_top"``: through the board's UART).

    ``rtl`` is a build to run instead of the RTL's own (:func:`.rtl_build.build_verilog`: a
    synthesized netlist of the same top); ``ram_bytes`` the board top's on-chip RAM, when it
    is not :data:`vdla.hw.sim_board.RAM_BYTES` (``"board_top_sdram"``: the DRAM the host
    reaches, by default :data:`vdla.hw.sim_board_sdram.SDRAM_BYTES`).

    Returns the report dict (written to ``report_path`` too when given); with
    ``dram_dump``, ``report["dram"]`` is the whole DRAM after the run (uint8 array, not
    written to the file); ``keep_outputs`` as in :func:`.scenario.run_scenario`. Raises
    :class:`RtlScenarioError` if the build or simulator fails.
    """
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    if top not in TEST_MODULES:
        raise RtlScenarioError(f"unknown top level {top!r}; known: {', '.join(TEST_MODULES)}")
    given = rtl
    try:
        rtl = rtl or get_build(scenario.config, top, build_dir)
    except BuildError as error:
        raise RtlScenarioError(str(error)) from None
    work = pathlib.Path(tempfile.mkdtemp(prefix="vdla-scenario-"))
    dram_bytes = -(-scenario.dram_bytes // 4096) * 4096
    (work / "job.json").write_text(json.dumps({"dram_bytes": dram_bytes,
                                               "dram_dump": bool(dram_dump),
                                               "keep_outputs": bool(keep_outputs),
                                               "ram_bytes": ram_bytes}))
    with open(work / "scenario.pkl", "wb") as f:
        pickle.dump(scenario, f)
    sim_log = work / "sim.log"
    on = ("the RTL" if top == TOPLEVEL else f"the RTL {top}") if given is None else \
        f"the build in {given.build_dir}"
    log(f"simulating {scenario.path} on {on} of configuration {scenario.config.name} "
        f"(log: {sim_log})")
    try:
        rtl.test(TEST_MODULES[top], test_dir=work, log_file=sim_log,
                 extra_env={"VDLA_ACCEL_JOB": str(work)})
    except (RuntimeError, SystemExit) as error:
        raise RtlScenarioError(f"simulator failed ({error}): {log_tail(sim_log)} "
                               f"(log: {sim_log})") from None
    report_file = work / "report.json"
    if not report_file.exists():
        raise RtlScenarioError(f"simulator wrote no report: {log_tail(sim_log)} "
                               f"(log: {sim_log})")
    report = json.loads(report_file.read_text())
    if "error" in report:
        raise RtlScenarioError(f"{scenario.path}: {report['error']} (log: {sim_log})")
    for line in report.pop("log", []):
        log(line)
    if report_path:
        write_report(report, report_path)
    if dram_dump:
        report["dram"] = np.load(work / "dram.npy")
    shutil.rmtree(work, ignore_errors=True)
    return report
