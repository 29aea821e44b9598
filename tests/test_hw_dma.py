"""LOAD / SAVE units in amaranth.sim against an AXI4 RAM model and the golden model's DMA."""

import random

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from vdla import isa
from vdla.config import get_config
from vdla.hw.axi import BOUNDARY, MAX_BURST, AXI4Signature
from vdla.hw.bufport import buffer_words, words_per_entry
from vdla.hw.axi_merge import AXI4Merge
from vdla.hw.dma import LoadUnit, SaveUnit
from vdla.hw.dma_common import DmaCheck
from vdla.regs import Fault
from vdla.sim.iss_decode import Decoder, TenantFault
from vdla.sim.iss_dma import Segment, dram_extent, execute_dma

from axi_model import AxiRamModel

CFG = get_config("small")
B = isa.Buffer
DRAM = 1 << 16


class Buffers:
    """Flat byte arrays of the buffers, shaped like the golden model's core."""

    def __init__(self, config, rng=None):
        self.config = config
        self.data = {buf: np.zeros(buffer_words(config, buf) * 8, np.uint8) for buf in B}
        if rng is not None:
            for array in self.data.values():
                array[:] = rng.integers(0, 256, len(array))

    def dma_buffer(self, buf):
        return self.data[B(buf)], words_per_entry(self.config, buf) * 8

    def copy(self):
        other = Buffers(self.config)
        for buf in B:
            other.data[buf][:] = self.data[buf]
        return other


def dma(opcode=isa.Opcode.LOAD, **fields):
    base = dict(buf=B.IBUF if opcode == isa.Opcode.LOAD else B.OBUF, buf_addr=0, dram_addr=0,
                length=1, rows=1, planes=1, row_stride=0, plane_stride=0)
    base.update(fields)
    return base


def run(unit_cls, transfers, *, config=CFG, seg_base=0, seg_size=DRAM, dram=None,
        buffers=None, latency=4, stall=0.0, seed=0, errors=(), limit=200_000):
    """Run ``transfers`` (field dicts) back to back; return ``[(fault, cycles)]``, the AXI
    model and the buffers. ``cycles`` counts from the accepting edge to the ``done`` edge."""
    load = unit_cls is LoadUnit
    opcode = isa.Opcode.LOAD if load else isa.Opcode.SAVE
    dut = unit_cls(config)
    model = AxiRamModel(dut.m_axi, len(dram) if dram is not None else DRAM,
                        latency=latency, stall=stall, seed=seed, errors=errors)
    if dram is not None:
        model.mem[:] = dram.tobytes()
    buffers = buffers if buffers is not None else Buffers(config)
    results = []
    port = dut.buffer

    async def write_port(ctx):
        while True:
            _, _, en, buf, addr, data = await ctx.tick().sample(port.en, port.buf, port.addr,
                                                                port.data)
            if en:
                array = buffers.data[buf]
                assert 8 * addr < len(array), f"write past {buf.name}: word {addr}"
                array[8 * addr:8 * addr + 8] = np.frombuffer(data.to_bytes(8, "little"),
                                                             np.uint8)

    async def read_port(ctx):
        while True:
            _, _, en, addr = await ctx.tick().sample(port.en, port.addr)
            array = buffers.data[B.OBUF]
            if en:
                assert 8 * addr < len(array), f"read past OBUF: word {addr}"
                ctx.set(port.data, int.from_bytes(array[8 * addr:8 * addr + 8].tobytes(),
                                                  "little"))
            else:
                ctx.set(port.data, 0xBAD0_BAD0_BAD0_BAD0)   # only valid after a read

    async def bench(ctx):
        ctx.set(dut.seg_base, seg_base)
        ctx.set(dut.seg_size, seg_size)
        for fields in transfers:
            ctx.set(dut.cmd.payload.as_value(), isa.encode(opcode, **fields))
            ctx.set(dut.cmd.valid, 1)
            await ctx.tick().until(dut.cmd.ready)
            ctx.set(dut.cmd.valid, 0)
            for cycles in range(1, limit):
                _, _, done, fault = await ctx.tick().sample(dut.done, dut.fault)
                if done:
                    break
            else:
                raise AssertionError(f"no done after {limit} cycles: {fields}")
            assert ctx.get(dut.idle)
            results.append((fault, cycles))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(model.run, background=True)
    sim.add_testbench(write_port if load else read_port, background=True)
    sim.add_testbench(bench)
    sim.run()
    return results, model, buffers


def reference(load, transfers, dram, buffers, seg_base, seg_size):
    """The golden model's effect and faults for the same transfers."""
    opcode = isa.Opcode.LOAD if load else isa.Opcode.SAVE
    decode = Decoder()
    faults = []
    for fields in transfers:
        if decode(isa.encode(opcode, **fields)).illegal:
            faults.append(Fault.ILLEGAL)
            continue
        try:
            execute_dma(buffers, dict(fields, buf=B(fields["buf"]).value),
                        Segment(dram, seg_base, seg_size), load)
            faults.append(Fault.NONE)
        except TenantFault as fault:
            faults.append(fault.code)
    return faults


def expected_bursts(fields, base):
    """Bursts the DMA promises: per row, up to 16 beats, ending on 128-byte boundaries (so
    never across 4 KiB) except at the row's end."""
    out = []
    for p in range(fields["planes"]):
        for r in range(fields["rows"]):
            addr = base + fields["dram_addr"] + 8 * (p * fields["plane_stride"]
                                                     + r * fields["row_stride"])
            left = fields["length"]
            while left:
                beats = min(left, MAX_BURST - addr // 8 % MAX_BURST)
                out.append((addr, beats))
                addr += 8 * beats
                left -= beats
    return out


def random_transfer(rng, load, config, seg_size):
    """A random legal 3-D transfer inside the segment and the buffer."""
    buf = rng.choice([B.IBUF, B.WBUF, B.PBUF]) if load else B.OBUF
    while True:
        planes, rows, length = rng.randint(1, 3), rng.randint(1, 5), rng.randint(1, 40)
        if load:        # reads may overlap and repeat
            row_stride = rng.choice([0, length, length + rng.randint(0, 600)])
            plane_stride = rng.choice([0, rows * row_stride, rng.randint(0, 3000)])
        else:           # writes stay disjoint, so their order does not matter
            row_stride = length + rng.randint(0, 600)
            plane_stride = rows * row_stride + rng.randint(0, 600)
        f = dict(buf=buf, buf_addr=0, dram_addr=0, length=length, rows=rows, planes=planes,
                 row_stride=row_stride, plane_stride=plane_stride)
        span = dram_extent(f)
        words = planes * rows * length
        room = buffer_words(config, buf) - words
        if span <= seg_size and room >= 0:
            break
    f["dram_addr"] = 8 * rng.randint(0, (seg_size - span) // 8)
    f["buf_addr"] = rng.randint(0, room // words_per_entry(config, buf))
    return f


@pytest.mark.parametrize("unit_cls", [LoadUnit, SaveUnit])
@pytest.mark.parametrize("stall", [0.0, 0.3])
def test_random_transfers(unit_cls, stall):
    load = unit_cls is LoadUnit
    rng = random.Random(1 + load + int(10 * stall))
    nprng = np.random.default_rng(7)
    # A segment base off any 4 KiB boundary, so rows straddle boundaries at odd places.
    seg_base, seg_size = 0x1F48, 0xB000
    transfers = [random_transfer(rng, load, CFG, seg_size) for _ in range(8)]
    dram = nprng.integers(0, 256, DRAM, dtype=np.uint8)
    buffers = Buffers(CFG, nprng)
    want_dram, want_buffers = dram.copy(), buffers.copy()
    want = reference(load, transfers, want_dram, want_buffers, seg_base, seg_size)
    assert want == [Fault.NONE] * len(transfers)
    results, model, got_buffers = run(unit_cls, transfers, seg_base=seg_base, seg_size=seg_size,
                                      dram=dram, buffers=buffers, stall=stall, seed=3)
    assert [fault for fault, _ in results] == want
    for buf in B:
        np.testing.assert_array_equal(got_buffers.data[buf], want_buffers.data[buf], buf.name)
    np.testing.assert_array_equal(np.frombuffer(model.mem, np.uint8), want_dram)
    bursts = [b for f in transfers for b in expected_bursts(f, seg_base)]
    assert (model.reads if load else model.writes) == bursts
    assert not (model.writes if load else model.reads)


@pytest.mark.parametrize("unit_cls", [LoadUnit, SaveUnit])
def test_wide_bus(unit_cls):
    """On a 128-bit bus each beat is a narrow 8-byte transfer on the lanes of its address."""
    load = unit_cls is LoadUnit
    config = CFG.replace(bus_bits=128)
    nprng = np.random.default_rng(11)
    rng = random.Random(5)
    seg_base, seg_size = 0x0FB8, 0x8000
    transfers = [random_transfer(rng, load, config, seg_size) for _ in range(6)]
    dram = nprng.integers(0, 256, DRAM, dtype=np.uint8)
    buffers = Buffers(config, nprng)
    want_dram, want_buffers = dram.copy(), buffers.copy()
    reference(load, transfers, want_dram, want_buffers, seg_base, seg_size)
    results, model, got = run(unit_cls, transfers, config=config, seg_base=seg_base,
                              seg_size=seg_size, dram=dram, buffers=buffers, stall=0.2)
    assert all(fault == Fault.NONE for fault, _ in results)
    for buf in B:
        np.testing.assert_array_equal(got.data[buf], want_buffers.data[buf], buf.name)
    np.testing.assert_array_equal(np.frombuffer(model.mem, np.uint8), want_dram)


def test_burst_split():
    """A row of 100 words starting 3 words before a 4 KiB boundary: 3, then 16s, then rest."""
    f = dma(dram_addr=BOUNDARY - 24, length=100)
    _, model, _ = run(LoadUnit, [f])
    assert [beats for _, beats in model.reads] == [3, 16, 16, 16, 16, 16, 16, 1]
    assert model.reads[1][0] == BOUNDARY
    # Mid-block starts end their first burst at the next 128-byte boundary.
    _, model, _ = run(LoadUnit, [dma(dram_addr=8, length=40)])
    assert model.reads == [(8, 15), (128, 16), (256, 9)]


@pytest.mark.parametrize("unit_cls", [LoadUnit, SaveUnit])
def test_segment_fault_moves_nothing(unit_cls):
    load = unit_cls is LoadUnit
    seg_base, seg_size = 0x2000, 0x1000
    # Ends exactly at the segment end: fine. One word further: SEGMENT.
    fits = dma(isa.Opcode.LOAD if load else isa.Opcode.SAVE, dram_addr=0x100, length=8,
               rows=3, planes=2, row_stride=0x40, plane_stride=(0x1000 - 0x100) // 8 - 0x88)
    assert dram_extent(fits) == seg_size
    past = dict(fits, length=9)
    results, model, buffers = run(unit_cls, [past, fits], seg_base=seg_base,
                                  seg_size=seg_size)
    assert [fault for fault, _ in results] == [Fault.SEGMENT, Fault.NONE]
    bursts = model.reads if load else model.writes
    assert bursts == expected_bursts(fits, seg_base)


@pytest.mark.parametrize("buf", [B.IBUF, B.WBUF, B.PBUF, B.OBUF])
def test_buffer_fault(buf):
    unit_cls = SaveUnit if buf == B.OBUF else LoadUnit
    words, per_entry = buffer_words(CFG, buf), words_per_entry(CFG, buf)
    entry = (words - 24) // per_entry
    room = words - entry * per_entry
    fits = dma(isa.Opcode.LOAD, buf=buf, buf_addr=entry, length=room // 2, rows=2,
               row_stride=64)
    past = dict(fits, buf_addr=entry + 1)
    results, model, _ = run(unit_cls, [past, fits])
    assert [fault for fault, _ in results] == [Fault.BUFFER, Fault.NONE]
    assert len(model.reads) + len(model.writes) == 2


@pytest.mark.parametrize("unit_cls", [LoadUnit, SaveUnit])
def test_illegal(unit_cls):
    load = unit_cls is LoadUnit
    op = isa.Opcode.LOAD if load else isa.Opcode.SAVE
    cases = [dma(op, length=0), dma(op, rows=0), dma(op, planes=0), dma(op, dram_addr=12),
             dma(op, buf=B.OBUF if load else B.IBUF),
             # ILLEGAL wins over SEGMENT and BUFFER.
             dma(op, length=0, dram_addr=DRAM, buf_addr=(1 << 14) - 1)]
    results, model, _ = run(unit_cls, cases)
    assert [fault for fault, _ in results] == [Fault.ILLEGAL] * len(cases)
    assert not model.reads and not model.writes
    assert reference(load, cases, np.zeros(DRAM, np.uint8), Buffers(CFG), 0, DRAM) \
        == [Fault.ILLEGAL] * len(cases)


@pytest.mark.parametrize("unit_cls", [LoadUnit, SaveUnit])
def test_bus_error_is_segment_fault(unit_cls):
    """A SLVERR mid-transfer faults SEGMENT; the unit drains and takes the next one."""
    op = isa.Opcode.LOAD if unit_cls is LoadUnit else isa.Opcode.SAVE
    bad = dma(op, dram_addr=0x800, length=200)
    good = dma(op, dram_addr=0x2000, length=40)
    results, model, _ = run(unit_cls, [bad, good], errors=[(0x900, 0x908)])
    assert [fault for fault, _ in results] == [Fault.SEGMENT, Fault.NONE]
    bursts = model.reads if unit_cls is LoadUnit else model.writes
    assert bursts[-3:] == expected_bursts(good, 0)
    assert len(bursts) < len(expected_bursts(bad, 0)) + 3


@pytest.mark.parametrize("unit_cls", [LoadUnit, SaveUnit])
def test_cancelled_check_does_not_judge_the_next(unit_cls):
    """A check cancelled mid-way does not finish later and pass the next instruction, here
    one far outside the segment (the counterexample of the formal segment proof)."""
    op = isa.Opcode.LOAD if unit_cls is LoadUnit else isa.Opcode.SAVE
    dut = unit_cls(CFG)
    model = AxiRamModel(dut.m_axi, DRAM)
    faults = []

    async def bench(ctx):
        ctx.set(dut.seg_size, 0x1000)
        for fields, cancel in ((dma(op), True), (dma(op, dram_addr=0x8000), False)):
            ctx.set(dut.cmd.payload.as_value(), isa.encode(op, **fields))
            ctx.set(dut.cmd.valid, 1)
            await ctx.tick().until(dut.cmd.ready)
            ctx.set(dut.cmd.valid, 0)
            if cancel:
                ctx.set(dut.cancel, 1)
                await ctx.tick()
                ctx.set(dut.cancel, 0)
                await ctx.tick()    # the next one's check starts as the stale one ends
        for _ in range(30):
            _, _, done, fault = await ctx.tick().sample(dut.done, dut.fault)
            if done:
                faults.append(fault)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(model.run, background=True)
    sim.add_testbench(bench)
    sim.run()
    assert faults == [Fault.SEGMENT]
    assert not model.reads and not model.writes


@pytest.mark.parametrize("unit_cls", [LoadUnit, SaveUnit])
def test_long_burst_bandwidth(unit_cls):
    """Long rows stream at (nearly) one beat per cycle, check and fill included."""
    op = isa.Opcode.LOAD if unit_cls is LoadUnit else isa.Opcode.SAVE
    f = dma(op, buf=B.IBUF if op == isa.Opcode.LOAD else B.OBUF, length=128, rows=4,
            row_stride=128, dram_addr=0x40)
    results, _, _ = run(unit_cls, [f], latency=8)
    (fault, cycles), = results
    beats = f["length"] * f["rows"]
    print(f"{unit_cls.__name__}: {beats} beats in {cycles} cycles = {beats / cycles:.3f} "
          f"beats/cycle (memory latency 8)")
    assert fault == Fault.NONE
    assert beats / cycles >= 0.8


@pytest.mark.parametrize("load", [True, False])
def test_check_full_range(load):
    """DmaCheck against the golden model's rules over the fields' whole ranges."""
    rng = random.Random(20 + load)
    dut = DmaCheck(CFG, load=load)
    opcode = isa.Opcode.LOAD if load else isa.Opcode.SAVE
    decode = Decoder()
    cases, got = [], []
    for _ in range(150):
        f = {name: rng.choice([0, 1, (1 << width) - 1, rng.getrandbits(width)])
             for name, (_, width, _) in isa.FIELDS["dma"].items()}
        f["buf"] = B(f["buf"] & 3) if rng.random() < 0.2 else (B.IBUF if load else B.OBUF)
        f["dram_addr"] &= ~7 if rng.random() < 0.9 else ~0
        if rng.random() < 0.5:      # near the buffer's end
            words = f["planes"] * f["rows"] * f["length"]
            per_entry = words_per_entry(CFG, f["buf"])
            f["buf_addr"] = max(0, (buffer_words(CFG, f["buf"]) - words) // per_entry
                                + rng.randint(-1, 1))
        extent = dram_extent(f)
        seg_size = max(0, extent + rng.choice([-8, 0, 8, rng.randint(-1 << 20, 1 << 20)]))
        cases.append((f, seg_size))

    async def bench(ctx):
        for f, seg_size in cases:
            ctx.set(dut.fields, f)
            ctx.set(dut.seg_size, seg_size)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            fault, = await ctx.tick().sample(dut.fault).until(dut.done)
            got.append(fault)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    want = []
    for f, seg_size in cases:
        buf = B(f["buf"])
        if decode(isa.encode(opcode, **f)).illegal:
            want.append(Fault.ILLEGAL)
        elif dram_extent(f) > seg_size:
            want.append(Fault.SEGMENT)
        elif (f["buf_addr"] * words_per_entry(CFG, buf) + f["planes"] * f["rows"] * f["length"]
              > buffer_words(CFG, buf)):
            want.append(Fault.BUFFER)
        else:
            want.append(Fault.NONE)
    assert got == want
    assert {Fault.ILLEGAL, Fault.SEGMENT, Fault.BUFFER, Fault.NONE} <= set(want)


def test_fixed_cost_and_rows_back_to_back():
    """A 1-word LOAD costs ~11 cycles with a fast memory; rows add no cost of their own."""
    (_, short), = run(LoadUnit, [dma()], latency=1)[0]
    assert short <= 11
    rows = dma(length=16, rows=64, row_stride=40)
    (_, cycles), = run(LoadUnit, [rows], latency=8)[0]
    assert 16 * 64 / cycles >= 0.9


def test_merge():
    """AXI4Merge takes AR/R from ``read`` and AW/W/B from ``write``."""
    dut = AXI4Merge(AXI4Signature(32, 64))
    seen = {}

    async def bench(ctx):
        ctx.set(dut.read.arvalid, 1)
        ctx.set(dut.write.arvalid, 0)
        ctx.set(dut.write.wdata, 0x1234)
        ctx.set(dut.read.wdata, 0x5678)
        ctx.set(dut.bus.rvalid, 1)
        ctx.set(dut.bus.bvalid, 1)
        seen.update(arvalid=ctx.get(dut.bus.arvalid), wdata=ctx.get(dut.bus.wdata),
                    read_rvalid=ctx.get(dut.read.rvalid), write_rvalid=ctx.get(dut.write.rvalid),
                    write_bvalid=ctx.get(dut.write.bvalid), read_bvalid=ctx.get(dut.read.bvalid))

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    assert seen == dict(arvalid=1, wdata=0x1234, read_rvalid=1, write_rvalid=0, write_bvalid=1,
                        read_bvalid=0)


def test_signatures():
    dut = LoadUnit(CFG)
    Fragment.get(dut, None)
    assert dut.m_axi.signature == AXI4Signature(64, 64, 1)
    assert "m_axi" in dut.signature.members and "buffer" in dut.signature.members
    with pytest.raises(ValueError, match="at least 64 bits"):
        SaveUnit(CFG.replace(bus_bits=32))
    with pytest.raises(TypeError, match="must be a power of two"):
        AXI4Signature(32, 48)
