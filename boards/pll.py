"""The boards' PLLs, as the FPGA projects' own calculators write them.

``ecppll`` (Project Trellis) and ``icepll`` (Project IceStorm) know each PLL's divider ranges
and VCO limits and emit a Verilog module named ``pll``; both ship with the YoWASP nextpnr
packages. :func:`make_pll` runs the one for the family and returns that module's text and the
frequencies it reaches, which may differ from the ones asked for; the board top instantiates
the module (``Instance("pll", ...)``) and adds the text to the build.

The ECP5's EHXPLLL has secondary outputs (``CLKOS``, ``CLKOS2``, ``CLKOS3``) from the same
VCO as the primary one; ``ecppll --clkout1 ...`` sets them. A board uses one for a second
clock domain (the ULX3S's SDRAM controller at 50 MHz next to the 100 MHz cores). The iCE40's
``SB_PLL40_PAD`` has one output only.
"""

import dataclasses
import math
import os
import re
import subprocess
import tempfile

from .toolflow import ToolError, find_tool

__all__ = ["Pll", "make_pll", "FAMILIES", "SECONDARY_OUTPUTS"]

#: Family -> (tool, its arguments for input and output MHz and the output file, the ports of
#: the module it writes: clock in, clock out, lock).
FAMILIES = {
    "ecp5": ("yowasp-ecppll", lambda fin, fout: ["-i", f"{fin:g}", "-o", f"{fout:g}",
                                                 "-f", "pll.v"],
             ("clkin", "clkout0", "locked")),
    # -p: SB_PLL40_PAD, the only PLL the iCE40UP5K can drive from its clock pin.
    "ice40": ("yowasp-icepll", lambda fin, fout: ["-i", f"{fin:g}", "-o", f"{fout:g}", "-p",
                                                  "-m", "-f", "pll.v"],
              ("clock_in", "clock_out", "locked")),
}
#: Family -> how many secondary outputs its PLL has (``ecppll``'s ``--clkout1..3``).
SECONDARY_OUTPUTS = {"ecp5": 3, "ice40": 0}
_ACHIEVED = {"ecp5": r"clkout{n} frequency: ([0-9.a-z]+) MHz",
             "ice40": r"Achieved output frequency:\s+([0-9.]+) MHz"}


@dataclasses.dataclass(frozen=True)
class Pll:
    """A PLL module: its Verilog, its port names and the output frequencies it reaches
    (``secondary_mhz``: those of the secondary outputs, in order, ``secondary_ports`` their
    port names)."""
    family: str
    verilog: str
    input_mhz: float
    output_mhz: float
    ports: tuple
    secondary_mhz: tuple = ()
    secondary_ports: tuple = ()

    def instance_ports(self, clk_in, clk_out, locked, *secondary):
        """Keyword arguments of ``Instance("pll", ...)`` for these signals; ``secondary``:
        one signal per secondary output, or none to leave them all unconnected."""
        if secondary and len(secondary) != len(self.secondary_ports):
            raise ValueError(f"The PLL has {len(self.secondary_ports)} secondary output(s), "
                             f"not {len(secondary)}")
        port_in, port_out, port_lock = self.ports
        return {f"i_{port_in}": clk_in, f"o_{port_out}": clk_out, f"o_{port_lock}": locked,
                **{f"o_{port}": clk for port, clk in zip(self.secondary_ports, secondary)}}


def _secondary_arguments(family, secondary_mhz):
    limit = SECONDARY_OUTPUTS[family]
    if len(secondary_mhz) > limit:
        raise ValueError(f"The {family} PLL has {limit} secondary output(s), "
                         f"not {len(secondary_mhz)}")
    arguments = []
    for n, mhz in enumerate(secondary_mhz, 1):
        if not isinstance(mhz, (int, float)) or isinstance(mhz, bool) or not mhz > 0:
            raise ValueError(f"Secondary output frequency must be a positive number of MHz, "
                             f"not {mhz!r}")
        arguments += [f"--clkout{n}", f"{mhz:g}"]
    return arguments


def _reached(family, text, n, tool):
    """The frequency ``tool`` says output ``n`` reaches, in MHz."""
    found = re.search(_ACHIEVED[family].format(n=n), text)
    value = float(found.group(1)) if found else math.nan
    if not math.isfinite(value) or value <= 0:
        raise ToolError(f"{tool} did not say which frequency output {n} reached"
                        if not found else f"{tool} found no divider for output {n} "
                        f"({found.group(1)} MHz)")
    return value


def make_pll(family, input_mhz, output_mhz, *, secondary_mhz=()):
    """The PLL of ``family`` ("ecp5" or "ice40") from ``input_mhz`` as near ``output_mhz``
    as it can get, with secondary outputs as near ``secondary_mhz`` (a sequence of MHz, ECP5
    only) as the shared VCO allows. Raises :class:`~.toolflow.ToolError` when the tool finds
    no setting, :class:`ValueError` for more secondary outputs than the PLL has."""
    tool, arguments, ports = FAMILIES[family]
    secondary_mhz = tuple(secondary_mhz)
    command = [find_tool(tool), *arguments(input_mhz, output_mhz),
               *_secondary_arguments(family, secondary_mhz)]
    # The WebAssembly tools see only their working folder.
    with tempfile.TemporaryDirectory(prefix="vdla-pll-") as folder:
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True,
                              env=dict(os.environ))
        path = os.path.join(folder, "pll.v")
        if done.returncode or not os.path.exists(path):
            message = (done.stderr or done.stdout).strip().splitlines()
            raise ToolError(f"{tool} found no PLL for {output_mhz:g} MHz from "
                            f"{input_mhz:g} MHz: {message[-1] if message else 'no output'}")
        with open(path) as f:
            verilog = f.read()
    text = verilog + done.stdout
    if family == "ice40":
        found = re.search(_ACHIEVED[family], text)
        if not found:
            raise ToolError(f"{tool} did not say which frequency it reached")
        reached = float(found.group(1))
    else:
        reached = _reached(family, text, 0, tool)
    secondary = tuple(_reached(family, text, n, tool) for n in range(1, len(secondary_mhz) + 1))
    secondary_ports = tuple(f"clkout{n}" for n in range(1, len(secondary_mhz) + 1))
    return Pll(family, verilog, float(input_mhz), reached, ports, secondary, secondary_ports)
