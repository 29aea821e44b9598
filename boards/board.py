"""What every board adds around :class:`~vdla.hw.board_top.BoardTop`: a PLL core clock, a
clean reset, the UART pins and the tenant LEDs.

A :class:`Board` describes one board (its amaranth-boards platform, PLL family, clock and
reset resources, UART rate, on-chip RAM and how its cores get their multipliers);
:class:`BoardDesign` is the top level a platform builds from it. The core clock comes from
the board's PLL (:mod:`.pll`), and the ``sync`` domain leaves reset only once the PLL has
locked and the reset button is released, through a reset synchronizer, so no flip-flop sees
a reset edge that is asynchronous to its clock.

The board top is converted on its own, with the ports its signature gives it, and
instantiated by name: the synthesized netlist of that one module, the very one placed, is
what the netlist check (:mod:`.netlist_check`) simulates, through the same ports as the RTL.
"""

import dataclasses

from amaranth.back import rtlil
from amaranth.build import ResourceError
from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Instance, Module, ResetSignal, \
    Signal
from amaranth.lib.cdc import ResetSynchronizer

from vdla.hw.accelerator import Accelerator
from vdla.hw.board_top import BoardTop
from vdla.hw.uart import uart_divisor

__all__ = ["Board", "BoardDesign", "NETLIST_TOP"]

#: Module name of the board top (:class:`~vdla.hw.board_top.BoardTop`) in the build.
NETLIST_TOP = "vdla_board_top"


@dataclasses.dataclass(frozen=True)
class Board:
    """One board.

    Parameters
    ----------
    name : str
        The ``BOARD=`` name.
    platform : type
        Its amaranth-boards platform class.
    family : str
        PLL and tool family: "ecp5" or "ice40".
    config : str
        Name of the accelerator configuration it builds by default.
    clock : str
        The oscillator's clock resource.
    clock_direct : bool
        Whether the PLL takes the clock pin itself (iCE40's SB_PLL40_PAD) rather than the
        input buffer's output.
    reset : str
        The reset button's resource (pressed = reset).
    baud : int
        UART bit rate of the host link.
    ram_bytes : int
        On-chip RAM serving as the accelerator's DRAM.
    multipliers : callable
        ``multipliers(config)`` -> per core ``(PE array, post-processing)`` implementations.
    synth_opts : str
        Extra options of Yosys's ``synth_<family>``.
    programmer : tuple
        openFPGALoader's arguments naming the board (before the bitstream).
    bitstream : str
        The bitstream file's extension.
    """
    name: str
    platform: type
    family: str
    config: str
    clock: str
    clock_direct: bool
    reset: str
    baud: int
    ram_bytes: int
    multipliers: object
    synth_opts: str
    programmer: tuple
    bitstream: str


class BoardDesign(Elaboratable):
    """The top level of ``board`` for ``config`` at ``pll``'s frequency.

    Parameters
    ----------
    board : :class:`Board`
    config : :class:`vdla.config.Config`
    pll : :class:`.pll.Pll`
        The board's PLL (its Verilog is added to the build by :mod:`.synth`).
    ram_bytes : int, optional
        On-chip RAM size (default: the board's).
    """

    def __init__(self, board, config, pll, ram_bytes=None):
        self.board, self.config, self.pll = board, config, pll
        self.divisor = uart_divisor(pll.output_mhz * 1e6, board.baud)
        accelerator = Accelerator(config, multipliers=board.multipliers(config))
        self.top = BoardTop(config, divisor=self.divisor,
                            ram_bytes=ram_bytes or board.ram_bytes, accelerator=accelerator)

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = sync = ClockDomain()
        clk_in = platform.request(self.board.clock, 0, dir="-" if self.board.clock_direct
                                  else "i")
        locked, clk = Signal(), Signal()
        m.submodules.pll = Instance("pll", **self.pll.instance_ports(
            clk_in.io if self.board.clock_direct else clk_in.i, clk, locked))
        m.d.comb += sync.clk.eq(clk)
        button = platform.request(self.board.reset, 0)
        m.submodules.reset_sync = ResetSynchronizer(~locked | button.i, domain="sync")

        platform.add_file(f"{NETLIST_TOP}.il", rtlil.convert(self.top, name=NETLIST_TOP))
        uart = platform.request("uart", 0)
        leds = Signal(len(self.top.leds))
        m.submodules.top = Instance(
            NETLIST_TOP, i_clk=ClockSignal(), i_rst=ResetSignal(), i_uart_rx=uart.rx.i,
            o_uart_tx=uart.tx.o, i_uart_cycles_per_bit=self.divisor, o_leds=leds,
            o_irq=Signal(len(self.top.irq)))
        for k, led in enumerate(self._leds(platform)):
            m.d.comb += led.o.eq(leds[k])
        return m

    def _leds(self, platform):
        """As many of the board's LEDs as there are tenant state bits."""
        leds = []
        for k in range(len(self.top.leds)):
            try:
                leds.append(platform.request("led", k))
            except ResourceError:   # fewer LEDs than tenants: the first tenants are shown
                break
        return leds
