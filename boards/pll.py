"""The boards' PLLs, as the FPGA projects' own calculators write them.

``ecppll`` (Project Trellis) and ``icepll`` (Project IceStorm) know each PLL's divider ranges
and VCO limits and emit a Verilog module named ``pll``; both ship with the YoWASP nextpnr
packages. :func:`make_pll` runs the one for the family and returns that module's text and the
frequency it reaches, which may differ from the one asked for; the board top instantiates
the module (``Instance("pll", ...)``) and adds the text to the build.
"""

import dataclasses
import os
import re
import subprocess
import tempfile

from .toolflow import ToolError, find_tool

__all__ = ["Pll", "make_pll", "FAMILIES"]

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
_ACHIEVED = {"ecp5": r"clkout0 frequency: ([0-9.]+) MHz",
             "ice40": r"Achieved output frequency:\s+([0-9.]+) MHz"}


@dataclasses.dataclass(frozen=True)
class Pll:
    """A PLL module: its Verilog, its port names and the output frequency it reaches."""
    family: str
    verilog: str
    input_mhz: float
    output_mhz: float
    ports: tuple

    def instance_ports(self, clk_in, clk_out, locked):
        """Keyword arguments of ``Instance("pll", ...)`` for these signals."""
        port_in, port_out, port_lock = self.ports
        return {f"i_{port_in}": clk_in, f"o_{port_out}": clk_out, f"o_{port_lock}": locked}


def make_pll(family, input_mhz, output_mhz):
    """The PLL of ``family`` ("ecp5" or "ice40") from ``input_mhz`` as near ``output_mhz``
    as it can get. Raises :class:`~.toolflow.ToolError` when the tool finds no setting."""
    tool, arguments, ports = FAMILIES[family]
    command = [find_tool(tool), *arguments(input_mhz, output_mhz)]
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
    found = re.search(_ACHIEVED[family], verilog + done.stdout)
    if not found:
        raise ToolError(f"{tool} did not say which frequency it reached")
    return Pll(family, verilog, float(input_mhz), float(found.group(1)), ports)
