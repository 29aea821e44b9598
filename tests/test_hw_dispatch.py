"""Second-level dispatch (hw/dispatch.py) against stand-in units: token ordering, frame
drain, ILLEGAL checks (cross-checked with the golden model's decoder), fault handling."""

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from vdla import isa
from vdla.config import get_config
from vdla.hw.dispatch import Dispatch, connect_unit
from vdla.regs import Fault
from vdla.sim.iss_decode import Decoder
from isa_helpers import E

CFG = get_config("small").replace(imem_depth=256)
Op, Buf = isa.Opcode, isa.Buffer
UNITS = ("load", "compute", "save")
#: Field values that make a stand-in unit fault (SEGMENT for DMA, BUFFER for compute).
DMA_FAULT_STRIDE = 0xFFFF
CONV_FAULT_H = 255


class FakeUnit(wiring.Component):
    """Takes an instruction when idle and pulses ``done`` a number of cycles later read from
    the instruction (DMA ``length``, CONV/MISC ``out_w``, SETUP 1); some field values fault."""

    cmd: In(stream.Signature(isa.Insn))
    done: Out(1)
    fault: Out(Fault)
    idle: Out(1)

    def elaborate(self, platform):
        m = Module()
        p = self.cmd.payload
        busy, count, fault = Signal(), Signal(16), Signal(Fault)
        latency, code = Signal(16), Signal(Fault)
        with m.Switch(p.opcode):
            with m.Case(Op.LOAD, Op.SAVE):
                m.d.comb += latency.eq(p.body.dma.length)
                with m.If(p.body.dma.row_stride == DMA_FAULT_STRIDE):
                    m.d.comb += code.eq(Fault.SEGMENT)
            with m.Case(Op.CONV):
                m.d.comb += latency.eq(p.body.conv.out_w)
                with m.If(p.body.conv.out_h == CONV_FAULT_H):
                    m.d.comb += code.eq(Fault.BUFFER)
            with m.Case(Op.MISC):
                m.d.comb += latency.eq(p.body.misc.out_w)
            with m.Default():
                m.d.comb += latency.eq(1)
        m.d.comb += [self.cmd.ready.eq(~busy), self.idle.eq(~busy)]
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [busy.eq(1), count.eq(latency - 1), fault.eq(code)]
        with m.Elif(busy):
            with m.If(count == 0):
                m.d.comb += [self.done.eq(1), self.fault.eq(fault)]
                m.d.sync += busy.eq(0)
            with m.Else():
                m.d.sync += count.eq(count - 1)
        return m


class Harness(wiring.Component):
    def __init__(self, config):
        self.dispatch = Dispatch(config)
        super().__init__({"insn": In(stream.Signature(isa.Insn)), "flush": In(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dispatch = d = self.dispatch
        wiring.connect(m, wiring.flipped(self.insn), d.insn)
        m.d.comb += d.flush.eq(self.flush)
        for name in UNITS:
            unit = FakeUnit()
            m.submodules[name] = unit
            connect_unit(m, getattr(d, name), unit)
        return m


def load(length, deps=None, **kw):
    kw.setdefault("buf", Buf.IBUF.value)
    return E(Op.LOAD, deps, length=length, rows=1, planes=1, **kw)


def save(length, deps=None, **kw):
    return E(Op.SAVE, deps, buf=Buf.OBUF.value, length=length, rows=1, planes=1, **kw)


def setup():
    return E(Op.SETUP, kh=1, kw=1, stride=1, n_icg=1)


def conv(cycles, deps=None, **kw):
    kw.setdefault("out_h", 1)
    return E(Op.CONV, deps, out_w=cycles, n_ob=1, **kw)


FRAME, END = E(Op.FRAME), E(Op.END)


def run(words, max_cycles=1500):
    """Feed ``words``; return a trace: issues/dones ``(cycle, unit, word)``, accepted words
    ``(cycle, word)``, clear pulses, fault state."""
    dut = Harness(CFG)
    d = dut.dispatch
    trace = {"issue": [], "done": [], "accept": [], "clear": [], "fault": None, "cycles": 0}

    async def bench(ctx):
        pending = list(words)
        for cycle in range(max_cycles):
            ctx.set(dut.insn.valid, bool(pending))
            if pending:
                ctx.set(dut.insn.payload.as_value(), pending[0])
            accepted = bool(pending) and ctx.get(dut.insn.ready)
            if accepted:
                trace["accept"].append((cycle, pending[0]))
            for name in UNITS:
                port = getattr(d, name)
                if ctx.get(port.cmd.valid) and ctx.get(port.cmd.ready):
                    trace["issue"].append((cycle, name, ctx.get(port.cmd.payload.as_value())))
                if ctx.get(port.done):
                    trace["done"].append((cycle, name))
            if ctx.get(d.compute_clear):
                trace["clear"].append(cycle)
            if ctx.get(d.fault_valid):
                trace["fault"] = (Fault(ctx.get(d.fault)), ctx.get(d.fault_index))
                break
            if not pending and ctx.get(d.idle):
                break
            await ctx.tick()
            if accepted:
                pending.pop(0)
        trace["cycles"] = cycle
        trace["left"] = pending

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return trace


def issued(trace, word):
    return [c for c, _, w in trace["issue"] if w == word]


def done_of(trace, unit, k):
    """Cycle of the k-th done pulse of ``unit``."""
    return [c for c, u in trace["done"] if u == unit][k]


def test_pop_waits_for_push_and_independent_units_overlap():
    ld = load(12, {"push_next": 1})
    cv = conv(5, {"pop_prev": 1, "push_next": 1})
    sv = save(3, {"pop_prev": 1})
    t = run([FRAME, ld, setup(), cv, sv, END])
    assert t["fault"] is None and not t["left"]
    assert [u for _, u, _ in t["issue"]] == ["load", "compute", "compute", "save"]
    # SETUP pops nothing: it runs while the LOAD is still busy.
    assert issued(t, setup())[0] < done_of(t, "load", 0)
    # CONV waits for the LOAD's token, SAVE for the CONV's.
    assert issued(t, cv)[0] > done_of(t, "load", 0)
    assert issued(t, sv)[0] > done_of(t, "compute", 1)
    # END is taken only once everything has finished.
    assert t["accept"][-1][1] == END and t["accept"][-1][0] > done_of(t, "save", 0)


def test_double_buffered_frame_orders_every_pair():
    """Two steps: load of step 1 waits for the compute of step 0 to free its half."""
    l0 = load(4, {"push_next": 1}, buf_addr=0)
    l1 = load(4, {"push_next": 1}, buf_addr=64)
    l2 = load(4, {"pop_next": 1, "push_next": 1}, buf_addr=0)
    c0 = conv(9, {"pop_prev": 1, "push_prev": 1}, obuf_addr=0)
    c1 = conv(9, {"pop_prev": 1, "push_prev": 1}, obuf_addr=1)
    c2 = conv(9, {"pop_prev": 1, "push_next": 1}, obuf_addr=2)
    sv = save(2, {"pop_prev": 1})
    t = run([FRAME, setup(), l0, l1, c0, l2, c1, c2, sv, E(Op.SYNC, barrier=0)])
    assert t["fault"] is None and not t["left"]
    assert issued(t, l1)[0] < issued(t, c0)[0] + 9       # l1 overlaps c0
    assert issued(t, l2)[0] > done_of(t, "compute", 1)   # after c0 (SETUP is done 0)
    assert issued(t, c2)[0] > done_of(t, "load", 2)
    assert issued(t, sv)[0] > done_of(t, "compute", 3)


def test_frame_drains_and_discards_tokens():
    ld = load(20, {"push_next": 1})     # its token is never popped in frame 1
    t = run([FRAME, ld, FRAME, setup(), conv(2, {"pop_prev": 1}), END])
    second_frame = [c for c, w in t["accept"] if w == FRAME][1]
    assert second_frame > done_of(t, "load", 0)
    assert t["clear"] == [c for c, w in t["accept"] if w == FRAME]
    # The token was cleared by the FRAME: the CONV can never start.
    assert t["fault"] == (Fault.DEADLOCK, 1)


def test_full_queue_back_pressure_keeps_order():
    loads = [load(3 + k % 4, {"push_next": 1}, buf_addr=k) for k in range(20)]
    convs = [conv(1, {"pop_prev": 1}, obuf_addr=k) for k in range(20)]
    t = run([FRAME, setup(), *loads, *convs, END])
    assert t["fault"] is None and not t["left"]
    assert [w for _, u, w in t["issue"] if u == "load"] == loads
    assert [w for _, u, w in t["issue"] if u == "compute"][1:] == convs


def test_unit_fault_stops_issue():
    bad = load(5, {"push_next": 1}, row_stride=DMA_FAULT_STRIDE)
    later = load(2, buf_addr=7)
    t = run([FRAME, setup(), load(2), bad, later, conv(1, {"pop_prev": 1}), END])
    assert t["fault"] == (Fault.SEGMENT, 2)
    assert not issued(t, later)
    # The fault stays latched and nothing more issues.
    t = run([FRAME, setup(), conv(4, out_h=CONV_FAULT_H), conv(1, obuf_addr=3), END])
    assert t["fault"] == (Fault.BUFFER, 1)
    assert len(t["issue"]) == 2


def test_deadlock_at_end_of_stream():
    t = run([FRAME, setup(), conv(1, {"pop_next": 1}), END])
    assert t["fault"] == (Fault.DEADLOCK, 1)


# ------------------------------------------------------------------ ILLEGAL

ILLEGAL_CASES = {
    "opcode 0": 0x1234 << 8,
    "undefined opcode": 6,
    "STREAM": E(Op.STREAM, vcore=0, count=1, offset=1),
    "LOAD pop_prev": load(1, {"pop_prev": 1}),
    "SAVE push_next": save(1, {"push_next": 1}),
    "SETUP flag": isa.encode(Op.SETUP, {"push_next": 1}, kh=1, kw=1, stride=1, n_icg=1),
    "FRAME flag": E(Op.FRAME, {"pop_prev": 1}),
    "END flag": E(Op.END, {"push_prev": 1}),
    "LOAD into OBUF": load(1, buf=Buf.OBUF.value),
    "SAVE from WBUF": E(Op.SAVE, buf=Buf.WBUF.value, length=1, rows=1, planes=1),
    "LOAD rows 0": E(Op.LOAD, length=1, rows=0, planes=1),
    "SAVE unaligned": save(1, dram_addr=12),
    "SETUP stride 0": E(Op.SETUP, kh=1, kw=1, stride=0, n_icg=1),
    "SETUP dw n_icg 2": E(Op.SETUP, kh=3, kw=3, stride=1, n_icg=2, dw=1),
    "CONV n_ob 0": E(Op.CONV, out_h=1, out_w=1, n_ob=0),
    "MISC LUT out_w 0": E(Op.MISC, func=isa.MiscFunc.LUT.value, out_h=1, out_w=0, n_cb=1),
    "MISC n_cb 0": E(Op.MISC, func=isa.MiscFunc.ADD.value, out_h=1, out_w=1, n_cb=0),
}
# A reserved bit set in an otherwise legal word of each opcode: its lowest and highest.
for _op, _word in (("LOAD", load(1)), ("SAVE", save(1)), ("SETUP", setup()),
                   ("CONV", E(Op.CONV, out_h=1, out_w=1, n_ob=1)),
                   ("MISC", E(Op.MISC, func=isa.MiscFunc.ADD.value, out_h=1, out_w=1, n_cb=1)),
                   ("FRAME", E(Op.FRAME)), ("END", E(Op.END))):
    _mask = isa.reserved_mask(Op[_op])
    ILLEGAL_CASES[f"{_op} reserved low"] = _word | (_mask & -_mask)
    ILLEGAL_CASES[f"{_op} reserved high"] = _word | 1 << (_mask.bit_length() - 1)


@pytest.mark.parametrize("name", sorted(ILLEGAL_CASES))
def test_illegal_word(name):
    word = ILLEGAL_CASES[name]
    # The golden model agrees (STREAM is legal on its own but never inside a stream).
    assert Decoder()(word).illegal or name == "STREAM"
    t = run([FRAME, setup(), load(3), word, load(1, buf_addr=9), END])
    assert t["fault"] == (Fault.ILLEGAL, 2)
    assert not issued(t, load(1, buf_addr=9))
    assert word not in [w for _, w in t["accept"]]


def test_illegal_boundary_waits_for_the_frame_it_closes():
    """An illegal FRAME / SYNC / END faults where the boundary would be taken: the frame
    before it runs to its end first, and a fault or deadlock in that frame comes first."""
    bad_end = END | 1 << (isa.INSN_BITS - 1)
    bad_frame = E(Op.FRAME, {"push_next": 1})
    tail = conv(3, {"pop_prev": 1})
    t = run([FRAME, setup(), load(6, {"push_next": 1}), tail, bad_frame, END])
    assert t["fault"] == (Fault.ILLEGAL, 3)
    assert issued(t, tail) and t["done"][-1][0] < t["cycles"]
    t = run([FRAME, setup(), load(4, row_stride=DMA_FAULT_STRIDE), bad_end])
    assert t["fault"] == (Fault.SEGMENT, 1)
    t = run([FRAME, setup(), conv(1, {"pop_next": 1}), bad_end])
    assert t["fault"] == (Fault.DEADLOCK, 1)


@pytest.mark.parametrize("words, index", [
    ([load(1)], 0),                                            # before any FRAME
    ([FRAME, setup(), E(Op.SYNC, barrier=0), load(1)], 0),     # after a SYNC
    ([FRAME, conv(1)], 0),                                     # CONV before SETUP
    ([FRAME, E(Op.MISC, func=0, out_h=1, out_w=1, n_cb=1)], 0),
    ([FRAME, setup(), FRAME, conv(1)], 0),                     # SETUP is per frame
])
def test_illegal_in_context(words, index):
    assert run(words)["fault"] == (Fault.ILLEGAL, index)


def test_add_needs_no_setup():
    t = run([FRAME, E(Op.MISC, func=isa.MiscFunc.ADD.value, out_h=1, out_w=2, n_cb=1), END])
    assert t["fault"] is None and not t["left"]


def random_word(rng):
    op = rng.choice([o.value for o in Op] + [6, 7, 12, 15])
    deps = rng.choice([0, 0, 0, 1, 2, 4, 8, 5, 15])
    view = isa.BODY_OF.get(Op(op)) if op in {o.value for o in Op} else None
    word = op | deps << 4
    if op in {o.value for o in isa.BODY_OF} and rng.random() < 0.15:
        mask = isa.reserved_mask(Op(op))
        word |= 1 << rng.choice([b for b in range(isa.INSN_BITS) if mask >> b & 1])
    if view:
        fields = {}
        for name, (off, width, signed) in isa.FIELDS[view].items():
            value = rng.choice([0, 1, 2, 3, 8, 12, (1 << width) - 1])
            fields[name] = value & ((1 << width) - 1)
        word |= isa.pack_fields(isa.FIELDS[view], {
            k: (v - (1 << isa.FIELDS[view][k][1]) if isa.FIELDS[view][k][2]
                and v >> (isa.FIELDS[view][k][1] - 1) else v) for k, v in fields.items()})
    return word


def test_decode_matches_golden_model():
    """Random words inside a frame with SETUP: ILLEGAL exactly when the model says so."""
    rng = random.Random(7)
    words = [random_word(rng) for _ in range(80)]
    dut = Harness(CFG)
    d = dut.dispatch
    verdicts = []

    async def bench(ctx):
        for word in words:
            ctx.set(dut.flush, 1)
            await ctx.tick()
            ctx.set(dut.flush, 0)
            for w in (FRAME, setup(), word):
                ctx.set(dut.insn.payload.as_value(), w)
                ctx.set(dut.insn.valid, 1)
                for _ in range(8):
                    if ctx.get(dut.insn.ready) or ctx.get(d.fault_valid):
                        break
                    await ctx.tick()
                await ctx.tick()
            ctx.set(dut.insn.valid, 0)
            await ctx.tick()
            verdicts.append(ctx.get(d.fault_valid) and Fault(ctx.get(d.fault)) == Fault.ILLEGAL)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    dec = Decoder()
    expected = [bool(dec(w).illegal) or (dec(w).opcode == Op.STREAM) for w in words]
    assert verdicts == expected
    assert 10 < sum(expected) < len(words) - 5          # both kinds are exercised
