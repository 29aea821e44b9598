"""One accelerator core: second-level dispatch, buffers, LOAD, COMPUTE and SAVE units.

The core knows nothing of tenants beyond the DRAM segment it is given: instructions arrive on
``insn`` (FRAME, SYNC, END and unit instructions of one stream), data moves through one AXI4
master whose read half is the LOAD unit's and whose write half is the SAVE unit's.

``start`` prepares the core for a new tenant (ISA rule: buffers are zeroed when a tenant
starts): the dispatch is flushed, the units are let finish whatever they were doing, every
buffer is cleared, and only then are instructions taken again. With ``cancel`` (a host's
abort) the units abandon their work instead: COMPUTE is reset, LOAD and SAVE issue no new
burst and only complete those already on the bus, so the core is back within a bound
whatever the program.
"""

from amaranth.hdl import Cat, Module, ResetInserter, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from vdla import isa
from vdla.regs import Fault

from .axi import AXI4Signature
from .axi_merge import AXI4Merge
from .buffers import CoreBuffers, compute_port_signatures
from .compute.unit import ComputeUnit
from .dispatch import Dispatch, connect_unit
from .dma import LoadUnit, SaveUnit

__all__ = ["Core", "COUNTER_BITS"]

#: Width of the cycle counters (wide enough for days at 200 MHz).
COUNTER_BITS = 48


class Core(wiring.Component):
    """One core.

    Parameters
    ----------
    config : :class:`vdla.config.Config`
    multipliers : str
        Implementation of the PE array's multipliers (:data:`.compute.multiplier.MULTIPLIERS`);
        the default infers them, as simulation needs.
    post_multipliers : str or None
        Implementation of post-processing's multipliers; ``None``: as ``multipliers``.

    Members
    -------
    insn : ``In(stream.Signature(isa.Insn))``
        The core's stream (see :class:`.dispatch.Dispatch`).
    seg_base : ``In(config.dram_addr_bits)``, seg_size : ``In(config.seg_size_bits)``
        The tenant's DRAM segment, inside the address space (checked when a tenant starts);
        DMA addresses are offsets into it.
    m_axi : ``Out(AXI4Signature(config.dram_addr_bits, config.bus_bits))``
        DRAM.
    start : ``In(1)``
        Pulse: a tenant starts on this core (flush, wait for the units, clear the buffers).
    cancel : ``In(1)``
        Pulse, with ``start`` or while preparing: the units abandon their work.
    ready : ``Out(1)``
        Not preparing for a tenant (``start`` is over).
    idle : ``Out(1)``
        Ready, queues empty, units idle, writes acknowledged.
    quiet : ``Out(1)``
        Nothing of the last tenant can move any more: idle, or clearing the buffers after a
        ``start`` (the core takes no instruction until the clear is over).
    fault, fault_valid, fault_index : ``Out``
        From the dispatch: the first fault and the offset of its word from the first word
        after the last FRAME / SYNC / END taken.
    cycles, load_busy, compute_busy, save_busy : ``Out(COUNTER_BITS)``
        Since ``start``: cycles not idle, and cycles each unit was busy.
    """

    def __init__(self, config, multipliers="infer", post_multipliers=None):
        self._config = config
        self._multipliers = (multipliers, post_multipliers)
        self.dispatch = Dispatch(config)
        self.buffers = CoreBuffers(config)
        self.load, self.compute, self.save = self.make_units(config)
        super().__init__({
            "insn": In(stream.Signature(isa.Insn)),
            "seg_base": In(config.dram_addr_bits),
            "seg_size": In(config.seg_size_bits),
            "m_axi": Out(AXI4Signature(config.dram_addr_bits, config.bus_bits)),
            "start": In(1),
            "cancel": In(1),
            "ready": Out(1),
            "idle": Out(1),
            "quiet": Out(1),
            "fault": Out(Fault),
            "fault_valid": Out(1),
            "fault_index": Out(self.dispatch.index_bits),
            "cycles": Out(COUNTER_BITS),
            "load_busy": Out(COUNTER_BITS),
            "compute_busy": Out(COUNTER_BITS),
            "save_busy": Out(COUNTER_BITS),
        })

    def make_units(self, config):
        """The ``(load, compute, save)`` units (tests substitute stand-ins here)."""
        return (LoadUnit(config), ComputeUnit(config, *self._multipliers), SaveUnit(config))

    def elaborate(self, platform):
        m = Module()
        m.submodules.dispatch = dispatch = self.dispatch
        m.submodules.buffers = buffers = self.buffers
        m.submodules.load = load = self.load
        compute, cancel_compute = self.compute, Signal()
        m.submodules.compute = ResetInserter(cancel_compute)(compute)
        m.submodules.save = save = self.save

        for name, unit in (("load", load), ("compute", compute), ("save", save)):
            connect_unit(m, getattr(dispatch, name), unit)
        for unit in (load, save):
            m.d.comb += [unit.seg_base.eq(self.seg_base), unit.seg_size.eq(self.seg_size)]
        wiring.connect(m, load.buffer, buffers.dma_write)
        wiring.connect(m, save.buffer, buffers.dma_read)
        for name in compute_port_signatures(self._config):
            wiring.connect(m, getattr(buffers, name), getattr(compute, name))

        m.submodules.merge = merge = AXI4Merge(load.m_axi.signature)
        wiring.connect(m, load.m_axi, merge.read)
        wiring.connect(m, save.m_axi, merge.write)
        wiring.connect(m, merge.bus, wiring.flipped(self.m_axi))

        units_idle = Cat(load.idle, compute.idle, save.idle).all()
        flush = Signal()
        cancelling = Signal()
        clearing = Signal()
        with m.FSM(name="prepare"):
            with m.State("Run"):
                m.d.comb += self.ready.eq(1)
                with m.If(self.start):
                    m.d.sync += cancelling.eq(self.cancel)
                    m.next = "Wait-Units"
            with m.State("Wait-Units"):
                # Held in flush, the dispatch issues nothing more and forgets the tokens
                # of the instructions still finishing (or abandoned, when cancelling).
                m.d.comb += [flush.eq(1), cancel_compute.eq(cancelling),
                             load.cancel.eq(cancelling), save.cancel.eq(cancelling)]
                with m.If(self.cancel):
                    m.d.sync += cancelling.eq(1)
                with m.If(units_idle):
                    m.d.sync += cancelling.eq(0)
                    m.d.comb += buffers.clear.eq(1)
                    m.next = "Clear-Buffers"
            with m.State("Clear-Buffers"):
                m.d.comb += clearing.eq(1)
                with m.If(~buffers.clear_busy):
                    m.next = "Run"

        m.d.comb += [
            dispatch.flush.eq(flush),
            dispatch.insn.valid.eq(self.insn.valid & self.ready),
            dispatch.insn.payload.eq(self.insn.payload),
            self.insn.ready.eq(dispatch.insn.ready & self.ready),
            compute.clear.eq(dispatch.compute_clear | self.start),
            self.idle.eq(self.ready & dispatch.idle),
            self.quiet.eq(self.idle | clearing),
            self.fault.eq(dispatch.fault),
            # A fault of the previous tenant is forgotten once ``start`` has flushed it.
            self.fault_valid.eq(dispatch.fault_valid & self.ready),
            self.fault_index.eq(dispatch.fault_index),
        ]

        counters = ((self.cycles, ~self.idle), (self.load_busy, ~load.idle),
                    (self.compute_busy, ~compute.idle), (self.save_busy, ~save.idle))
        for counter, busy in counters:
            with m.If(self.start):
                m.d.sync += counter.eq(0)
            with m.Elif(busy):
                m.d.sync += counter.eq(counter + 1)
        return m
