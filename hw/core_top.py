"""Single-core test top: one :class:`~.core.Core`, an instruction memory the testbench writes,
and the :class:`~.fetch.Fetcher` that runs a one-core linked image from it.

This is what simulation and the RTL flow exercise before the multi-core pool exists: write
the image through ``imem_*``, set the region and segment, pulse ``start``, wait for ``done``
or ``fault_valid``. DRAM sits behind ``m_axi``.
"""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from vdla import isa
from vdla.regs import Fault

from .core import COUNTER_BITS, Core
from .fetch import Fetcher, connect_core

__all__ = ["CoreTop"]


class CoreTop(wiring.Component):
    """Core + instruction memory + fetcher.

    Parameters
    ----------
    config : :class:`vdla.config.Config`
    imem_init : sequence of int, optional
        Initial instruction words (128-bit ints), e.g. to skip the host writes in simulation.

    Members
    -------
    imem_we, imem_addr, imem_data : ``In``
        Host write port of the instruction memory: word ``imem_addr`` takes the 128-bit
        ``imem_data`` when ``imem_we``.
    prog_base, prog_size : ``In(32)``
        Program region (words).
    seg_base, seg_size : ``In(config.dram_addr_bits)``, ``In(config.seg_size_bits)``
        DRAM segment (bytes), inside the DRAM address space.
    start : ``In(1)``
        Pulse: clear the core's buffers and run the image once.
    running, done : ``Out(1)``
        Running; reached END with every write acknowledged (held until the next start).
    fault, fault_valid, fault_pc : ``Out``
        First fault and the instruction-memory word it happened at.
    cycles : ``Out(COUNTER_BITS)``
        Cycles from ``start`` to done or fault.
    m_axi : ``Out(AXI4Signature(...))``
        The core's DRAM master.
    """

    def __init__(self, config, imem_init=()):
        self._config = config
        self.core = self.make_core(config)
        self.fetcher = Fetcher(config, self.core.dispatch.index_bits)
        self.imem = Memory(shape=isa.Insn, depth=config.imem_depth,
                           init=[isa.Insn.from_bits(int(w)) for w in imem_init])
        super().__init__({
            "imem_we": In(1),
            "imem_addr": In(max(ceil_log2(config.imem_depth), 1)),
            "imem_data": In(isa.INSN_BITS),
            "prog_base": In(32),
            "prog_size": In(32),
            "seg_base": In(config.dram_addr_bits),
            "seg_size": In(config.seg_size_bits),
            "start": In(1),
            "running": Out(1),
            "done": Out(1),
            "fault": Out(Fault),
            "fault_valid": Out(1),
            "fault_pc": Out(32),
            "cycles": Out(COUNTER_BITS),
            "m_axi": Out(self.core.m_axi.signature),
        })

    def make_core(self, config):
        """The core (tests substitute one with stand-in units)."""
        return Core(config)

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        m.submodules.fetcher = fetcher = self.fetcher
        m.submodules.imem = self.imem

        write = self.imem.write_port()
        read = self.imem.read_port()
        m.d.comb += [write.addr.eq(self.imem_addr), write.data.eq(self.imem_data),
                     write.en.eq(self.imem_we),
                     read.addr.eq(fetcher.imem.addr), read.en.eq(fetcher.imem.en),
                     fetcher.imem.data.eq(read.data)]

        connect_core(m, fetcher, core)
        wiring.connect(m, core.m_axi, wiring.flipped(self.m_axi))
        m.d.comb += [
            core.start.eq(self.start), fetcher.start.eq(self.start),
            core.seg_base.eq(self.seg_base), core.seg_size.eq(self.seg_size),
            fetcher.prog_base.eq(self.prog_base), fetcher.prog_size.eq(self.prog_size),
            self.running.eq(fetcher.running), self.done.eq(fetcher.done),
            self.fault.eq(fetcher.fault), self.fault_valid.eq(fetcher.fault_valid),
            self.fault_pc.eq(fetcher.fault_pc),
        ]
        with m.If(self.start):
            m.d.sync += self.cycles.eq(0)
        with m.Elif(fetcher.running):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        return m
