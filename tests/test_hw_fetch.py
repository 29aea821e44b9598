"""Fetcher of a one-core linked image (hw/fetch.py) with the testbench standing in for the
core: header checks, streaming, SYNC / END, REGION and the address of a core fault."""

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from vdla import isa
from vdla.config import get_config
from vdla.hw.fetch import Fetcher
from vdla.regs import Fault
from isa_helpers import E

CFG = get_config("small").replace(imem_depth=64)
Op = isa.Opcode
INDEX_BITS = 9


def header(offset, count=1, vcore=0):
    return E(Op.STREAM, vcore=vcore, count=count, offset=offset)


def body(n, tag=0):
    """``n`` distinguishable non-control words (their content is not checked here)."""
    return [E(Op.LOAD, length=1, rows=1, planes=1, dram_addr=8 * (tag + k)) for k in range(n)]


class Harness(wiring.Component):
    def __init__(self, words):
        self.fetcher = Fetcher(CFG, INDEX_BITS)
        self.imem = Memory(shape=isa.Insn, depth=CFG.imem_depth,
                           init=[isa.Insn.from_bits(w) for w in words])
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.fetcher = f = self.fetcher
        m.submodules.imem = self.imem
        port = self.imem.read_port()
        m.d.comb += [port.addr.eq(f.imem.addr), port.en.eq(f.imem.en),
                     f.imem.data.eq(port.data)]
        return m


def run(words, prog_base=0, prog_size=None, ready=lambda cycle: True, core_fault=None,
        max_cycles=300):
    """Run the fetcher; the testbench takes words when ``ready(cycle)``; ``core_fault``
    ``(after_words, code, index)`` raises a core fault once that many words were taken.
    Returns taken words ``[(cycle, word)]`` and the final status."""
    image = [0] * prog_base + list(words)
    dut = Harness(image)
    f = dut.fetcher
    out = {"taken": [], "sync_waits": 0}

    async def bench(ctx):
        ctx.set(f.prog_base, prog_base)
        ctx.set(f.prog_size, len(words) if prog_size is None else prog_size)
        ctx.set(f.core_idle, 1)
        ctx.set(f.start, 1)
        await ctx.tick()
        ctx.set(f.start, 0)
        for cycle in range(max_cycles):
            if core_fault and len(out["taken"]) == core_fault[0]:
                ctx.set(f.core_fault, core_fault[1])
                ctx.set(f.core_fault_index, core_fault[2])
                ctx.set(f.core_fault_valid, 1)
            ctx.set(f.insn.ready, ready(cycle))
            if ctx.get(f.insn.valid) and ctx.get(f.insn.ready):
                out["taken"].append((cycle, ctx.get(f.insn.payload.as_value())))
            out["sync_waits"] += ctx.get(f.sync_wait)
            if ctx.get(f.done) or ctx.get(f.fault_valid):
                break
            await ctx.tick()
        out.update(done=ctx.get(f.done), fault=Fault(ctx.get(f.fault)),
                   fault_valid=ctx.get(f.fault_valid), fault_pc=ctx.get(f.fault_pc),
                   cycles=cycle)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


def test_streams_every_word_one_per_cycle():
    stream = [E(Op.FRAME), *body(12), E(Op.SYNC, barrier=0), E(Op.FRAME), *body(5, 20),
              E(Op.END)]
    out = run([header(1), *stream])
    assert out["done"] and not out["fault_valid"]
    assert [w for _, w in out["taken"]] == stream
    cycles = [c for c, _ in out["taken"]]
    # Back to back apart from the SYNC (one cycle to see the core drained).
    gaps = [b - a for a, b in zip(cycles, cycles[1:])]
    assert gaps.count(1) >= len(gaps) - 2
    assert out["sync_waits"] >= 1


def test_stalls_follow_ready_and_region_base():
    stream = [E(Op.FRAME), *body(6), E(Op.END)]
    out = run([header(3), 0, 0, *stream], prog_base=5, ready=lambda c: c % 3 == 0)
    assert out["done"]
    assert [w for _, w in out["taken"]] == stream


@pytest.mark.parametrize("hdr, fault", [
    (header(1, count=2), Fault.CORES),
    (header(1, vcore=1), Fault.CORES),
    (E(Op.FRAME), Fault.CORES),
    (isa.encode(Op.STREAM, {"pop_prev": 1}, vcore=0, count=1, offset=1), Fault.CORES),
    (header(1) | 1 << (isa.INSN_BITS - 1), Fault.CORES),        # a reserved bit set
])
def test_bad_header(hdr, fault):
    out = run([hdr, E(Op.FRAME), E(Op.END)], prog_base=2)
    assert (out["fault"], out["fault_pc"]) == (fault, 2)
    assert not out["taken"]


def test_empty_region_faults_region():
    out = run([header(1), E(Op.END)], prog_size=0)
    assert (out["fault"], out["fault_pc"]) == (Fault.REGION, 0)


def test_running_off_the_region_faults_region():
    out = run([header(1), E(Op.FRAME), *body(3)], prog_base=4)
    assert (out["fault"], out["fault_pc"]) == (Fault.REGION, 4 + 5)
    assert len(out["taken"]) == 4


def test_end_as_last_word_is_not_a_region_fault():
    out = run([header(1), E(Op.FRAME), *body(2), E(Op.END)], prog_base=7)
    assert out["done"] and not out["fault_valid"]


def test_core_fault_address():
    # The second FRAME is region word 6; index 2 counts from the word after it.
    stream = [E(Op.FRAME), *body(4), E(Op.FRAME), *body(5, 10), E(Op.END)]
    out = run([header(1), *stream], prog_base=3, core_fault=(9, Fault.SEGMENT, 2))
    assert (out["fault"], out["fault_pc"]) == (Fault.SEGMENT, 3 + 6 + 1 + 2)
    assert len(out["taken"]) == 9


# A core fault inside a frame waits for the rest of the frame, as the golden model checks a
# whole frame before running it: REGION first, then the frame's first illegal word.
SETUP = E(Op.SETUP, kh=1, kw=1, stride=1, n_icg=1)
CONV = E(Op.CONV, out_h=1, out_w=1, n_ob=1)


def test_frame_running_off_the_region_faults_region_before_an_illegal_word():
    words = [header(1), E(Op.FRAME), *body(2), 0, *body(1)]
    out = run(words, prog_base=2, core_fault=(3, Fault.ILLEGAL, 2))
    assert (out["fault"], out["fault_pc"]) == (Fault.REGION, 2 + len(words))
    assert len(out["taken"]) == 3


def test_illegal_word_later_in_the_frame_comes_before_a_core_fault():
    words = [header(1), E(Op.FRAME), *body(3), 0, *body(1), E(Op.END)]
    out = run(words, prog_base=5, core_fault=(4, Fault.SEGMENT, 0))
    assert (out["fault"], out["fault_pc"]) == (Fault.ILLEGAL, 5 + 5)


@pytest.mark.parametrize("setup, fault, at", [
    ([], Fault.ILLEGAL, 4),             # a CONV before any SETUP is illegal
    ([SETUP], Fault.SEGMENT, 3),        # with the frame's SETUP it is not
])
def test_scan_knows_the_frames_setup(setup, fault, at):
    words = [header(1), E(Op.FRAME), *setup, *body(2), CONV, E(Op.END)]
    out = run(words, core_fault=(2 + len(setup), Fault.SEGMENT, 1 + len(setup)))
    assert (out["fault"], out["fault_pc"]) == (fault, at + len(setup))


def test_fault_outside_a_frame_is_reported_at_once():
    words = [header(1), E(Op.FRAME), *body(1), E(Op.SYNC, barrier=0), *body(2)]
    out = run(words, core_fault=(3, Fault.ILLEGAL, 0))
    assert (out["fault"], out["fault_pc"]) == (Fault.ILLEGAL, 4)
