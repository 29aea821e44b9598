"""The board top with SDRAM as the simulators build it: :class:`~.board_top.BoardTop` without
on-chip RAM, its ``dram`` port through :class:`~.sdram_memory.SDRAMMemory` (the crossing to
the ``sdram`` domain and LiteDRAM's controller) to LiteDRAM's behavioural SDRAM model, the
same controller and crossing the ULX3S places, with the model in place of the PHY and pins.

Verilator builds it as ``vdla.sim.rtl_build.TOPS["board_top_sdram"]``; the testbench
(``vdla.sim.cocotb_board``) drives the two domains' clocks and resets (``clk``/``rst`` and
``sdram_clk``/``sdram_rst``) at different periods and waits for ``sdram_init_done`` (the
SDRAM's power-up sequence) before the host opens the line, as a host on a board opens it
long after the ~400 us the sequence takes.
"""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .board_top import BoardTop
from .sdram_memory import SDRAMMemory
from .sim_board import DIVISOR

__all__ = ["SDRAM_PERIOD_NS", "SDRAM_BYTES", "SimBoardSDRAM", "sim_board_sdram_top"]

#: Period of the ``sdram`` clock in simulation: 50 MHz, the clock the core is generated for
#: (the ``sync`` clock runs at the testbench's own period, 10 ns).
SDRAM_PERIOD_NS = 20
#: The DRAM the testbench's host assumes unless told otherwise: the ULX3S chip's 32 MB
#: (:attr:`SimBoardSDRAM.ram_bytes` is the built core's).
SDRAM_BYTES = 32 << 20


class SimBoardSDRAM(wiring.Component):
    """``BoardTop(ram_bytes=0)`` and the SDRAM behind its ``dram`` port.

    Parameters
    ----------
    top : :class:`~.board_top.BoardTop`
        Built with ``ram_bytes=0``.
    core : :class:`~.sdram_controller.LiteDRAMCore`
        A simulation core (LiteDRAM's SDRAM model, no pins) whose AXI IDs are as wide as the
        board top's ``dram`` IDs.
    verilog : path
        Its Verilog, which the Verilator build compiles with the converted design.

    Members
    -------
    uart_rx, uart_tx, uart_cycles_per_bit, leds, irq
        As :class:`~.board_top.BoardTop`'s.
    sdram_init_done : ``Out(1)``
        The SDRAM's power-up sequence has run (``sdram`` domain).
    """

    def __init__(self, top, core, verilog):
        if not isinstance(top, BoardTop) or "dram" not in top.signature.members:
            raise TypeError(f"Top must be a BoardTop without on-chip RAM, not {top!r}")
        if core.has_pads:
            raise ValueError(f"Core {core.module} drives SDRAM pins; simulation needs a core "
                             f"with LiteDRAM's SDRAM model (generate it with sim=True)")
        self.top = top
        self.sdram = SDRAMMemory(self.top.dram.signature, core, domain="sdram")
        #: Verilog the build adds to the converted design (``vdla.sim.rtl_build``).
        self.extra_verilog = (verilog,)
        members = {name: member for name, member in self.top.signature.members.items()
                   if name != "dram"}
        super().__init__({**members, "sdram_init_done": Out(1)})

    @property
    def ram_bytes(self):
        """The bytes the host reaches: the whole SDRAM."""
        return self.sdram.controller.core.size_bytes

    def elaborate(self, platform):
        m = Module()
        m.submodules.top, m.submodules.sdram = self.top, self.sdram
        for name in self.signature.members:
            if name == "sdram_init_done":
                continue
            if self.signature.members[name].flow == In:
                m.d.comb += getattr(self.top, name).eq(getattr(self, name))
            else:
                m.d.comb += getattr(self, name).eq(getattr(self.top, name))
        wiring.connect(m, self.top.dram, self.sdram.s_axi)
        m.d.comb += self.sdram_init_done.eq(self.sdram.init_done)
        return m


def sim_board_sdram_top(config):
    """The :class:`SimBoardSDRAM` of ``config``, its simulation core generated once by
    ``vdla.boards.sdram`` (LiteDRAM in its own environment) for the board top's ID width."""
    from vdla.boards import sdram
    top = BoardTop(config, divisor=DIVISOR, ram_bytes=0)
    core, verilog = sdram.load_core(sdram.generate(sdram.core_config(
        id_width=top.dram.signature.id_width, sim=True)))
    return SimBoardSDRAM(top, core, verilog)
