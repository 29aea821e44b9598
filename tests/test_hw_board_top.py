"""The board top (hw/board_top.py) in amaranth.sim, driven over its UART by the host's
SerialBus: the host loads a tenant's program and data, starts it, waits for its interrupt
and reads its results, all through the serial line, while the cores reach the same on-chip
RAM through the DRAM arbiter.

The cores' compute unit is the copying stand-in of tests/hw_sim.py (as in
test_hw_accelerator.py), so the run is a copy whose result the test knows; the real cores
run compiled models on Verilator.
"""

import numpy as np
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from hw_sim import SimTransport, collector
from test_hw_accelerator import (CTRL_START, ONE_LAYER, CopyAccelerator, Tenant, copied,
                                 one_core_image)
from vdla import isa, regs
from vdla.config import get_config
from vdla.hw.board_top import BoardTop
from vdla.hw.uart import UARTReceiver, UARTTransmitter
from vdla.sim.serial_bus import SerialBus

#: One core and one tenant, small buffers: the whole top simulates at a usable speed.
CFG = get_config("small").replace(cores=1, tenants=1, ibuf_depth=64, wbuf_depth=16,
                                  pbuf_depth=16, obuf_depth=64, imem_depth=64)
DIVISOR = 4             # the fewest clock cycles per UART bit: a short simulation
RAM_BYTES = 0x2000
#: The part of DRAM the host writes (the tenant's data) and reads back (with a margin).
WRITTEN, MARGIN = 0x140, 16


class HostSide(wiring.Component):
    """The board top with a host's UART on the other end of its lines."""

    def __init__(self):
        self.board = BoardTop(CFG, divisor=DIVISOR, ram_bytes=RAM_BYTES,
                              accelerator=CopyAccelerator(CFG), timeout=2000)
        self.host_tx, self.host_rx = UARTTransmitter(DIVISOR), UARTReceiver(DIVISOR)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.board = self.board
        m.submodules.host_tx, m.submodules.host_rx = self.host_tx, self.host_rx
        m.d.comb += [self.board.uart_rx.eq(self.host_tx.tx),
                     self.host_rx.rx.eq(self.board.uart_tx)]
        return m


def test_a_tenant_runs_through_the_serial_line():
    top = HostSide()
    tenant = Tenant(0, one_core_image(), 0b1, prog_base=7, seg_base=0x400)
    data = np.random.default_rng(5).integers(0, 256, WRITTEN, dtype=np.uint8)
    first, last = tenant.seg_base - MARGIN, tenant.seg_base + WRITTEN + MARGIN
    received, seen = [], {}

    async def bench(ctx):
        bus = await SerialBus(SimTransport(ctx, top.host_tx.sink, received), CFG,
                              RAM_BYTES).open()
        await bus.write_dram(tenant.seg_base, data)
        words = np.array([[w & (2**64 - 1), w >> 64] for w in tenant.words], np.uint64)
        await bus.write_imem(tenant.prog_base, words)
        for name, value in tenant.registers().items():
            await bus.write_reg(regs.tenant_offset(tenant.index, name), value)
        await bus.write_reg(regs.tenant_offset(tenant.index, "CTRL"), CTRL_START)
        seen["irq"] = await bus.wait_irq(1 << tenant.index)
        seen["leds"] = ctx.get(top.board.leds)
        seen["status"] = await bus.read_reg(regs.tenant_offset(tenant.index, "STATUS"))
        seen["dram"] = await bus.read_dram(first, last - first)
        # Nothing is left unread on the line.
        assert received == []

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(collector(top.host_rx.source, received), background=True)
    sim.add_testbench(bench)
    sim.run()

    assert seen["irq"] == 1 << tenant.index
    status = isa.unpack_fields(isa.flat_fields(regs.Status), seen["status"])
    assert (status["done"], status["running"], status["faulted"]) == (1, 0, 0), status
    assert seen["leds"] == 0                        # no tenant running or faulted
    dram = np.zeros(RAM_BYTES, np.uint8)          # the on-chip RAM starts cleared
    dram[tenant.seg_base:tenant.seg_base + WRITTEN] = data
    expected = copied(dram, tenant.seg_base, ONE_LAYER)
    np.testing.assert_array_equal(seen["dram"], expected[first:last])
