"""The host bus of the Verilator-simulated accelerator, for the async driver (:mod:`.driver`).

Registers and the instruction-memory window go over the real AXI4-Lite port
(cocotbext-axi's AxiLiteMaster); DRAM is cocotbext-axi's AxiRam behind the accelerator's AXI4
master, which the host reads and writes directly, as a shell's PCIe DMA would. Waiting for a
tenant is waiting for its interrupt line, so Python stays off the per-cycle path.
"""

import logging

import numpy as np
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, First, Timer
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam, AxiResp

from vdla import regs
from .bus import Bus, BusError

__all__ = ["CocotbBus", "PERIOD_NS"]

PERIOD_NS = 10


class CocotbBus(Bus):
    """The :class:`~.bus.Bus` of an :class:`~vdla.hw.accelerator.Accelerator` under cocotb.

    Parameters
    ----------
    dut : the cocotb handle of the top level (ports ``s_axil__*``, ``m_axi__*``, ``irq``,
        ``clk``, ``rst``).
    config : :class:`vdla.config.Config`
    dram_bytes : int
    timeout_cycles : int
        :meth:`wait_irq` gives up (``BusError``) after this many cycles without the interrupt.
    """

    def __init__(self, dut, config, dram_bytes, timeout_cycles=50_000_000):
        self.dut = dut
        self.config = config
        self.dram_bytes = int(dram_bytes)
        self.timeout_cycles = timeout_cycles
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil", bus_separator="__"),
                                  dut.clk, dut.rst)
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi", bus_separator="__"), dut.clk,
                          dut.rst, size=self.dram_bytes)
        for port in (self.axil.write_if, self.axil.read_if, self.ram.write_if,
                     self.ram.read_if):
            port.log.setLevel(logging.WARNING)

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 2)

    def now(self):
        return round(get_sim_time("ns") / PERIOD_NS)

    async def write_reg(self, address, value):
        resp = await self.axil.write(address, int(value).to_bytes(4, "little"))
        if resp.resp != AxiResp.OKAY:
            raise BusError(f"register write 0x{address:x} answered {resp.resp.name}")

    async def read_reg(self, address):
        resp = await self.axil.read(address, 4)
        if resp.resp != AxiResp.OKAY:
            raise BusError(f"register read 0x{address:x} answered {resp.resp.name}")
        return int.from_bytes(resp.data, "little")

    async def write_imem(self, word, words):
        # The window maps word w, lane k to IMEM_BASE + 16w + 4k, least significant lane
        # first: exactly the little-endian bytes of the (n, 2) uint64 words, so one write
        # (split into pipelined 32-bit transfers by the master) does the whole image.
        words = np.ascontiguousarray(words, np.uint64).reshape(-1, 2)
        if word < 0 or word + len(words) > self.config.imem_depth:
            raise BusError(f"instruction words {word}..{word + len(words) - 1} are outside "
                           f"the instruction memory of {self.config.imem_depth} words")
        resp = await self.axil.write(regs.imem_offset(word), words.astype("<u8").tobytes())
        if resp.resp != AxiResp.OKAY:
            raise BusError(f"instruction-memory write at word {word} answered "
                           f"{resp.resp.name}")

    async def write_dram(self, address, data):
        data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        self._check_dram(address, len(data))
        self.ram.write(address, data.tobytes())

    async def read_dram(self, address, nbytes):
        self._check_dram(address, nbytes)
        return np.frombuffer(self.ram.read(address, nbytes), np.uint8).copy()

    def snapshot(self):
        """The whole DRAM as a uint8 array (for isolation checks)."""
        return np.frombuffer(self.ram.read(0, self.dram_bytes), np.uint8).copy()

    async def wait_irq(self, mask, until=None):
        """Wait for an interrupt line of ``mask`` (the driver starts tenants with
        irq_enable, so a line is IRQ_STATUS gated by it) or for cycle ``until``; return
        IRQ_STATUS."""
        irq = self.dut.irq
        while not int(irq.value) & mask:
            if until is not None:
                left = until - self.now()
                if left <= 0:
                    break
                deadline = Timer(left * PERIOD_NS, unit="ns")
            else:
                # A Timer counts from when it is awaited: the budget is per change of the lines.
                deadline = Timer(self.timeout_cycles * PERIOD_NS, unit="ns")
            fired = await First(irq.value_change, deadline) if mask else await deadline
            if fired is deadline and until is None:
                raise BusError(f"no interrupt of tenants 0x{mask:x} within "
                               f"{self.timeout_cycles} cycles")
        return await self.read_reg(regs.register("IRQ_STATUS", regs.GLOBAL_REGS).offset)
