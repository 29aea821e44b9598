"""The accelerator (control registers, first-level dispatch, shared instruction memory, DRAM
arbiter, cores) in amaranth.sim, driven over AXI4-Lite and compared with the golden model.

The cores' compute unit is the copying stand-in of tests/hw_sim.py, so these tests are about
tenants: barriers across cores, several tenants at once, faults that stay with their tenant,
start checks, RUNS and stop. DRAM is checked against the copies the programs describe (the
golden model computes real convolutions, not copies); fault codes, addresses and cores are
checked against the golden model. The real cores run the compiled models on Verilator
(tests/test_rtl_accelerator.py)."""

import numpy as np
import pytest

from axi_model import AxiRamModel
from hw_sim import CopyCore, Master
from isa_helpers import E, dma
from vdla import isa, regs
from vdla.config import get_config
from vdla.hw.accelerator import Accelerator
from vdla.hw.axi import Resp
from vdla.regs import Fault
from vdla.sim.iss import Machine

from amaranth.sim import Simulator

Op, Buf = isa.Opcode, isa.Buffer
# A 64 KiB DRAM address space: the cores' addresses are 16 bits wide, the registers 64.
CFG = get_config("small").replace(cores=3, tenants=2, ibuf_depth=64, wbuf_depth=16,
                                  pbuf_depth=16, obuf_depth=64, imem_depth=160,
                                  dram_addr_bits=16)
DRAM_BYTES = 0x3000
_STATUS = isa.flat_fields(regs.Status)


class CopyAccelerator(Accelerator):
    def make_core(self, config, index):
        return CopyCore(config)


def copy_frame(src, dst, n, frame=0):
    """One frame copying ``n`` 8-byte entries from segment offset ``src`` to ``dst``."""
    return [E(Op.FRAME, frame=frame),
            dma(Op.LOAD, Buf.IBUF, 0, src, n, deps={"push_next": 1}),
            E(Op.SETUP, kh=1, kw=1, stride=1, n_icg=1),
            E(Op.CONV, {"pop_prev": 1, "push_next": 1}, ibuf_addr=0, obuf_addr=0, out_h=1,
              out_w=n, n_ob=1),
            dma(Op.SAVE, Buf.OBUF, 0, dst, n, deps={"pop_prev": 1})]


def image(streams):
    """A linked image: one STREAM header per virtual core, then the streams."""
    offset, headers = len(streams), []
    for k, words in enumerate(streams):
        headers.append(E(Op.STREAM, vcore=k, count=len(streams), offset=offset))
        offset += len(words)
    return headers + [w for words in streams for w in words]


def layered_image(layers):
    """``layers[l][k]``: the ``(src, dst, n)`` copy of virtual core ``k`` in layer ``l``."""
    streams = [[] for _ in layers[0]]
    for index, layer in enumerate(layers):
        last = index == len(layers) - 1
        for words, (src, dst, n) in zip(streams, layer):
            words += copy_frame(src, dst, n, frame=index)
            words.append(E(Op.END) if last else E(Op.SYNC, barrier=index))
    return image(streams)


#: Layer 1 reads what the *other* core wrote in layer 0: right only if the barrier holds.
TWO_LAYERS = [[(0x000, 0x100, 6), (0x080, 0x180, 6)], [(0x180, 0x200, 6), (0x100, 0x280, 6)]]
ONE_LAYER = [[(0x000, 0x100, 5)]]


def two_layer_image():
    return layered_image(TWO_LAYERS)


def one_core_image():
    return layered_image(ONE_LAYER)


def copied(mem, seg_base, layers):
    """DRAM after the copies of ``layers`` in a segment at ``seg_base``."""
    mem = mem.copy()
    for layer in layers:
        before = mem.copy()
        for src, dst, n in layer:
            mem[seg_base + dst:seg_base + dst + 8 * n] = before[seg_base + src:][:8 * n]
    return mem


class Tenant:
    def __init__(self, index, words, mask, prog_base, seg_base, seg_size=0x400, runs=1):
        self.index, self.words, self.mask = index, words, mask
        self.prog_base, self.seg_base, self.seg_size, self.runs = (prog_base, seg_base,
                                                                   seg_size, runs)

    def registers(self):
        return {"CORE_MASK": self.mask, "PROG_BASE": self.prog_base,
                "PROG_SIZE": len(self.words), "SEG_BASE_LO": self.seg_base & 0xFFFF_FFFF,
                "SEG_BASE_HI": self.seg_base >> 32, "SEG_SIZE_LO": self.seg_size & 0xFFFF_FFFF,
                "SEG_SIZE_HI": self.seg_size >> 32, "RUNS": self.runs}


CTRL_START = isa.pack_fields(isa.flat_fields(regs.Ctrl), {"start": 1, "irq_enable": 1})
CTRL_STOP = isa.pack_fields(isa.flat_fields(regs.Ctrl), {"stop": 1, "irq_enable": 1})
CTRL_ABORT = isa.pack_fields(isa.flat_fields(regs.Ctrl), {"abort": 1, "irq_enable": 1})


def run_rtl(tenants, dram, *, stop_after=None, abort_after=None, max_cycles=20000, stall=0.0):
    """Write every tenant's image and registers over AXI4-Lite, start them in order, wait
    until each has raised its interrupt (or, for ``stop_after = (tenant, cycles)``, stop that
    one after ``cycles`` and wait until it is no longer running; for ``abort_after``, abort
    it, and record in its status ``abort_cycles``: cycles from the write's response to its
    interrupt). Returns ``({tenant: status}, DRAM after)``."""
    dut = CopyAccelerator(CFG)
    ram = AxiRamModel(dut.m_axi, len(dram), latency=3, stall=stall)
    ram.mem[:] = dram.tobytes()
    result = {}

    async def status(ctx, t):
        host = Master(ctx, dut.s_axil)
        raw, _ = await host.read(regs.tenant_offset(t, "STATUS"))
        st = isa.unpack_fields(_STATUS, raw)
        for name in ("FAULT_PC", "INFERENCES", "CYCLES_LO"):
            st[name.lower()], _ = await host.read(regs.tenant_offset(t, name))
        st["fault"] = Fault(st["fault"])
        return st

    clock = [0]         # cycles since the start of the simulation

    async def count(ctx):
        async for _ in ctx.tick():
            clock[0] += 1

    async def bench(ctx):
        host = Master(ctx, dut.s_axil)
        for t in tenants:
            for k, word in enumerate(t.words):
                for lane in range(4):
                    resp = await host.write(regs.imem_offset(t.prog_base + k) + 4 * lane,
                                            (word >> (32 * lane)) & 0xFFFF_FFFF)
                    assert resp == Resp.OKAY
            for name, value in t.registers().items():
                assert await host.write(regs.tenant_offset(t.index, name), value) == Resp.OKAY
        for t in tenants:
            await host.write(regs.tenant_offset(t.index, "CTRL"), CTRL_START)
        waiting = {t.index for t in tenants}
        stopped, aborted = None, None
        for cycle in range(max_cycles):
            if stop_after and stopped is None and cycle >= stop_after[1]:
                await host.write(regs.tenant_offset(stop_after[0], "CTRL"), CTRL_STOP)
                stopped = clock[0]
            if abort_after and aborted is None and cycle >= abort_after[1]:
                await host.write(regs.tenant_offset(abort_after[0], "CTRL"), CTRL_ABORT)
                aborted = clock[0]
            if aborted is not None and abort_after[0] in waiting and \
                    ctx.get(dut.irq) >> abort_after[0] & 1:
                result["abort_cycles"] = clock[0] - aborted
            if stopped is not None and stop_after[0] in waiting:
                st = await status(ctx, stop_after[0])
                if not st["running"]:
                    waiting.discard(stop_after[0])
                    # Up to a STATUS read (a few cycles) late.
                    result["stop_cycles"] = clock[0] - stopped
            irq = ctx.get(dut.irq)
            waiting -= {t for t in waiting if irq >> t & 1}
            if not waiting:
                break
            await ctx.tick()
        for t in tenants:
            result[t.index] = await status(ctx, t.index)
        if "abort_cycles" in result:
            result[abort_after[0]]["abort_cycles"] = result.pop("abort_cycles")
        if "stop_cycles" in result:
            result[stop_after[0]]["stop_cycles"] = result.pop("stop_cycles")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.add_testbench(count, background=True)
    sim.add_testbench(ram.run, background=True)
    sim.run()
    return result, np.frombuffer(bytes(ram.mem), np.uint8)


def run_iss(tenants, dram):
    """Statuses from the golden model (its DRAM is not comparable: it computes real
    convolutions where the stand-in copies)."""
    machine = Machine(CFG, len(dram))
    machine.dram[:] = dram
    for t in tenants:
        machine.write_imem(t.prog_base, t.words)
        for name, value in t.registers().items():
            machine.write_reg(t.index, name, value)
    for t in tenants:
        machine.start(t.index)
    machine.run()
    return {t.index: machine.status(t.index) for t in tenants}, machine


def random_dram(seed=0):
    return np.random.default_rng(seed).integers(0, 256, DRAM_BYTES, dtype=np.uint8)


def outside(mem, t):
    """DRAM with tenant ``t``'s segment blanked."""
    mem = mem.copy()
    mem[t.seg_base:t.seg_base + t.seg_size] = 0
    return mem


@pytest.mark.parametrize("stall", [0.0, 0.3])
def test_two_tenants_with_a_barrier_match_golden_model(stall):
    tenants = [Tenant(0, two_layer_image(), 0b101, prog_base=3, seg_base=0x400),
               Tenant(1, one_core_image(), 0b010, prog_base=60, seg_base=0x1000, runs=2)]
    dram = random_dram()
    want, _ = run_iss(tenants, dram)
    got, mem = run_rtl(tenants, dram, stall=stall)
    for t in tenants:
        assert got[t.index]["done"] and not got[t.index]["faulted"], got
        assert got[t.index]["inferences"] == want[t.index]["inferences"] == t.runs
    assert np.array_equal(mem, copied(copied(dram, 0x400, TWO_LAYERS), 0x1000, ONE_LAYER))


def test_fault_stays_with_its_tenant():
    """Tenant 0's second core leaves its segment in layer 1: tenant 0 faults SEGMENT with the
    golden model's address and core; tenant 1 finishes exactly; no byte outside tenant 0's
    segment changes except tenant 1's output."""
    bad = layered_image([TWO_LAYERS[0], [(0x180, 0x200, 6), (0x3F0, 0x280, 6)]])
    tenants = [Tenant(0, bad, 0b011, prog_base=0, seg_base=0x400),
               Tenant(1, one_core_image(), 0b100, prog_base=80, seg_base=0x1000)]
    dram = random_dram(1)
    want, _ = run_iss(tenants, dram)
    got, mem = run_rtl(tenants, dram)
    assert want[0]["fault"] == Fault.SEGMENT
    for key in ("faulted", "fault", "fault_pc", "fault_core"):
        assert got[0][key] == want[0][key], (key, got[0], want[0])
    assert got[1]["done"] and not got[1]["faulted"]
    expect = copied(dram, 0x1000, ONE_LAYER)
    assert np.array_equal(outside(mem, tenants[0]), outside(expect, tenants[0]))


def test_mismatched_barriers_fault_deadlock():
    words = image([copy_frame(0x000, 0x100, 2) + [E(Op.SYNC, barrier=0), E(Op.END)],
                   copy_frame(0x080, 0x180, 2) + [E(Op.SYNC, barrier=1), E(Op.END)]])
    tenants = [Tenant(0, words, 0b110, prog_base=5, seg_base=0x400)]
    want, _ = run_iss(tenants, random_dram(2))
    got, _ = run_rtl(tenants, random_dram(2))
    assert want[0]["fault"] == Fault.DEADLOCK
    for key in ("fault", "fault_pc", "fault_core"):
        assert got[0][key] == want[0][key], (key, got[0], want[0])


@pytest.mark.parametrize("mask, words", [
    (0b000, one_core_image()),              # no cores
    (0b1001, one_core_image()),             # a core outside the pool
    (0b001, two_layer_image()),             # linked for two cores, one in the mask
    (0b111, two_layer_image()),             # linked for two cores, three in the mask
    (0b011, [w | (1 << (isa.INSN_BITS - 1)) * (k == 1)     # a reserved bit in header 1
             for k, w in enumerate(two_layer_image())]),
])
def test_start_checks_fault_cores(mask, words):
    tenants = [Tenant(0, words, mask, prog_base=7, seg_base=0x400)]
    want, _ = run_iss(tenants, random_dram(3))
    got, _ = run_rtl(tenants, random_dram(3))
    assert want[0]["fault"] == Fault.CORES
    for key in ("fault", "fault_pc", "fault_core"):
        assert got[0][key] == want[0][key], (key, got[0], want[0])


SPACE = 1 << CFG.dram_addr_bits


@pytest.mark.parametrize("seg_base, seg_size, at_start", [
    (SPACE - 0x40, 0x40, False),        # ends at the top: starts, its LOAD faults SEGMENT
    (SPACE - 0x40, 0x48, True),         # one word past the top
    (0x400, SPACE, True),               # the size alone is past
    (SPACE, 0x400, True),               # above the space
    ((1 << 32) + 0x400, 0x400, True),   # in SEG_BASE_HI, where the bus's bits would alias
    (0x400, 1 << 63, True),             # in SEG_SIZE_HI
])
def test_segment_past_the_address_space_faults_at_start(seg_base, seg_size, at_start):
    """A segment past the cores' DRAM address space faults SEGMENT at start (the region's
    first word, the lowest core) in both models; one that ends at its top runs."""
    tenants = [Tenant(0, one_core_image(), 0b010, prog_base=9, seg_base=seg_base,
                      seg_size=seg_size)]
    want, _ = run_iss(tenants, random_dram(6))
    got, mem = run_rtl(tenants, random_dram(6))
    assert want[0]["fault"] == Fault.SEGMENT
    assert (want[0]["fault_pc"] == 9) == at_start
    for key in ("fault", "fault_pc", "fault_core"):
        assert got[0][key] == want[0][key], (key, got[0], want[0])
    assert np.array_equal(mem, random_dram(6))


def test_overlapping_masks_fault_cores():
    """Both models fault the second tenant CORES (at its lowest requested core and its
    region's first word) and leave the first one running to completion."""
    tenants = [Tenant(0, two_layer_image(), 0b011, prog_base=0, seg_base=0x400),
               Tenant(1, one_core_image(), 0b110, prog_base=80, seg_base=0x1000)]
    want, _ = run_iss(tenants, random_dram(4))
    got, _ = run_rtl(tenants, random_dram(4))
    assert got[0]["done"] and not got[0]["faulted"] and want[0]["done"]
    assert want[1]["fault"] == Fault.CORES
    for key in ("faulted", "fault", "fault_core", "fault_pc"):
        assert got[1][key] == want[1][key], (key, got[1], want[1])


def test_stop_at_a_boundary_leaves_others_running():
    """RUNS=0 repeats until stopped; the stop lands at an inference or barrier boundary."""
    tenants = [Tenant(0, two_layer_image(), 0b011, prog_base=0, seg_base=0x400, runs=0),
               Tenant(1, one_core_image(), 0b100, prog_base=80, seg_base=0x1000, runs=3)]
    got, _ = run_rtl(tenants, random_dram(5), stop_after=(0, 1500))
    assert got[0]["stopped"] and not got[0]["running"] and not got[0]["faulted"]
    assert got[0]["inferences"] >= 1
    assert got[1]["done"] and got[1]["inferences"] == 3


def endless(frames):
    """A one-core image repeating ``frames`` (lists of words) with barriers between them,
    meant to run with RUNS=0 until aborted."""
    words = []
    for index, frame in enumerate(frames):
        words += frame + [E(Op.SYNC, barrier=index)]
    return image([words + [E(Op.END)]])


#: Hostile programs for the abort: a copy of 255x255 entries on the stand-in compute unit
#: (65k cycles in one instruction), and loads into (saves of) a whole IBUF (OBUF) through a
#: slow memory, back to back.
HOSTILE = {
    "long compute": (endless([[E(Op.FRAME), E(Op.SETUP, kh=1, kw=1, stride=1, n_icg=1),
                               E(Op.CONV, ibuf_addr=0, obuf_addr=0, out_h=255, out_w=255,
                                 n_ob=1)]]), 0.0),
    "slow loads": (endless([[E(Op.FRAME)] + [dma(Op.LOAD, Buf.IBUF, 0, 0, 64)] * 8] * 3),
                   0.6),
    "slow saves": (endless([[E(Op.FRAME)] + [dma(Op.SAVE, Buf.OBUF, 0, 0x200, 64)] * 8] * 3),
                   0.6),
}
#: Cycles from the abort's write response to the tenant's interrupt, at most, in these cases
#: (measured up to 170: four outstanding 16-beat bursts through a memory stalling 60% of
#: cycles).
ABORT_BOUND = 250


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_abort_is_bounded_and_leaves_others_running(name):
    """Tenant 0's program never ends (RUNS=0, one instruction of 65k cycles or a stream of
    slow loads); the host's abort takes its cores back within ABORT_BOUND cycles, with the
    fault the golden model gives; tenant 1 finishes exactly; no byte outside tenant 0's
    segment changes but tenant 1's output."""
    words, stall = HOSTILE[name]
    tenants = [Tenant(0, words, 0b010, prog_base=0, seg_base=0x400, runs=0),
               Tenant(1, one_core_image(), 0b001, prog_base=80, seg_base=0x1000, runs=3)]
    dram = random_dram(6)
    got, mem = run_rtl(tenants, dram, abort_after=(0, 300), stall=stall, max_cycles=40000)
    golden = Machine(CFG, len(dram))
    for t in tenants:
        golden.write_imem(t.prog_base, t.words)
        for reg, value in t.registers().items():
            golden.write_reg(t.index, reg, value)
    golden.start(0)
    golden.write_reg(0, "CTRL", CTRL_ABORT)
    want = golden.status(0)
    assert want["fault"] == Fault.ABORTED
    for key in ("faulted", "fault", "fault_core", "fault_pc"):
        assert got[0][key] == want[key], (key, got[0], want)
    assert got[0]["abort_cycles"] <= ABORT_BOUND, got[0]["abort_cycles"]
    assert got[1]["done"] and got[1]["inferences"] == 3
    expect = copied(dram, 0x1000, ONE_LAYER)
    assert np.array_equal(outside(mem, tenants[0]), outside(expect, tenants[0]))


@pytest.mark.parametrize("budget", [1500, 6000])
def test_watchdog_times_out_a_tenant_that_never_ends(budget):
    """A program that never ends (RUNS=0) with a cycle budget: the watchdog aborts it with
    TIMEOUT, as the golden model does, within the abort's bound of the budget; the other
    tenant finishes exactly."""
    words, stall = HOSTILE["slow loads"]
    bad = Tenant(0, words, 0b010, prog_base=0, seg_base=0x400, runs=0)
    tenants = [bad, Tenant(1, one_core_image(), 0b001, prog_base=80, seg_base=0x1000, runs=3)]
    bad.registers = lambda: {**Tenant.registers(bad), "BUDGET_LO": budget, "BUDGET_HI": 0}
    dram = random_dram(7)
    want, _ = run_iss(tenants, dram)
    got, mem = run_rtl(tenants, dram, stall=stall, max_cycles=40000)
    assert want[0]["fault"] == Fault.TIMEOUT
    for key in ("faulted", "fault", "fault_core", "fault_pc"):
        assert got[0][key] == want[0][key], (key, got[0], want[0])
    cycles = got[0]["cycles_lo"]
    assert budget <= cycles <= budget + ABORT_BOUND, cycles
    assert got[1]["done"] and got[1]["inferences"] == 3
    expect = copied(dram, 0x1000, ONE_LAYER)
    assert np.array_equal(outside(mem, bad), outside(expect, bad))


def test_stop_lands_at_the_next_frame_boundary():
    """Ten frames of slow loads and no barrier, repeated until stopped: the stop takes effect
    before the next FRAME, within about a frame (each frame here takes some 150-300 cycles),
    not at the END ten frames on; the tenant is stopped, not faulted; the other finishes."""
    frame = [E(Op.FRAME)] + [dma(Op.LOAD, Buf.IBUF, 0, 0, 64)] * 2
    words = image([frame * 10 + [E(Op.END)]])
    tenants = [Tenant(0, words, 0b010, prog_base=0, seg_base=0x400, runs=0),
               Tenant(1, one_core_image(), 0b001, prog_base=80, seg_base=0x1000, runs=3)]
    got, _ = run_rtl(tenants, random_dram(8), stop_after=(0, 700), stall=0.6)
    assert got[0]["stopped"] and not got[0]["running"] and not got[0]["faulted"]
    assert got[0]["stop_cycles"] <= 400, got[0]["stop_cycles"]
    assert got[1]["done"] and got[1]["inferences"] == 3
