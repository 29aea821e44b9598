"""What every board adds around :class:`~vdla.hw.board_top.BoardTop`: a PLL core clock, a
clean reset, the UART pins and the tenant LEDs.

A :class:`Board` describes one board (its amaranth-boards platform, PLL family, clock and
reset resources, UART rate, on-chip RAM and how its cores get their multipliers);
:class:`BoardDesign` is the top level a platform builds from it. The core clock comes from
the board's PLL (:mod:`.pll`), and the ``sync`` domain leaves reset only once the PLL has
locked and the reset button is released, through a reset synchronizer, so no flip-flop sees
a reset edge that is asynchronous to its clock.

A board with SDRAM (``Board.sdram``) may hold the accelerator's DRAM there rather than in
on-chip RAM (``memory="sdram"``): the board top is then built without RAM, and its ``dram``
port crosses to a second domain, ``sdram``, clocked by the PLL's secondary output at
:data:`SDRAM_MHZ`, into LiteDRAM's generated controller (:class:`~vdla.hw.sdram_memory.
SDRAMMemory`, the core from :mod:`.sdram`). That domain has its own reset synchronizer on
the same source (PLL not locked, or the button), so both domains leave reset cleanly, each
on its own clock.

The board top is converted on its own, with the ports its signature gives it, and
instantiated by name: the synthesized netlist of that one module, the very one placed, is
what the netlist check (:mod:`.netlist_check`) simulates, through the same ports as the RTL.
"""

import dataclasses

from amaranth.back import rtlil
from amaranth.build import ResourceError
from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Instance, Module, ResetSignal, \
    Signal
from amaranth.lib import wiring
from amaranth.lib.cdc import ResetSynchronizer

from vdla.hw.accelerator import Accelerator
from vdla.hw.board_top import BoardTop
from vdla.hw.sdram_memory import SDRAMMemory
from vdla.hw.uart import uart_divisor

__all__ = ["Board", "BoardDesign", "NETLIST_TOP", "MEMORIES", "SDRAM_MHZ", "sdram_core"]

#: Module name of the board top (:class:`~vdla.hw.board_top.BoardTop`) in the build.
NETLIST_TOP = "vdla_board_top"
#: Where the accelerator's DRAM can be: on-chip block RAM, or the board's SDRAM.
MEMORIES = ("bram", "sdram")
#: Clock of the SDRAM controller's domain (LiteX's ULX3S target runs its SDRAM at 50 MHz).
SDRAM_MHZ = 50.0


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
        On-chip RAM serving as the accelerator's DRAM (with ``memory="bram"``).
    multipliers : callable
        ``multipliers(config)`` -> per core ``(PE array, post-processing)`` implementations.
    synth_opts : str
        Extra options of Yosys's ``synth_<family>``.
    programmer : tuple
        openFPGALoader's arguments naming the board (before the bitstream).
    bitstream : str
        The bitstream file's extension.
    sdram : bool
        Whether the board has an SDRAM chip (resource ``sdram``) the design can use.
    memory : str
        Where the accelerator's DRAM is by default: one of :data:`MEMORIES`.
    configs : tuple
        Names of the other configurations its builds may take (``make synth CONFIG=...``).
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
    sdram: bool = False
    memory: str = "bram"
    configs: tuple = ()

    def runs(self, config_name):
        """Whether a build of this board may hold configuration ``config_name``."""
        return config_name in (self.config, *self.configs)


class BoardDesign(Elaboratable):
    """The top level of ``board`` for ``config`` at ``pll``'s frequency.

    Parameters
    ----------
    board : :class:`Board`
    config : :class:`vdla.config.Config`
    pll : :class:`.pll.Pll`
        The board's PLL (its Verilog is added to the build by :mod:`.synth`).
    ram_bytes : int, optional
        On-chip RAM size (default: the board's); not with ``memory="sdram"``.
    memory : str, optional
        One of :data:`MEMORIES` (default: the board's). ``"sdram"`` needs a board with SDRAM
        and a PLL with one secondary output (the ``sdram`` domain's clock).
    sdram : tuple, optional
        With ``memory="sdram"``: the core and the path of its Verilog
        (:func:`.sdram.load_core`); by default :func:`sdram_core` generates it.
    """

    def __init__(self, board, config, pll, ram_bytes=None, *, memory=None, sdram=None):
        memory = memory or board.memory
        if memory not in MEMORIES:
            raise ValueError(f"Memory must be one of {', '.join(MEMORIES)}, not {memory!r}")
        if memory == "sdram" and not board.sdram:
            raise ValueError(f"The {board.name} has no SDRAM; use memory=\"bram\"")
        if memory == "sdram" and len(pll.secondary_mhz) != 1:
            raise ValueError(f"SDRAM needs a PLL with one secondary output, not "
                             f"{len(pll.secondary_mhz)}")
        if memory == "sdram" and ram_bytes:
            raise ValueError("On-chip RAM and SDRAM exclude each other")
        self.board, self.config, self.pll, self.memory = board, config, pll, memory
        self.divisor = uart_divisor(pll.output_mhz * 1e6, board.baud)
        accelerator = Accelerator(config, multipliers=board.multipliers(config))
        self.top = BoardTop(config, divisor=self.divisor,
                            ram_bytes=0 if memory == "sdram" else ram_bytes or board.ram_bytes,
                            accelerator=accelerator)
        self.sdram = None
        if memory == "sdram":
            core, self.sdram_verilog = sdram or sdram_core(
                pll.secondary_mhz[0], self.top.dram.signature.id_width)
            self.sdram = SDRAMMemory(self.top.dram.signature, core, domain="sdram")

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = sync = ClockDomain()
        clk_in = platform.request(self.board.clock, 0, dir="-" if self.board.clock_direct
                                  else "i")
        locked, clk = Signal(), Signal()
        secondary = ()
        if self.sdram is not None:
            m.domains.sdram = sdram = ClockDomain("sdram")
            secondary = (sdram.clk,)
        m.submodules.pll = Instance("pll", **self.pll.instance_ports(
            clk_in.io if self.board.clock_direct else clk_in.i, clk, locked, *secondary))
        m.d.comb += sync.clk.eq(clk)
        button = platform.request(self.board.reset, 0)
        m.submodules.reset_sync = ResetSynchronizer(~locked | button.i, domain="sync")

        platform.add_file(f"{NETLIST_TOP}.il", rtlil.convert(self.top, name=NETLIST_TOP))
        uart = platform.request("uart", 0)
        leds = Signal(len(self.top.leds))
        dram = {}
        if self.sdram is not None:
            # One reset source, one synchronizer per domain (hw/axi_cdc.py's rule).
            m.submodules.sdram_reset_sync = ResetSynchronizer(~locked | button.i,
                                                              domain="sdram")
            platform.add_file(self.sdram_verilog.name, self.sdram_verilog.read_text())
            m.submodules.sdram = self.sdram
            dram = self._dram_ports(self.sdram.s_axi)
        m.submodules.top = Instance(
            NETLIST_TOP, i_clk=ClockSignal(), i_rst=ResetSignal(), i_uart_rx=uart.rx.i,
            o_uart_tx=uart.tx.o, i_uart_cycles_per_bit=self.divisor, o_leds=leds,
            o_irq=Signal(len(self.top.irq)), **dram)
        for k, led in enumerate(self._leds(platform)):
            m.d.comb += led.o.eq(leds[k])
        return m

    def _dram_ports(self, slave):
        """``Instance`` keyword arguments joining the board top's ``dram`` port (a master)
        to ``slave`` (an AXI4 slave's port of the same signature)."""
        ports = {}
        for name, member in self.top.dram.signature.members.items():
            direction = "o" if member.flow == wiring.Out else "i"
            ports[f"{direction}_dram__{name}"] = getattr(slave, name)
        return ports

    def _leds(self, platform):
        """As many of the board's LEDs as there are tenant state bits."""
        leds = []
        for k in range(len(self.top.leds)):
            try:
                leds.append(platform.request("led", k))
            except ResourceError:   # fewer LEDs than tenants: the first tenants are shown
                break
        return leds


def sdram_core(clock_mhz, id_width):
    """The ULX3S SDRAM's core for a controller clocked at ``clock_mhz`` (its timings are
    counted in that clock's cycles) with AXI IDs ``id_width`` bits wide: generated once by
    :mod:`.sdram` (LiteDRAM in its own environment), then reused. Returns the core and the
    path of its Verilog."""
    from . import sdram
    chip = sdram.ulx3s_chip()
    config = sdram.core_config(chip, sys_clk_hz=clock_mhz * 1e6, id_width=id_width)
    return sdram.load_core(sdram.generate(config, chip=chip))
