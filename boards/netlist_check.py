"""The netlist a board build places, simulated against the golden model.

Yosys's synthesis is checked, not trusted: the open flow has been seen to miscompile DSP
packing (TOOLCHAIN.md). :mod:`.synth` writes the board top's module (``vdla_board_top``) out
of the very design it places, as gates: LUTs, carry chains, flip-flops, block RAMs and DSPs
of the family. :func:`check` builds that netlist with the family's cell models
(:mod:`.cell_models`) in Verilator and runs the digits CNN on it through its UART pins, with
the same host code and testbench as the RTL's board top (:mod:`vdla.sim.cocotb_board`); the
scenario runner compares every output with the golden model, bit for bit.

The netlist's line is set to the testbench's bit time through the top's
``uart_cycles_per_bit`` input; everything else is as placed, the multipliers the board chose
(DSP blocks or LUTs) included.
"""

import pathlib
import time

from vdla.sim import rtl_build
from vdla.sim.rtl_scenario import RtlScenarioError, run_scenario_rtl
from vdla.sim.scenario import ScenarioError
from vdla.sim.scenario_file import load_scenario

from .board import NETLIST_TOP
from .cell_models import VERILATOR_WAIVERS, model_sources

__all__ = ["check", "build_model", "CheckError", "MODEL", "INFERENCES"]

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: The model the check runs, and how many inferences.
MODEL = ROOT / "models" / "digits" / "digits_qdq.onnx"
INFERENCES = 1


class CheckError(RuntimeError):
    """The netlist could not be built or simulated, or its outputs differ (one line)."""


def build_model(out, family, progress=print):
    """The Verilator build of ``out``'s ``netlist.v`` with ``family``'s cell models."""
    sim = pathlib.Path(out) / "netlist-sim"
    sim.mkdir(parents=True, exist_ok=True)
    sources, include = model_sources(family, sim)
    log = sim / "build.log"
    progress(f"netlist check: building the netlist in Verilator (log: {log})")
    try:
        return rtl_build.build_verilog(
            [pathlib.Path(out) / "netlist.v", *sources], NETLIST_TOP, sim,
            extra_args=[*VERILATOR_WAIVERS, f"-I{include}"], log_file=log,
            progress=lambda line: progress(f"netlist check: {line}"))
    except (RuntimeError, OSError, SystemExit) as error:
        raise CheckError(f"Verilator build of the netlist failed ({error}): "
                         f"{rtl_build.log_tail(log)} (log: {log})") from None


def check(board, config, out, *, ram_bytes=None, progress=print):
    """Run :data:`MODEL` on the netlist in ``out`` (a :mod:`.synth` build of ``board`` for
    ``config``); return a summary dict. Raises :class:`CheckError`."""
    started = time.monotonic()
    # The model must compile for the configuration before anything is built.
    path = pathlib.Path(out) / "netlist-check.toml"
    path.write_text(f'description = "the digits CNN on the synthesized netlist"\n\n'
                    f'[[tenant]]\nname = "digits"\nmodel = "{MODEL.as_posix()}"\n'
                    f'cores = 1\ninferences = {INFERENCES}\nseed = 5\n')
    try:
        scenario = load_scenario(path, config)
    except ScenarioError as error:
        raise CheckError(f"the check's model does not run on {config.name}: {error}") from None
    rtl = build_model(out, board.family, progress)
    built = time.monotonic() - started
    try:
        report = run_scenario_rtl(scenario, top="board_top", rtl=rtl,
                                  ram_bytes=ram_bytes or board.ram_bytes,
                                  log=lambda line: progress(f"netlist check: {line}"))
    except RtlScenarioError as error:
        raise CheckError(f"netlist simulation failed: {error}") from None
    tenant, = report["tenants"]
    summary = {
        "model": MODEL.name, "inferences": tenant["inferences"],
        "completed": tenant["completed"], "exact": tenant["exact"],
        "faults": tenant["faults"], "sim_cycles": report["simulator"]["sim_cycles"],
        "cycles_per_second": report["simulator"]["cycles_per_second"],
        "build_seconds": round(built, 1), "build_reused": rtl.reused,
        "seconds": round(time.monotonic() - started, 1),
    }
    if tenant["completed"] != INFERENCES or tenant["exact"] != INFERENCES or tenant["faults"]:
        raise CheckError(f"the netlist's outputs differ from the golden model: "
                         f"{tenant['exact']} of {INFERENCES} exact, {tenant['completed']} "
                         f"completed, faults {tenant['faults'] or 'none'}")
    return summary
