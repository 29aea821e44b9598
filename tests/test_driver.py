"""The bus protocol over the ISS and the async host driver: address decoding, the ISS clock,
confinement of tenant handles, re-allocation and faults."""

import asyncio
import pathlib

import numpy as np
import pytest

from vdla import regs
from vdla.compiler.frontend import load_model
from vdla.compiler.program import Allocation
from vdla.compiler.static import compile_graph
from vdla.config import get_config
from vdla.regs import Fault
from vdla.sim.bus import Bus, BusError, IssBus
from vdla.sim.driver import Driver, HostError, region_words
from vdla.sim.reference import run_graph
from vdla.sim.scenario_file import INJECTIONS, _inject

CFG = get_config("small")
DIGITS = pathlib.Path(__file__).resolve().parent.parent / "models" / "digits" / "digits_qdq.onnx"
GLOBAL = {r.name: r.offset for r in regs.GLOBAL_REGS}


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture(scope="module")
def digits():
    graph = load_model(DIGITS)
    return graph, compile_graph(graph, CFG)


def sample(program, seed):
    entry = program.tensor(program.inputs[0])
    return np.random.default_rng(seed).integers(-128, 128, entry.shape, dtype=np.int8)


def golden(graph, program, x):
    return run_graph(graph, {program.inputs[0]: x})[program.outputs[0]]


class RecordingBus(IssBus):
    """An IssBus that records every address the host touches."""

    def __init__(self, *args):
        super().__init__(*args)
        self.regs, self.imem, self.dram = [], [], []

    async def write_reg(self, address, value):
        self.regs.append(address)
        await super().write_reg(address, value)

    async def read_reg(self, address):
        self.regs.append(address)
        return await super().read_reg(address)

    async def write_imem(self, word, words):
        self.imem.append((word, word + len(words)))
        await super().write_imem(word, words)

    async def write_dram(self, address, data):
        self.dram.append((address, address + len(data)))
        await super().write_dram(address, data)

    async def read_dram(self, address, nbytes):
        self.dram.append((address, address + nbytes))
        return await super().read_dram(address, nbytes)


# ------------------------------------------------------------------ the bus

def test_iss_bus_answers_like_the_register_map():
    async def body():
        bus = IssBus(CFG, 4096)
        assert await bus.read_reg(GLOBAL["ID"]) == regs.ID_VALUE
        assert await bus.read_reg(GLOBAL["CORES"]) == CFG.cores
        mask = regs.tenant_offset(2, "CORE_MASK")
        await bus.write_reg(mask, 0b1010)
        assert await bus.read_reg(mask) == 0b1010 == bus.machine.read_reg(2, "CORE_MASK")
        bad = {"unmapped": (bus.read_reg, regs.TENANT_BASE + CFG.tenants * regs.TENANT_STRIDE),
               "not a 32-bit register": (bus.read_reg, mask + 2),
               "read-only": (lambda a: bus.write_reg(a, 0), regs.tenant_offset(0, "STATUS")),
               "write-only": (bus.read_reg, regs.tenant_offset(0, "CTRL")),
               "window": (bus.read_reg, regs.imem_offset(3))}
        for match, (access, address) in bad.items():
            with pytest.raises(BusError, match=match):
                await access(address)
        with pytest.raises(BusError, match="read-only"):
            await bus.write_reg(GLOBAL["ID"], 1)
        with pytest.raises(BusError, match="unmapped"):
            await bus.write_reg(regs.imem_offset(CFG.imem_depth), 1)
        with pytest.raises(BusError, match="outside"):
            await bus.read_dram(4090, 8)
    run(body())


def test_imem_lanes_and_the_fast_path_agree():
    words = np.random.default_rng(0).integers(0, 1 << 63, (5, 2), dtype=np.uint64)
    lanes, fast = IssBus(CFG, 64), IssBus(CFG, 64)
    run(Bus.write_imem(lanes, 7, words))            # the default: four lane writes per word
    run(fast.write_imem(7, words))
    np.testing.assert_array_equal(lanes.machine.imem, fast.machine.imem)
    np.testing.assert_array_equal(fast.machine.imem[7:12], words)


def test_clock_orders_interrupts_by_estimated_cycles(digits):
    graph, program = digits

    async def body():
        bus = IssBus(CFG, 0x20000)
        driver = Driver(bus)
        one = await driver.tenant(0, Allocation(cores=1, core_mask=0b1, seg_base=0))
        two = await driver.tenant(1, Allocation(cores=2, core_mask=0b110, prog_base=1000,
                                                seg_base=0x10000))
        for handle in (one, two):
            await handle.load(program)
            await handle.write_input("input", sample(program, 0))
        t0 = bus.now()
        await one.start()
        await two.start()
        irq = await bus.wait_irq(0b11)
        assert irq == 0b10                           # two cores finish first
        st2 = await two.wait()
        assert bus.now() - t0 == st2["cycles"]      # latency = the estimate
        st1 = await one.wait()
        assert bus.now() - t0 == st1["cycles"] > st2["cycles"]
        assert await bus.read_reg(GLOBAL["IRQ_STATUS"]) == 0      # both acknowledged
        with pytest.raises(BusError, match="none of its tenants is running"):
            await bus.wait_irq(0b11)
        await bus.sleep(100)
        assert bus.now() - t0 == st1["cycles"] + 100
        for handle in (one, two):
            np.testing.assert_array_equal(await handle.read_output("output"),
                                          golden(graph, program, sample(program, 0)))
    run(body())


# ------------------------------------------------------------------ the driver

def test_wait_and_stop_time_out(digits):
    """A tenant running until stopped: wait gives up after its timeout, in cycles; a stop
    with room ends it at a frame boundary, one with none escalates to an abort."""
    _, program = digits

    async def body():
        bus = IssBus(CFG, 0x20000)
        driver = Driver(bus)
        handle = await driver.tenant(0, Allocation(cores=1, seg_base=0))
        await handle.load(program)
        await handle.write_input("input", sample(program, 0))
        await handle.start(runs=0)
        t0 = bus.now()
        with pytest.raises(HostError, match="no interrupt within 5000 cycles"):
            await handle.wait(timeout=5000)
        assert 5000 <= bus.now() - t0 < 5000 + 100_000     # up to one estimated phase late
        status = await handle.stop(timeout=1_000_000)
        assert status["stopped"] and not status["running"] and not status["faulted"]
        await handle.start(runs=0)
        status = await handle.stop(timeout=0)       # no room: aborted at once
        assert status["faulted"] and status["fault"] == Fault.ABORTED
        assert (status["fault_core"], status["fault_pc"]) == (0, 0)
        assert await bus.read_reg(GLOBAL["IRQ_STATUS"]) == 0       # acknowledged
    run(body())


def test_budget_times_out_a_tenant_that_never_ends(digits):
    _, program = digits

    async def body():
        bus = IssBus(CFG, 0x20000)
        handle = await Driver(bus).tenant(0, Allocation(cores=1, seg_base=0))
        await handle.load(program)
        await handle.write_input("input", sample(program, 0))
        await handle.set_budget(50_000)
        await handle.start(runs=0)
        with pytest.raises(HostError, match="budget"):
            await handle.set_budget(0)      # guarded while running
        status = await handle.wait(check=False)
        assert status["faulted"] and status["fault"] == Fault.TIMEOUT
        assert status["cycles"] >= 50_000 and status["inferences"] > 0
        with pytest.raises(HostError, match="outside"):
            await handle.set_budget(-1)
    run(body())


def test_handles_are_confined(digits):
    _, program = digits

    async def body():
        bus = RecordingBus(CFG, 0x30000)
        driver = Driver(bus)
        a = await driver.tenant(1, Allocation(cores=2, prog_base=0, seg_base=0))
        await a.load(program)
        size = region_words(program, CFG)
        assert a.allocation.prog_size == size        # room for any re-allocation
        refused = [
            (Allocation(cores=1, core_mask=0b100, prog_base=size - 1, seg_base=0x10000),
             "program region overlaps tenant 1"),
            (Allocation(cores=1, core_mask=0b100, prog_base=size, seg_base=0x1000),
             "DRAM segment overlaps tenant 1"),
            (Allocation(cores=1, core_mask=0b10, prog_base=size, seg_base=0x10000),
             "cores overlap tenant 1")]
        for allocation, match in refused:
            b = await driver.tenant(2, allocation)
            with pytest.raises(HostError, match=match):
                await b.load(program)
            await b.release()       # the refused load took nothing; the index goes back
        b = await driver.tenant(2, Allocation(cores=1, core_mask=0b100, prog_base=size,
                                              seg_base=0x10000))
        await b.load(program)
        b.allocation.seg_base = 0       # a copy: the handle's own allocation stays
        with pytest.raises(AttributeError):
            b.allocation = Allocation(cores=1)
        with pytest.raises(HostError, match="already has a driver"):
            Driver(bus)
        for call in (driver.tenant(1, Allocation(cores=1)), driver.tenant(9, Allocation(1))):
            with pytest.raises(HostError, match="already has a handle|does not exist"):
                await call
        with pytest.raises(HostError, match="outside its DRAM segment"):
            await b.write_segment(b.allocation.seg_size - 4, b"12345678")
        with pytest.raises(HostError, match="outside its DRAM segment"):
            await b.read_segment(-8, 8)
        with pytest.raises(HostError, match="cores overlap tenant 1"):
            await b.reallocate(2, 0b110)

        # Everything b does reaches only its block, its IRQ bit, its region and its segment.
        bus.regs.clear(), bus.imem.clear(), bus.dram.clear()
        await b.write_input("input", sample(program, 1))
        await b.start()
        await b.wait()
        await b.read_output("output")
        await b.reallocate(1, 0b1000)
        await b.status()
        block = regs.TENANT_BASE + 2 * regs.TENANT_STRIDE
        assert all(block <= r < block + regs.TENANT_STRIDE or r == GLOBAL["IRQ_STATUS"]
                   for r in bus.regs)
        assert all(size <= lo and hi <= 2 * size for lo, hi in bus.imem)
        assert all(0x10000 <= lo and hi <= 0x10000 + b.allocation.seg_size
                   for lo, hi in bus.dram)
        assert bus.machine.read_reg(1, "INFERENCES") == 0
    run(body())


def test_reallocate_1_3_2_loses_and_repeats_nothing(digits):
    graph, program = digits

    async def body():
        bus = IssBus(CFG, 0x20000)
        driver = Driver(bus)
        a = await driver.tenant(0, Allocation(cores=1, prog_base=0, seg_base=0))
        b = await driver.tenant(3, Allocation(cores=1, core_mask=0b1000, prog_base=2000,
                                              seg_base=0x10000))
        await a.load(program)
        await b.load(program)
        await b.write_input("input", sample(program, 99))
        await b.start(runs=0)                        # B runs until stopped, on core 3
        done = 0
        for cores in (1, 3, 2):
            if cores != a.allocation.cores:
                assert await a.reallocate(cores) >= 0          # its link time in ms
            assert a.allocation.core_mask == (1 << cores) - 1
            for _ in range(2):
                x = sample(program, done)
                await a.write_input("input", x)
                await a.start()
                with pytest.raises(HostError, match="it is running"):
                    await a.reallocate(2)
                st = await a.wait()
                done += 1
                assert st["done"] and st["inferences"] == done
                np.testing.assert_array_equal(await a.read_output("output"),
                                              golden(graph, program, x))
        st = await b.stop()
        assert st["stopped"] and not st["running"] and st["inferences"] > 0
        np.testing.assert_array_equal(await b.read_output("output"),
                                      golden(graph, program, sample(program, 99)))
    run(body())


@pytest.mark.parametrize("kind, code", [("illegal", Fault.ILLEGAL), ("segment", Fault.SEGMENT)])
def test_fault_stays_with_its_tenant(digits, kind, code):
    graph, program = digits
    assert kind in INJECTIONS
    seg = -(-program.segment_size // 4096) * 4096

    async def body():
        bus = IssBus(CFG, 2 * seg)
        driver = Driver(bus)
        bad = await driver.tenant(0, Allocation(cores=2, seg_base=0, seg_size=seg))
        good = await driver.tenant(1, Allocation(cores=2, core_mask=0b1100, prog_base=1000,
                                                 seg_base=seg, seg_size=seg))
        await bad.load(_inject(program, kind))
        await good.load(program)
        x = sample(program, 3)
        for handle in (bad, good):
            await handle.write_input("input", x)
        await bad.start()
        await good.start(runs=3)
        with pytest.raises(HostError, match=f"tenant 0 faulted {code.name}"):
            await bad.wait()
        st = await good.wait()
        assert st["done"] and st["inferences"] == 3
        np.testing.assert_array_equal(await good.read_output("output"), golden(graph, program, x))
        status = await bad.status()
        assert status["faulted"] and status["fault"] == code and status["fault_core"] in (0, 1)
        # The bad SAVE aimed at the first bytes past its segment: the neighbour's weights.
        np.testing.assert_array_equal(bus.machine.dram[seg:seg + len(program.weights)],
                                      np.frombuffer(program.weights, np.uint8))
    run(body())
