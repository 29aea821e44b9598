"""A LiteDRAM standalone core behind the accelerator's AXI4 port.

LiteDRAM's generator (``litedram.gen``, run by :mod:`vdla.boards.sdram`) writes a Verilog
module holding the whole SDRAM controller: the PHY (for an SDR chip on ECP5, ``GENSDRPHY``
with the pads' I/O registers and tristate buffers already instantiated), the bank machines,
the refresher, and an AXI4 user port at the width asked for. :class:`SDRAMController`
instantiates that module and adds the two things no library provides here:

- the power-up sequence. A standalone core without a CPU leaves the JEDEC init (CKE high,
  precharge all, two auto-refreshes, mode register) to its user, through DFII registers on a
  Wishbone control port. :class:`SDRAMInit` plays the sequence the generator itself wrote
  (its ``sdram_phy.h``, turned into register writes by :mod:`vdla.boards.sdram`), then hands
  the DFI to the controller and sets the core's ``init_done``; the core holds its user port
  (``awready``/``arready`` low) until then.
- the SDRAM clock pin. ``GENSDRPHY`` does not drive it: it comes out of an output DDR
  register, either from the controller's clock inverted (180 degrees, the default) or from a
  phase-shifted domain (LiteX's own ULX3S target uses a 90-degree PLL output).

The AXI4 members the core lacks (``*lock``, ``*cache``, ``*prot``, ``*qos``) are ignored;
addresses are cut to the core's width, so they wrap at the chip's size.
"""

import dataclasses

from amaranth.hdl import (Cat, ClockSignal, Const, DomainRenamer, Instance, Module,
                          ResetSignal, Signal)
from amaranth.lib import data, io, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .axi import AXI4Signature

__all__ = ["LiteDRAMCore", "InitWrite", "WishboneWriteSignature", "SDRAMInit",
           "SDRAMController", "PAD_PORTS"]

#: LiteDRAM core port (``sdram_<name>``) -> amaranth-boards ``SDRAMResource`` member. The
#: core drives the active-low pins at their pin level, so the raw ports are used (no
#: inversion), and it instantiates the pads' I/O registers itself (no Amaranth buffers).
PAD_PORTS = {"a": "a", "ba": "ba", "cas_n": "cas", "ras_n": "ras", "we_n": "we",
             "cs_n": "cs", "cke": "clk_en", "dm": "dqm", "dq": "dq"}


@dataclasses.dataclass(frozen=True)
class InitWrite:
    """One register write of the power-up sequence: the Wishbone word address, the value,
    and the clock cycles to wait after it (LiteDRAM's ``cdelay``), with what it does."""
    address: int
    value: int
    delay: int = 0
    comment: str = ""


@dataclasses.dataclass(frozen=True)
class LiteDRAMCore:
    """What the wrapper needs to know of one generated core.

    Parameters
    ----------
    module : str
        Verilog module name (the generator's ``--name``).
    ports : dict
        Port name -> (direction, width), as the generated Verilog declares them.
    init : tuple of InitWrite
        The power-up sequence.
    axi_prefix : str
        Prefix of the AXI user port's ports (``user_port_axi_0_``).
    sys_clk_freq : float
        Clock frequency (Hz) the core's timings were computed for.
    """
    module: str
    ports: dict
    init: tuple
    axi_prefix: str = "user_port_axi_0_"
    sys_clk_freq: float = 50e6

    def width(self, port):
        return self.ports[port][1]

    @property
    def axi_addr_width(self):
        return self.width(self.axi_prefix + "awaddr")

    @property
    def axi_data_width(self):
        return self.width(self.axi_prefix + "wdata")

    @property
    def axi_id_width(self):
        return self.width(self.axi_prefix + "awid")

    @property
    def size_bytes(self):
        return 1 << self.axi_addr_width

    @property
    def has_pads(self):
        """Whether the core drives SDRAM pins (a simulation core holds a model instead)."""
        return "sdram_dq" in self.ports


class WishboneWriteSignature(wiring.Signature):
    """The write half of a classic Wishbone master (what :class:`SDRAMInit` drives)."""

    def __init__(self, addr_width=30, data_width=32):
        super().__init__({
            "adr": Out(addr_width),
            "dat_w": Out(data_width),
            "sel": Out(data_width // 8),
            "cyc": Out(1),
            "stb": Out(1),
            "we": Out(1),
            "ack": In(1),
        })


class SDRAMInit(wiring.Component):
    """Plays a fixed list of register writes on a Wishbone bus, waiting after each as long as
    it says, then raises ``done`` and stays idle.

    Parameters
    ----------
    writes : sequence of InitWrite
        The writes, in order (at least one).
    addr_width, data_width : int
        Of the Wishbone bus.
    """

    def __init__(self, writes, *, addr_width=30, data_width=32):
        writes = tuple(writes)
        if not writes:
            raise ValueError("The init sequence must have at least one write")
        for write in writes:
            if not isinstance(write, InitWrite):
                raise TypeError(f"Init writes must be InitWrite, not {write!r}")
        self._writes = writes
        delay_bits = max(w.delay for w in writes).bit_length() or 1
        self._layout = data.StructLayout({
            "address": addr_width, "value": data_width, "delay": delay_bits})
        super().__init__({
            "bus": Out(WishboneWriteSignature(addr_width, data_width)),
            "done": Out(1),
        })

    @property
    def writes(self):
        return self._writes

    def elaborate(self, platform):
        m = Module()
        m.submodules.rom = rom = Memory(
            shape=self._layout, depth=len(self._writes),
            init=[{"address": w.address, "value": w.value, "delay": w.delay}
                  for w in self._writes])
        read = rom.read_port(domain="comb")
        index = Signal(range(len(self._writes) + 1))
        wait = Signal.like(read.data.delay)
        m.d.comb += [
            read.addr.eq(index),
            self.bus.adr.eq(read.data.address),
            self.bus.dat_w.eq(read.data.value),
            self.bus.sel.eq(-1),
            self.bus.we.eq(1),
        ]
        with m.FSM(name="init"):
            with m.State("Write"):
                m.d.comb += [self.bus.cyc.eq(1), self.bus.stb.eq(1)]
                with m.If(self.bus.ack):
                    m.d.sync += wait.eq(read.data.delay)
                    m.next = "Wait"
            with m.State("Wait"):
                with m.If(wait != 0):
                    m.d.sync += wait.eq(wait - 1)
                with m.Elif(index == len(self._writes) - 1):
                    m.next = "Done"
                with m.Else():
                    m.d.sync += index.eq(index + 1)
                    m.next = "Write"
            with m.State("Done"):
                m.d.comb += self.done.eq(1)
        return m


class SDRAMController(wiring.Component):
    """A generated LiteDRAM core as an AXI4 slave of the accelerator's bus.

    Parameters
    ----------
    core : LiteDRAMCore
        The generated core (:func:`vdla.boards.sdram.load_core`).
    addr_width : int
        Address width of ``s_axi`` (the configuration's ``dram_addr_bits``); the bits above the
        core's own are ignored.
    data_width : int
        Data width of ``s_axi``; must be the core's AXI width (the generator converts to the
        chip's width).
    id_width : int
        ID width of ``s_axi``; must be the core's.
    domain : str
        Clock domain of ``s_axi`` and of the core.
    pads : object, optional
        The board's ``sdram`` resource requested with ``dir="-"``; by default the core with
        pins requests ``("sdram", 0)`` from the platform itself.
    sdram_clk_domain : str, optional
        Domain whose clock goes to the SDRAM clock pin (e.g. a 90-degree-shifted PLL output of
        the same frequency); by default the controller's own clock, inverted.

    Members
    -------
    s_axi : ``In(AXI4Signature(addr_width, data_width, id_width))``
    init_done : ``Out(1)``
        The power-up sequence has run; the AXI port serves requests from now on.
    init_error : ``Out(1)``
        The core's ``init_error`` (never set by :class:`SDRAMInit`: no memory test runs).
    """

    def __init__(self, core, *, addr_width=64, data_width=64, id_width=1, domain="sync",
                 pads=None, sdram_clk_domain=None):
        if not isinstance(core, LiteDRAMCore):
            raise TypeError(f"Core must be a LiteDRAMCore, not {core!r}")
        if data_width != core.axi_data_width:
            raise ValueError(f"Data width {data_width} differs from the core's AXI port "
                             f"({core.axi_data_width} bits); generate the core at this width")
        if id_width != core.axi_id_width:
            raise ValueError(f"ID width {id_width} differs from the core's "
                             f"({core.axi_id_width}); generate the core with this ID width")
        if addr_width < core.axi_addr_width:
            raise ValueError(f"Address width {addr_width} cannot reach the core's "
                             f"{core.size_bytes} bytes ({core.axi_addr_width} bits)")
        self._core = core
        self._domain = domain
        self._pads = pads
        self._sdram_clk_domain = sdram_clk_domain
        super().__init__({
            "s_axi": In(AXI4Signature(addr_width, data_width, id_width)),
            "init_done": Out(1),
            "init_error": Out(1),
        })

    @property
    def core(self):
        return self._core

    def _axi_ports(self):
        """``Instance`` keyword arguments of the core's AXI port, from ``s_axi``."""
        core, axi, p = self._core, self.s_axi, self._core.axi_prefix
        ports = {}
        for ax in ("aw", "ar"):
            ports[f"i_{p}{ax}valid"] = getattr(axi, f"{ax}valid")
            ports[f"o_{p}{ax}ready"] = getattr(axi, f"{ax}ready")
            ports[f"i_{p}{ax}addr"] = getattr(axi, f"{ax}addr")[:core.axi_addr_width]
            ports[f"i_{p}{ax}burst"] = getattr(axi, f"{ax}burst")
            ports[f"i_{p}{ax}len"] = getattr(axi, f"{ax}len")
            # The generator declares AxSIZE 4 bits wide.
            size = getattr(axi, f"{ax}size")
            ports[f"i_{p}{ax}size"] = Cat(size, Const(0, core.width(f"{p}{ax}size") - len(size)))
            ports[f"i_{p}{ax}id"] = getattr(axi, f"{ax}id")
        ports.update({
            f"i_{p}wvalid": axi.wvalid, f"o_{p}wready": axi.wready, f"i_{p}wlast": axi.wlast,
            f"i_{p}wstrb": axi.wstrb, f"i_{p}wdata": axi.wdata,
            f"o_{p}bvalid": axi.bvalid, f"i_{p}bready": axi.bready,
            f"o_{p}bresp": axi.bresp, f"o_{p}bid": axi.bid,
            f"o_{p}rvalid": axi.rvalid, f"i_{p}rready": axi.rready, f"o_{p}rlast": axi.rlast,
            f"o_{p}rresp": axi.rresp, f"o_{p}rdata": axi.rdata, f"o_{p}rid": axi.rid,
        })
        return ports

    def _pad_ports(self, m, platform):
        """``Instance`` keyword arguments of the SDRAM pins, and the SDRAM clock's driver."""
        pads = self._pads
        if pads is None:
            pads = platform.request("sdram", 0, dir="-")
        ports = {}
        for port, member in PAD_PORTS.items():
            direction = "io" if port == "dq" else "o"
            ports[f"{direction}_sdram_{port}"] = getattr(pads, member).io
        # o[0] is driven for the first half of each period of the DDR register's clock.
        inverted = self._sdram_clk_domain is None
        m.submodules.sdram_clk = clk = io.DDRBuffer(
            "o", pads.clk, o_domain=self._domain if inverted else self._sdram_clk_domain)
        m.d.comb += [clk.o[0].eq(0 if inverted else 1), clk.o[1].eq(1 if inverted else 0)]
        return ports

    def elaborate(self, platform):
        m = Module()
        core = self._core
        init = SDRAMInit(core.init, addr_width=core.width("wb_ctrl_adr"),
                         data_width=core.width("wb_ctrl_dat_w"))
        m.submodules.init = DomainRenamer({"sync": self._domain})(init)
        ports = {
            "i_clk": ClockSignal(self._domain),
            "o_init_done": self.init_done,
            "o_init_error": self.init_error,
            "i_wb_ctrl_adr": init.bus.adr, "i_wb_ctrl_dat_w": init.bus.dat_w,
            "i_wb_ctrl_sel": init.bus.sel, "i_wb_ctrl_cyc": init.bus.cyc,
            "i_wb_ctrl_stb": init.bus.stb, "i_wb_ctrl_we": init.bus.we,
            "o_wb_ctrl_ack": init.bus.ack,
            "i_wb_ctrl_cti": Const(0, 3), "i_wb_ctrl_bte": Const(0, 2),
        }
        if "rst" in core.ports:
            ports["i_rst"] = ResetSignal(self._domain)
        if "sim_trace" in core.ports:
            ports["i_sim_trace"] = Const(0)
        ports.update(self._axi_ports())
        if core.has_pads:
            ports.update(self._pad_ports(m, platform))
        m.submodules.litedram = Instance(core.module, **ports)
        return m
