"""The board top as the simulators build it: :class:`~.board_top.BoardTop` made from a
configuration alone, so that the Verilator build (``vdla.sim.rtl_build.TOPS``) and, later, a
synthesized netlist of the same top are one design with one UART speed and one RAM size.

The testbench (``vdla.sim.cocotb_board``) reads :data:`DIVISOR` and :data:`RAM_BYTES` from
here, so the host's end of the line and its idea of the DRAM match what was built.
"""

from .board_top import BoardTop
from .uart import MIN_DIVISOR

__all__ = ["DIVISOR", "RAM_BYTES", "sim_board_top"]

#: Clock cycles per UART bit: the fewest the receiver accepts, so a byte is 40 cycles and a
#: simulated line moves as much data per simulated cycle as it can.
DIVISOR = MIN_DIVISOR
#: On-chip RAM as DRAM. The digits CNN's tenant needs a 24 KiB segment on ``ulx3s`` (its
#: weights, tensors and scratch, rounded up to 4 KiB); 32 KiB holds it and is what one
#: ECP5-85F can spare next to the ``ulx3s`` cores' buffers (``boards/ooc.py`` synthesizes the
#: same size). A scenario needing more is refused by the scenario runner, in one line.
RAM_BYTES = 32 * 1024


def sim_board_top(config):
    """The :class:`~.board_top.BoardTop` of ``config`` with :data:`DIVISOR` and
    :data:`RAM_BYTES` (the bridge's idle timeout is its default)."""
    return BoardTop(config, divisor=DIVISOR, ram_bytes=RAM_BYTES)
