"""Async host driver: the API testbenches and ``vdla sim`` use, over any :mod:`.bus` backend.

A :class:`Driver` owns a bus and hands out :class:`Tenant` handles. A handle reaches only its
own tenant registers (addressed by name through :func:`vdla.regs.tenant_offset`; its
interrupt is acknowledged through its own CTRL), its instruction-memory region and its DRAM segment; handles whose regions,
segments or core masks would overlap are refused. The checks and the tensor I/O are the ones
of the synchronous driver (:class:`vdla.sim.host.TenantView`), so both refuse the same things.

Every method that touches the accelerator is a coroutine, so the same code runs under asyncio
(over :class:`vdla.sim.bus.IssBus`) and under cocotb's scheduler (over the RTL).
"""

import dataclasses

from vdla import isa, regs
from vdla.compiler.errors import CompileError
from vdla.compiler.link import link
from vdla.compiler.program import Allocation
from vdla.regs import Fault

from .host import HostError, TenantView, _as_bytes, check_new_tenant, fault_message

__all__ = ["Driver", "Tenant", "HostError", "region_words", "ctrl_value", "POLL_CYCLES",
           "ABORT_CYCLES"]

_STATUS_FIELDS = isa.flat_fields(regs.Status)
_CTRL_FIELDS = isa.flat_fields(regs.Ctrl)
#: Cycles between two STATUS reads while waiting for a stop to take effect (a stop raises
#: no interrupt: it ends at the tenant's next frame boundary).
POLL_CYCLES = 64
#: Cycles an abort may take before the driver gives the device up (the gateware's bound is
#: far below: docs/architecture.md, "Preemption").
ABORT_CYCLES = 100_000


def ctrl_value(**bits):
    """A CTRL word with the named :class:`vdla.regs.Ctrl` fields set."""
    return isa.pack_fields(_CTRL_FIELDS, bits)


def region_words(program, config, cores=None):
    """Instruction words ``program`` needs when linked for ``cores`` (default: the whole pool),
    the region size that lets a tenant be re-allocated to any number of cores."""
    return len(link(program, config, Allocation(cores=cores or config.cores)).words)


class Tenant(TenantView):
    """One tenant as the host drives it; made by :meth:`Driver.tenant`.

    ``allocation`` is the current :class:`~vdla.compiler.program.Allocation`, ``image`` the
    current :class:`~vdla.compiler.program.LinkedImage`, ``link_ms`` the time of the last link.
    """

    def __init__(self, driver, index, allocation):
        super().__init__(driver, index, allocation)
        self.bus = driver.bus
        self.link_ms = None

    # Register access: by name, in this tenant's block only.
    async def _write(self, name, value):
        await self.bus.write_reg(regs.tenant_offset(self.index, name), value)

    async def read_reg(self, name):
        """Read one of this tenant's registers by name."""
        return await self.bus.read_reg(regs.tenant_offset(self.index, name))

    async def write_segment(self, offset, data):
        """Write bytes at a segment-relative offset."""
        data = _as_bytes(data)
        lo, _ = self._segment_range(offset, len(data))
        await self.bus.write_dram(lo, data)

    async def read_segment(self, offset, nbytes):
        lo, _ = self._segment_range(offset, nbytes)
        return await self.bus.read_dram(lo, nbytes)

    async def _refuse_running(self, what):
        if (await self.status())["running"]:
            raise HostError(f"tenant {self.index}: {what} needs it stopped, and it is running")

    async def load(self, program):
        """Link ``program`` for this tenant; write its region, registers and weights.

        A region left unsized is sized for the whole pool, so any later :meth:`reallocate`
        fits in it. Returns the :class:`~vdla.compiler.program.LinkedImage`; the link time
        is in ``link_ms``."""
        await self._refuse_running("load")
        try:
            if self._allocation.prog_size is None:
                self._allocation.prog_size = region_words(program, self.config)
            image, self.link_ms = self._link(program)
        except CompileError as error:
            raise HostError(f"tenant {self.index}: {error}") from None
        await self.bus.write_imem(self.allocation.prog_base, image.words)
        for name, value in image.registers.items():
            await self._write(name, value)
        self.program, self.image = program, image
        await self.write_segment(0, program.weights)
        return image

    async def write_input(self, name, x):
        """Write an int8 ``(C, H, W)`` tensor in the blocked layout at its segment offset."""
        address, data = self._input_bytes(name, x)
        await self.bus.write_dram(address, data)

    async def read_output(self, name):
        """Read a tensor back as int8 ``(C, H, W)``."""
        lo, hi = self._output_range(name)
        return self._output(name, await self.bus.read_dram(lo, hi - lo))

    async def start(self, runs=1):
        """Run ``runs`` inferences (0: until stopped), interrupting when done or faulted."""
        if self.program is None:
            raise HostError(f"tenant {self.index}: no program loaded")
        await self._write("RUNS", runs)
        await self._write("CTRL", ctrl_value(start=1, irq_enable=1))

    async def stop(self, timeout=None):
        """Stop at the next frame boundary; return the status once it is no longer running
        (``done`` instead of ``stopped`` when the last inference ended first). A tenant still
        running ``timeout`` cycles after the stop (default: no limit) is aborted
        (:meth:`abort`)."""
        await self._write("CTRL", ctrl_value(stop=1, irq_enable=1))
        status = await self._wait_stopped(timeout)
        return await self.abort() if status["running"] else status

    async def abort(self, timeout=ABORT_CYCLES):
        """Take the tenant's cores back now, whatever its program does; return its status
        (faulted ABORTED, unless it ended first) with the interrupt acknowledged. Raise
        :class:`HostError` if it still runs ``timeout`` cycles later (a broken device)."""
        await self._write("CTRL", ctrl_value(abort=1, irq_enable=1))
        status = await self._wait_stopped(timeout)
        if status["running"]:
            raise HostError(f"tenant {self.index}: still running {timeout} cycles after the "
                            f"abort")
        await self._write("CTRL", ctrl_value(irq_ack=1, irq_enable=1))
        return status

    async def _wait_stopped(self, timeout):
        """The status once not running, or (after ``timeout`` cycles) still running."""
        deadline = None if timeout is None else self.bus.now() + timeout
        status = await self.status()
        while status["running"]:
            if deadline is not None and self.bus.now() >= deadline:
                break
            await self.bus.sleep(POLL_CYCLES if deadline is None
                                 else max(1, min(POLL_CYCLES, deadline - self.bus.now())))
            status = await self.status()
        return status

    async def wait(self, check=True, timeout=None):
        """Wait for this tenant's interrupt, acknowledge it and return its status; raise
        :class:`HostError` on a fault unless ``check`` is false, and when no interrupt came
        within ``timeout`` cycles (default: the bus's own limit)."""
        mask = 1 << self.index
        until = None if timeout is None else self.bus.now() + timeout
        if not await self.bus.wait_irq(mask, until=until) & mask:
            raise HostError(f"tenant {self.index}: no interrupt within {timeout} cycles "
                            f"(still running; stop it)")
        status = await self.status()
        await self._write("CTRL", ctrl_value(irq_ack=1, irq_enable=1))
        if check and status["faulted"]:
            raise HostError(fault_message(self.index, status))
        return status

    async def set_budget(self, cycles):
        """Arm the watchdog: the tenant faults TIMEOUT once its CYCLES (since its last
        clear) reach ``cycles`` (0: no budget). Only while it is not running."""
        if not 0 <= cycles < 1 << 64:
            raise HostError(f"tenant {self.index}: a budget of {cycles} cycles is outside "
                            f"0..2**64-1")
        await self._refuse_running("a budget")
        await self._write("BUDGET_LO", cycles & 0xFFFF_FFFF)
        await self._write("BUDGET_HI", cycles >> 32)

    async def release(self):
        """Give the tenant index back to the driver (a stopped tenant only); the handle is
        then of no further use."""
        await self._refuse_running("release")
        del self.owner.handles[self.index]

    async def status(self):
        """STATUS decoded, with INFERENCES, CYCLES and FAULT_PC."""
        fields = isa.unpack_fields(_STATUS_FIELDS, await self.read_reg("STATUS"))
        status = {name: bool(fields[name]) for name in ("running", "done", "faulted", "stopped")}
        status["fault"] = Fault(fields["fault"])
        status["fault_core"] = fields["fault_core"]
        status["fault_pc"] = await self.read_reg("FAULT_PC")
        status["inferences"] = await self.read_reg("INFERENCES")
        status["cycles"] = await self.read_reg("CYCLES_LO") | await self.read_reg("CYCLES_HI") << 32
        return status

    async def reallocate(self, cores, core_mask=None):
        """Re-link the loaded program for ``cores`` cores (``core_mask``: which ones; default
        the lowest) into the same region, and rewrite the region and CORE_MASK.

        Only while not running; weights and tensors stay where they are. Returns the link
        time in ms."""
        if self.program is None:
            raise HostError(f"tenant {self.index}: no program loaded")
        await self._refuse_running("reallocate")
        allocation = dataclasses.replace(self.allocation, cores=cores, core_mask=core_mask)
        try:
            image, elapsed = self._link(self.program, allocation)
        except CompileError as error:
            raise HostError(f"tenant {self.index}: {error}") from None
        await self.bus.write_imem(allocation.prog_base, image.words)
        await self._write("CORE_MASK", image.registers["CORE_MASK"])
        self._allocation, self.image, self.link_ms = allocation, image, elapsed
        return elapsed


class Driver:
    """The host side of one accelerator reached through ``bus`` (a :class:`vdla.sim.bus.Bus`)."""

    def __init__(self, bus):
        if bus.owner is not None:
            raise HostError("the bus already has a driver: one driver owns its tenants")
        bus.owner = self
        self.bus = bus
        self.config = bus.config
        self.dram_bytes = bus.dram_bytes
        self.handles = {}
        self._checked = False

    async def check_hardware(self):
        """Refuse an accelerator whose ID or configuration registers do not match ``config``."""
        read = self.bus.read_reg
        ident = await read(regs.register("ID", regs.GLOBAL_REGS).offset)
        if ident != regs.ID_VALUE:
            raise HostError(f"no vdla accelerator on the bus (ID reads 0x{ident:08x})")
        h = int(self.config.core_hash(), 16)
        expected = {"CORE_HASH_LO": h & 0xFFFF_FFFF, "CORE_HASH_HI": h >> 32,
                    "CORES": self.config.cores, "TENANTS": self.config.tenants,
                    "IMEM_DEPTH": self.config.imem_depth}
        for name, value in expected.items():
            got = await read(regs.register(name, regs.GLOBAL_REGS).offset)
            if got != value:
                raise HostError(f"the accelerator's {name} is {got:#x}, configuration "
                                f"{self.config.name} has {value:#x}")
        self._checked = True

    async def tenant(self, index, allocation):
        """The handle of tenant ``index`` with ``allocation`` (its counters cleared)."""
        check_new_tenant(self, index)
        if not self._checked:
            await self.check_hardware()
        handle = Tenant(self, index, allocation)
        await handle._refuse_running("a new handle")
        await handle._write("CTRL", ctrl_value(clear=1))
        self.handles[index] = handle
        return handle
