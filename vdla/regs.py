"""Register map of the accelerator's control interface (AXI4-Lite, 32-bit registers).

The one definition of offsets, access and bit fields: the gateware decodes with it, the host
driver and the dynamic stage address registers by name through it, and docs/registers.md is
generated from it.

Layout: a global block at 0, one block per tenant at ``TENANT_BASE + t*TENANT_STRIDE``, and the
shared instruction memory as a window at ``IMEM_BASE`` (each 128-bit word as four 32-bit
registers, least significant first). Wide counters are split into ``_LO``/``_HI`` halves.
"""

import dataclasses

from amaranth.hdl import unsigned
from amaranth.lib import data, enum

__all__ = ["Fault", "Ctrl", "Status", "Register", "GLOBAL_REGS", "TENANT_REGS",
           "TENANT_BASE", "TENANT_STRIDE", "IMEM_BASE", "CTRL_GUARDED_FIELDS", "tenant_offset", "imem_offset",
           "register"]

TENANT_BASE = 0x100
TENANT_STRIDE = 0x40
IMEM_BASE = 0x0100_0000


class Fault(enum.Enum, shape=4):
    """Why a tenant stopped. Faults are per tenant: the other tenants keep running."""
    NONE = 0
    ILLEGAL = 1     #: undefined opcode, illegal field value or dependency flag
    #: a DMA extent outside the tenant's DRAM segment (nothing is moved), or, at start, a
    #: segment past the DRAM address space
    SEGMENT = 2
    BUFFER = 3      #: an on-chip buffer access outside the buffer
    CORES = 4       #: program linked for another number of cores than the core mask holds
    REGION = 5      #: instruction fetch outside the tenant's program region
    DEADLOCK = 6    #: a dependency token that can never arrive (detected by the models)
    ABORTED = 7     #: the host aborted the tenant (CTRL abort)
    TIMEOUT = 8     #: CYCLES reached the tenant's BUDGET (the watchdog aborted it)


class Ctrl(data.Struct):
    """CTRL (write): ``start`` runs RUNS inferences, ``stop`` halts at the next frame boundary,
    ``clear`` resets STATUS and counters, ``irq_enable`` gates the done interrupt (every CTRL
    write sets it), ``irq_ack`` clears the tenant's IRQ_STATUS bit (as ``start`` and ``clear``
    do), ``abort`` takes a running tenant's cores back within a bound whatever its program
    does: its units abandon their work (DMA bursts already on the bus complete, none
    starts), its buffers are cleared, and it ends faulted ABORTED at its lowest core and
    PROG_BASE, its own segment holding whatever its program had written. A write with
    ``start`` or ``clear`` while the tenant runs is refused (SLVERR) and changes nothing."""
    start: 1
    stop: 1
    clear: 1
    irq_enable: 1
    irq_ack: 1
    abort: 1
    reserved: unsigned(26)


class Status(data.Struct):
    """STATUS (read)."""
    running: 1
    done: 1
    faulted: 1
    stopped: 1
    fault: Fault
    fault_core: unsigned(8)
    reserved: unsigned(16)


@dataclasses.dataclass(frozen=True)
class Register:
    name: str
    offset: int
    access: str     # "r", "w", "rw"
    doc: str
    layout: object = None
    #: Part of the tenant's allocation: a write while the tenant runs is refused (SLVERR) and
    #: changes nothing, so no master can move a running tenant's cores, program or segment.
    guarded: bool = False
    #: Low bits wired to zero: a write drops them and a read returns them as 0 (an alignment
    #: the hardware enforces rather than trusts).
    zero_low_bits: int = 0

    @property
    def write_mask(self):
        """The bits of a 32-bit write that the register keeps."""
        return 0xFFFF_FFFF & ~((1 << self.zero_low_bits) - 1)


GLOBAL_REGS = (
    Register("ID", 0x00, "r", "Constant 0x414C4456 ('VDLA' little-endian)."),
    Register("ISA_VERSION", 0x04, "r", "vdla.isa.ISA_VERSION of the gateware."),
    Register("CORE_HASH_LO", 0x08, "r", "Low 32 bits of Config.core_hash()."),
    Register("CORE_HASH_HI", 0x0C, "r", "High 32 bits of Config.core_hash()."),
    Register("CORES", 0x10, "r", "Number of physical cores."),
    Register("TENANTS", 0x14, "r", "Number of tenant register blocks."),
    Register("IMEM_DEPTH", 0x18, "r", "Instruction memory depth in 128-bit words."),
    Register("IRQ_STATUS", 0x1C, "r", "Bit t: tenant t finished or faulted; cleared by tenant "
             "t's own CTRL (irq_ack, start or clear), never by another tenant's write."),
)

TENANT_REGS = (
    Register("CTRL", 0x00, "w", "Start / stop / abort / clear; interrupt enable and "
             "acknowledge.", Ctrl),
    Register("STATUS", 0x04, "r", "Running, done, fault code and faulting core.", Status),
    Register("CORE_MASK", 0x08, "rw", "Physical cores owned; virtual core k is the k-th set bit.",
             guarded=True),
    Register("PROG_BASE", 0x0C, "rw", "First instruction-memory word of the program region.",
             guarded=True),
    Register("PROG_SIZE", 0x10, "rw", "Words in the program region; fetches past it fault.",
             guarded=True),
    Register("SEG_BASE_LO", 0x14, "rw", "DRAM segment base address, low 32 bits; a multiple "
             "of 8 (the DMA's word), its low 3 bits read as zero.", guarded=True,
             zero_low_bits=3),
    Register("SEG_BASE_HI", 0x18, "rw", "DRAM segment base address, high 32 bits.",
             guarded=True),
    Register("SEG_SIZE_LO", 0x1C, "rw", "DRAM segment size in bytes, low 32 bits.",
             guarded=True),
    Register("SEG_SIZE_HI", 0x20, "rw", "DRAM segment size in bytes, high 32 bits. A start "
             "whose segment runs past the DRAM address space (2^dram_addr_bits bytes: 2^32 on "
             "the boards' configurations) faults SEGMENT.", guarded=True),
    Register("RUNS", 0x24, "rw", "Inferences per start (0: until stopped)."),
    Register("INFERENCES", 0x28, "r", "Inferences completed since the last clear."),
    Register("CYCLES_LO", 0x2C, "r", "Cycles spent running since the last clear, low half."),
    Register("CYCLES_HI", 0x30, "r", "Cycles spent running, high half."),
    Register("FAULT_PC", 0x34, "r", "Instruction-memory word of the faulting instruction."),
    Register("BUDGET_LO", 0x38, "rw", "Cycle budget, low half (0: none): a running tenant "
             "whose CYCLES reach it is aborted and faults TIMEOUT.", guarded=True),
    Register("BUDGET_HI", 0x3C, "rw", "Cycle budget, high half.", guarded=True),
)

ID_VALUE = 0x414C4456
#: CTRL fields refused while the tenant runs: a running tenant is neither restarted nor has
#: its status cleared under it (stop first).
CTRL_GUARDED_FIELDS = ("start", "clear")


def register(name, block=TENANT_REGS):
    """Look a register up by name."""
    for reg in block:
        if reg.name == name:
            return reg
    raise KeyError(name)


def tenant_offset(tenant, name):
    """Byte address of a tenant register."""
    return TENANT_BASE + tenant * TENANT_STRIDE + register(name).offset


def imem_offset(word):
    """Byte address of the first 32-bit lane of instruction-memory word ``word``."""
    return IMEM_BASE + word * 16
