"""The netlist a board build places, simulated against the golden model.

Yosys's synthesis is checked, not trusted: the open flow has been seen to miscompile DSP
packing (TOOLCHAIN.md). :mod:`.synth` writes the board top's module (``vdla_board_top``) out
of the very design it places, as gates: LUTs, carry chains, flip-flops, block RAMs and DSPs
of the family. :func:`check` builds that netlist with the family's cell models
(:mod:`.cell_models`) in Verilator and runs a small CNN on it through its UART pins, with the
same host code and testbench as the RTL's board top (:mod:`vdla.sim.cocotb_board`); the
scenario runner compares every output with the golden model, bit for bit.

The model (:func:`check_model`: convolutions, max pooling, global average pooling and a
dense layer, through post-processing's multipliers) has about 2 KB of weights, because at
gate level the time goes to the UART carrying them (the digits CNN's 19 KB take a million
cycles), and the C++ of a gate-level model is built at -O0: Verilator's C++ for a netlist of
tens of thousands of cells is hundreds of megabytes, and -O1 doubles its compile time.

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

__all__ = ["check", "check_model", "build_model", "CheckError", "INFERENCES"]

#: Inferences the check runs.
INFERENCES = 2
#: Make flags of the gate-level build (see the module's docstring).
MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O0 OPT_GLOBAL=-O0 OPT_SLOW=-O0"


class CheckError(RuntimeError):
    """The netlist could not be built or simulated, or its outputs differ (one line)."""


def check_model(path):
    """Write the check's int8 QDQ model to ``path`` (seeded: the same model every time)."""
    import numpy as np
    from vdla.compiler.quantize import quantize_model
    from vdla.compiler.zoo import GraphBuilder
    g = GraphBuilder("netlist_check", (3, 12, 12), seed=11)
    x = g.maxpool(g.conv_bn("input", 8, 3, 1), 2, 2, (0, 0, 0, 0))
    x = g.conv_bn(x, 16, 3, 1)
    model = g.build(g.gemm(g.flatten(g.global_avgpool(x)), 10))
    calib = np.random.default_rng(11).normal(0, 1, (8, 3, 12, 12)).astype(np.float32)
    quantize_model(model, calib, path)
    return path


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
            extra_args=[*VERILATOR_WAIVERS, f"-I{include}"], log_file=log, makeflags=MAKEFLAGS,
            progress=lambda line: progress(f"netlist check: {line}"))
    except (RuntimeError, OSError, SystemExit) as error:
        raise CheckError(f"Verilator build of the netlist failed ({error}): "
                         f"{rtl_build.log_tail(log)} (log: {log})") from None


def check(board, config, out, *, ram_bytes=None, progress=print):
    """Run :func:`check_model` on the netlist in ``out`` (a :mod:`.synth` build of ``board`` for
    ``config``); return a summary dict. Raises :class:`CheckError`."""
    started = time.monotonic()
    out = pathlib.Path(out).resolve()     # the scenario names the model from its own folder
    # The model must compile for the configuration before anything is built.
    model = check_model(pathlib.Path(out) / "netlist_check_qdq.onnx")
    path = pathlib.Path(out) / "netlist-check.toml"
    path.write_text(f'description = "a small CNN on the synthesized netlist"\n\n'
                    f'[[tenant]]\nname = "check"\nmodel = "{model.as_posix()}"\n'
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
        "model": model.name, "inferences": tenant["inferences"],
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
