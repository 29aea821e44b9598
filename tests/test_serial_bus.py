"""The host's SerialBus (sim/serial_bus.py) against the gateware, in amaranth.sim.

The real host code (``SerialBus`` and its ``LinkClient``) runs inside a testbench over a
simulated byte pipe into ``HostBridge``; behind the bridge sit the accelerator's real control
block (hw/control.py) and the AXI4 RAM model. So registers answer as on the accelerator, the
instruction-memory window's writes come out of the control block, and DRAM is the RAM model.
"""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from axi_model import AxiRamModel
from hw_sim import SimTransport, collector
from vdla import regs
from vdla.compiler.program import Allocation
from vdla.compiler.static import compile_graph
from vdla.compiler.synthetic import IRBuilder
from vdla.config import get_config
from vdla.hw.control import Control
from vdla.hw.host_bridge import HostBridge
from vdla.sim.bus import BusError
from vdla.sim.driver import Driver
from vdla.sim.serial_bus import SerialBus, SerialTransport

CONFIG = get_config("small")
RAM_BYTES = 8192


class BridgeTop(wiring.Component):
    """HostBridge with the control block on its control port."""

    def __init__(self, config):
        self.bridge = HostBridge(config, timeout=1000)
        self.control = Control(config)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge, m.submodules.control = self.bridge, self.control
        wiring.connect(m, self.bridge.ctrl, self.control.s_axil)
        return m


def run(bench, config=CONFIG, ram_bytes=RAM_BYTES):
    """Run ``bench(bus, top, ram, imem_writes)`` with a SerialBus opened on the bridge;
    returns the instruction-memory writes, ``[(word, lane, value)]``."""
    top = BridgeTop(config)
    ram = AxiRamModel(top.bridge.mem, ram_bytes, latency=2)
    received, imem_writes = [], []
    tx, control = top.bridge.tx, top.control

    async def imem(ctx):
        async for _, _, en, addr, data in ctx.tick().sample(control.imem_en, control.imem_addr,
                                                            control.imem_data):
            for lane in range(len(control.imem_en)):
                if en >> lane & 1:
                    imem_writes.append((addr, lane, data >> 32 * lane & 0xFFFF_FFFF))

    async def testbench(ctx):
        bus = SerialBus(SimTransport(ctx, top.bridge.rx, received), config, ram_bytes)
        await bench(await bus.open(), top, ram, imem_writes)
        assert received == []

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(ram.run, background=True)
    sim.add_testbench(collector(tx, received), background=True)
    sim.add_testbench(imem, background=True)
    sim.add_testbench(testbench)
    sim.run()
    return imem_writes


def glob(name):
    return regs.register(name, regs.GLOBAL_REGS).offset


def test_registers_answer_as_the_control_block_defines_them():
    async def bench(bus, top, ram, imem):
        assert await bus.read_reg(glob("ID")) == 0x414C4456
        assert await bus.read_reg(glob("CORES")) == CONFIG.cores
        assert await bus.read_reg(glob("IMEM_DEPTH")) == CONFIG.imem_depth
        mask = regs.tenant_offset(1, "CORE_MASK")
        await bus.write_reg(mask, 0b0110)
        assert await bus.read_reg(mask) == 0b0110
        # The control block's refusals reach the host as one-line bus errors.
        with pytest.raises(BusError, match=r"WRITE_REG at 0x0: .*BUS_ERROR at word 0"):
            await bus.write_reg(glob("ID"), 1)
        with pytest.raises(BusError, match="READ_REG .*BUS_ERROR"):
            await bus.read_reg(regs.tenant_offset(0, "CTRL"))
        with pytest.raises(BusError, match="does not fit"):
            await bus.write_reg(mask, 1 << 32)
    run(bench)


def test_instruction_words_come_out_of_the_window_lane_by_lane():
    rng = np.random.default_rng(3)
    words = rng.integers(0, 2**63, (70, 2), dtype=np.uint64)      # more than one request

    async def bench(bus, top, ram, imem):
        await bus.write_imem(5, words)
        with pytest.raises(BusError, match="outside the instruction memory"):
            await bus.write_imem(CONFIG.imem_depth - 1, words[:2])
    got = {}
    imem = run(bench)
    for addr, lane, value in imem:
        got.setdefault(addr, [0] * 4)[lane] = value
    assert sorted(got) == list(range(5, 75))
    for k, (lo, hi) in enumerate(words.tolist()):
        value = lo | hi << 64
        assert got[5 + k] == [value >> 32 * lane & 0xFFFF_FFFF for lane in range(4)]


@pytest.mark.parametrize("address, nbytes", [(0, 64), (3, 1), (5, 19), (1000, 1100), (8, 8)])
def test_dram_reads_and_writes_any_byte_range(address, nbytes):
    rng = np.random.default_rng(address)
    background = rng.integers(0, 256, RAM_BYTES, dtype=np.uint8)
    data = rng.integers(0, 256, nbytes, dtype=np.uint8)

    async def bench(bus, top, ram, imem):
        ram.mem[:] = background.tobytes()
        await bus.write_dram(address, data)
        np.testing.assert_array_equal(await bus.read_dram(address, nbytes), data)
        expected = background.copy()
        expected[address:address + nbytes] = data
        # Bytes around the range, in the same bus beats, are kept.
        assert bytes(ram.mem) == expected.tobytes()
        with pytest.raises(BusError, match="outside the"):
            await bus.read_dram(RAM_BYTES - 4, 8)
    run(bench)


def test_wait_irq_polls_and_knows_when_nothing_runs():
    async def bench(bus, top, ram, imem):
        start = bus.now()
        assert await bus.wait_irq(0b1, until=start + 500) == 0
        assert bus.now() >= start + 500
        with pytest.raises(BusError, match="none of its tenants is running"):
            await bus.wait_irq(0b1)
    run(bench)


def test_a_bridge_of_another_configuration_is_refused():
    other = CONFIG.replace(imem_depth=CONFIG.imem_depth // 2)

    async def bench(bus, top, ram, imem):
        with pytest.raises(BusError, match=f"not version 1 for {other.name}"):
            await SerialBus(bus.transport, other, RAM_BYTES).open()
    run(bench)


def test_serial_transport_reports_a_missing_port_in_one_line():
    with pytest.raises(BusError, match="cannot open /dev/vdla-no-such-port"):
        SerialTransport("/dev/vdla-no-such-port", 115200, CONFIG.clock_mhz)


def test_the_driver_loads_a_tenant_through_the_bridge():
    """The host driver, unchanged, over the serial bus: it checks the hardware, links and
    loads a small CNN; the control block and the RAM then hold exactly its image."""
    b = IRBuilder("small_cnn", seed=4)
    x = b.conv(b.input((4, 10, 10)), 12, 3)
    b.output(b.dense(b.pool(x, "max", 2, 2), 6))
    program = compile_graph(b.graph(), CONFIG)
    seg_base, prog_base = 0x2000, 40
    loaded = {}

    async def bench(bus, top, ram, imem):
        driver = Driver(bus)
        tenant = await driver.tenant(1, Allocation(cores=2, core_mask=0b1100,
                                                   prog_base=prog_base, seg_base=seg_base))
        loaded["image"] = await tenant.load(program)
        for name, value in loaded["image"].registers.items():
            if "r" in regs.register(name).access:
                assert await tenant.read_reg(name) == value, name
        weights = np.frombuffer(program.weights, np.uint8)
        np.testing.assert_array_equal(await tenant.read_segment(0, len(weights)), weights)
        assert bytes(ram.mem[seg_base:seg_base + len(weights)]) == bytes(program.weights)
    writes = run(bench, ram_bytes=0x10000)
    words = loaded["image"].words
    got = {}
    for addr, lane, value in writes:
        got.setdefault(addr, [0] * 4)[lane] = value
    assert sorted(got) == list(range(prog_base, prog_base + len(words)))
    for k, (lo, hi) in enumerate(words.tolist()):
        assert got[prog_base + k] == [(lo | hi << 64) >> 32 * lane & 0xFFFF_FFFF
                                      for lane in range(4)]
