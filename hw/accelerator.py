"""The accelerator: a pool of cores shared by tenants, behind one control port and one DRAM port.

::

    s_axil ──> Control ──(tenant registers)──> TenantDispatch ──> per core: Fetcher ──> Core
                  │                                                  ▲            │
                  └──(instruction window)──> InstructionMemory ──────┘            │
                                                                 DramArbiter <────┘ m_axi
                                                                      │
    m_axi <───────────────────────────────────────────────────────────┘

The host writes programs into the shared instruction memory and sets each tenant's registers
(:mod:`vdla.regs`) over AXI4-Lite; the first-level dispatch runs each tenant on the cores of
its mask; every core reaches DRAM through the arbiter, segment-checked in its own DMA units.
``irq`` has one done interrupt per tenant.
"""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .axi import AXI4LiteSignature
from .control import Control, control_addr_width
from .core import Core
from .dram_arbiter import DramArbiter
from .fetch import Fetcher, connect_core
from .imem import InstructionMemory
from .tenant_dispatch import TenantDispatch

__all__ = ["Accelerator"]


class Accelerator(wiring.Component):
    """``config.cores`` cores shared by ``config.tenants`` tenants.

    Parameters
    ----------
    config : :class:`vdla.config.Config`
    imem_init : sequence of int, optional
        Initial instruction words (simulation shortcut; the host normally writes them).
    multipliers : sequence of (str, str), optional
        Per core, the multiplier implementations of its PE array and post-processing
        (:data:`~.compute.multiplier.MULTIPLIERS`): a board with too few DSP blocks for every
        core builds some in LUTs. Default: ``"infer"`` everywhere.

    Members
    -------
    s_axil : ``In(AXI4LiteSignature(...))``
        Registers and instruction-memory window (:mod:`vdla.regs`).
    m_axi : ``Out(AXI4Signature(...))``
        DRAM; transaction IDs carry the core index in their high bits.
    irq : ``Out(config.tenants)``
        Per-tenant done interrupt (IRQ_STATUS gated by each tenant's irq_enable).
    """

    def __init__(self, config, imem_init=(), multipliers=None):
        self._config = config
        self._multipliers = list(multipliers or [("infer", "infer")] * config.cores)
        if len(self._multipliers) != config.cores:
            raise ValueError(f"Multipliers must be given for each of the {config.cores} cores, "
                             f"not {len(self._multipliers)}")
        self.control = Control(config)
        self.dispatch = TenantDispatch(config)
        self.imem = InstructionMemory(config, config.cores, imem_init)
        self.cores = [self.make_core(config, c) for c in range(config.cores)]
        self.fetchers = [Fetcher(config, core.dispatch.index_bits) for core in self.cores]
        self.arbiter = DramArbiter(self.cores[0].m_axi.signature, config.cores)
        super().__init__({
            "s_axil": In(AXI4LiteSignature(control_addr_width(config), 32)),
            "m_axi": Out(self.arbiter.bus.signature),
            "irq": Out(config.tenants),
        })

    def make_core(self, config, index):
        """Core ``index`` of the pool (tests substitute cores with stand-in units)."""
        return Core(config, *self._multipliers[index])

    def elaborate(self, platform):
        m = Module()
        m.submodules.control = control = self.control
        m.submodules.dispatch = dispatch = self.dispatch
        m.submodules.imem = imem = self.imem
        m.submodules.arbiter = arbiter = self.arbiter

        wiring.connect(m, wiring.flipped(self.s_axil), control.s_axil)
        wiring.connect(m, arbiter.bus, wiring.flipped(self.m_axi))
        m.d.comb += [self.irq.eq(control.irq),
                     imem.write_addr.eq(control.imem_addr),
                     imem.write_data.eq(control.imem_data),
                     imem.write_en.eq(control.imem_en)]
        for t in range(self._config.tenants):
            wiring.connect(m, control.tenants[t], dispatch.tenants[t])

        for c, (core, fetcher) in enumerate(zip(self.cores, self.fetchers)):
            m.submodules[f"core{c}"] = core
            m.submodules[f"fetcher{c}"] = fetcher
            link = dispatch.cores[c]
            connect_core(m, fetcher, core)
            wiring.connect(m, fetcher.imem, imem.reads[c])
            wiring.connect(m, core.m_axi, arbiter.ports[c])
            m.d.comb += [
                fetcher.imem_grant.eq(imem.grant[c]),
                fetcher.start.eq(link.fetch_start), fetcher.abort.eq(link.fetch_abort),
                fetcher.hold.eq(link.hold), link.frame_wait.eq(fetcher.frame_wait),
                fetcher.go.eq(link.go), fetcher.sync_release.eq(link.sync_release),
                fetcher.prog_base.eq(link.prog_base), fetcher.prog_size.eq(link.prog_size),
                fetcher.vcore.eq(link.vcore), fetcher.vcount.eq(link.vcount),
                core.start.eq(link.core_start), core.cancel.eq(link.core_cancel),
                core.seg_base.eq(link.seg_base), core.seg_size.eq(link.seg_size),
                link.header_ready.eq(fetcher.header_ready),
                link.sync_wait.eq(fetcher.sync_wait),
                link.sync_barrier.eq(fetcher.sync_barrier),
                link.done.eq(fetcher.done), link.boundary_pc.eq(fetcher.boundary_pc),
                link.fault_valid.eq(fetcher.fault_valid), link.fault.eq(fetcher.fault),
                link.fault_pc.eq(fetcher.fault_pc),
                link.core_idle.eq(core.idle), link.core_quiet.eq(core.quiet),
            ]
        return m
