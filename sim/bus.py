"""The host's view of the accelerator: a bus every backend implements, and the ISS backend.

:class:`Bus` is what the async driver (:mod:`.driver`) and the scenario runner
(:mod:`.scenario`) talk to: the AXI4-Lite control port (the registers and instruction-memory
window of :mod:`vdla.regs`), a backdoor into DRAM (as a PCIe DMA would be), the done
interrupt and a clock. The same driver code runs over :class:`IssBus` (the instruction-set
simulator, under asyncio) and over the RTL bus of the cocotb testbenches (under cocotb's
scheduler), so nothing above this module knows which one it drives.

:class:`IssBus` decodes addresses with :mod:`vdla.regs` and answers like the gateware's
control block: an unmapped, unaligned, read-only (on write) or write-only (on read) access,
including a read of the instruction-memory window, is an error response (:class:`BusError`).
Host accesses take no time on the ISS; time passes only in :meth:`Bus.wait_irq`.
"""

import abc

import numpy as np

from vdla import regs

from .iss import Machine, MachineError

__all__ = ["BusError", "Bus", "IssBus", "decode_address"]

_LANES = (regs.imem_offset(1) - regs.imem_offset(0)) // 4
_MASK32 = 0xFFFF_FFFF


class BusError(RuntimeError):
    """An error response of the bus, or a wait that can never end (one-line message)."""


def decode_address(config, address):
    """What a control-port byte address names on ``config``.

    Returns ``("global", Register)``, ``("tenant", index, Register)`` or ``("imem", word,
    lane)``; raises :class:`BusError` for an unaligned or unmapped address.
    """
    if address % 4 or address < 0:
        raise BusError(f"address 0x{address:x} is not a 32-bit register address")
    if address >= regs.IMEM_BASE:
        word, lane = divmod((address - regs.IMEM_BASE) // 4, _LANES)
        if word < config.imem_depth:
            return "imem", word, lane
    elif address >= regs.TENANT_BASE:
        tenant, offset = divmod(address - regs.TENANT_BASE, regs.TENANT_STRIDE)
        reg = next((r for r in regs.TENANT_REGS if r.offset == offset), None)
        if tenant < config.tenants and reg is not None:
            return "tenant", tenant, reg
    else:
        reg = next((r for r in regs.GLOBAL_REGS if r.offset == address), None)
        if reg is not None:
            return "global", reg
    raise BusError(f"address 0x{address:x} is unmapped")


class Bus(abc.ABC):
    """One accelerator as the host sees it.

    Attributes
    ----------
    config : :class:`vdla.config.Config`
        The configuration the accelerator was built for.
    dram_bytes : int
        Size of the DRAM the backdoor reaches (absolute byte addresses ``0..dram_bytes-1``).
    backend : str
        Name of the backend in reports (``iss``, ``rtl``).
    """

    config = None
    dram_bytes = 0
    backend = "bus"
    #: The :class:`vdla.sim.driver.Driver` that owns the tenant indices (one per bus).
    owner = None

    @abc.abstractmethod
    async def write_reg(self, address, value):
        """Write the 32-bit ``value`` at control-port byte ``address``; BusError on SLVERR."""

    @abc.abstractmethod
    async def read_reg(self, address):
        """Read the 32-bit register at control-port byte ``address``; BusError on SLVERR."""

    async def write_imem(self, word, words):
        """Write ``(n, 2)`` uint64 instruction words from instruction-memory word ``word``.

        This default writes each word as four 32-bit lanes through the window (least
        significant first); a backend may override it only with an equivalent.
        """
        for i, (lo, hi) in enumerate(np.asarray(words, np.uint64).tolist()):
            value = lo | hi << 64
            for lane in range(_LANES):
                await self.write_reg(regs.imem_offset(word + i) + 4 * lane,
                                     value >> 32 * lane & _MASK32)

    @abc.abstractmethod
    async def write_dram(self, address, data):
        """Write the uint8 array ``data`` at absolute DRAM byte ``address``."""

    @abc.abstractmethod
    async def read_dram(self, address, nbytes):
        """Read ``nbytes`` uint8 from absolute DRAM byte ``address``."""

    @abc.abstractmethod
    async def wait_irq(self, mask, until=None):
        """Suspend until ``IRQ_STATUS & mask`` is non-zero, or (when ``until`` is given)
        until :meth:`now` reaches ``until``, whichever comes first; return IRQ_STATUS.

        Raises :class:`BusError` when the wait can never end (no ``until`` and no tenant of
        ``mask`` running, as far as the backend can tell)."""

    @abc.abstractmethod
    def now(self):
        """Current time in accelerator cycles."""

    async def sleep(self, cycles):
        """Let ``cycles`` accelerator cycles pass."""
        await self.wait_irq(0, until=self.now() + cycles)

    def _check_dram(self, address, nbytes):
        if address < 0 or address + nbytes > self.dram_bytes:
            raise BusError(f"DRAM bytes 0x{address:x}..0x{address + nbytes:x} are outside the "
                           f"{self.dram_bytes} bytes of DRAM")


class IssBus(Bus):
    """:class:`Bus` over :class:`vdla.sim.iss.Machine` (``machine``), in estimated cycles.

    ``policy`` is the unit-scheduling policy of the machine (see :mod:`.iss_core`);
    :meth:`wait_irq` without ``until`` gives up (BusError) after ``timeout_cycles`` (a tenant
    started with RUNS=0 never interrupts unless it faults).
    """

    backend = "iss"

    def __init__(self, config, dram_bytes, policy="load-first", timeout_cycles=50_000_000):
        try:
            self.machine = Machine(config, dram_bytes, policy)
        except MachineError as error:
            raise BusError(str(error)) from None
        self.config, self.dram_bytes, self.policy = config, int(dram_bytes), policy
        self.timeout_cycles = timeout_cycles

    async def write_reg(self, address, value):
        if not 0 <= value <= _MASK32:
            raise BusError(f"value {value:#x} does not fit a 32-bit register")
        kind, *where = decode_address(self.config, address)
        try:
            if kind == "imem":
                word, lane = where
                lo, hi = (int(v) for v in self.machine.read_imem(word, 1)[0])
                value128 = lo | hi << 64
                value128 &= ~(_MASK32 << 32 * lane)
                value128 |= value << 32 * lane
                self.machine.write_imem(word, [value128])
                return
            reg = where[-1]
            if "w" not in reg.access:
                raise BusError(f"register {reg.name} (0x{address:x}) is read-only")
            if kind == "global":
                self.machine.write_global(reg.name, value)
            else:
                self.machine.write_reg(where[0], reg.name, value)
        except MachineError as error:
            raise BusError(str(error)) from None

    async def read_reg(self, address):
        kind, *where = decode_address(self.config, address)
        if kind == "imem":
            raise BusError(f"the instruction-memory window (0x{address:x}) is write-only")
        reg = where[-1]
        if "r" not in reg.access:
            raise BusError(f"register {reg.name} (0x{address:x}) is write-only")
        if kind == "global":
            return self.machine.read_global(reg.name)
        return self.machine.read_reg(where[0], reg.name)

    async def write_imem(self, word, words):
        # One array write: equivalent to the lane writes, as host accesses take no time here.
        words = np.asarray(words, np.uint64).reshape(-1, 2)
        if word < 0 or word + len(words) > self.config.imem_depth:
            raise BusError(f"instruction words {word}..{word + len(words) - 1} are outside the "
                           f"instruction memory of {self.config.imem_depth} words")
        self.machine.write_imem(word, words)

    async def write_dram(self, address, data):
        data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        self._check_dram(address, len(data))
        self.machine.dram[address:address + len(data)] = data

    async def read_dram(self, address, nbytes):
        self._check_dram(address, nbytes)
        return self.machine.dram[address:address + nbytes].copy()

    async def wait_irq(self, mask, until=None):
        m = self.machine
        deadline = m.cycle + self.timeout_cycles
        while not m.irq_status & mask:
            if until is not None and m.cycle >= until:
                break
            waited = [t for t in m.tenants if mask >> t.index & 1]
            if until is None and not any(t.running for t in waited):
                raise BusError(f"waiting for interrupt mask 0x{mask:x}, but none of its "
                               f"tenants is running")
            if until is None and m.cycle >= deadline:
                raise BusError(f"no interrupt of mask 0x{mask:x} within "
                               f"{self.timeout_cycles} cycles")
            when = m.next_event()
            if until is not None and (when is None or when > until):
                when = until
            m.advance(when)
        return m.irq_status

    def now(self):
        return self.machine.cycle
