"""ComputeUnit against the golden model (vdla.sim.iss_compute), instruction by instruction.

A harness wraps the unit with its five buffers (lib.memory, preloaded with random contents);
each program runs in one simulation and the OBUF / ABUF contents after every instruction are
compared with what the instruction-set simulator computes from the same buffers.
"""

import numpy as np
import pytest
from amaranth.hdl import Module, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from vdla import isa
from vdla.config import get_config
from vdla.hw.compute import ComputeUnit, PostProcess
from vdla.regs import Fault
from vdla.sim.iss_compute import execute_conv, execute_misc
from vdla.sim.iss_core import Core
from vdla.sim.iss_decode import Decoder, TenantFault

SMALL = get_config("small").replace(ibuf_depth=256, wbuf_depth=64, pbuf_depth=64, obuf_depth=64)


class Harness(wiring.Component):
    """The unit with buffers stored as flat words, preloaded from a golden-model core."""

    def __init__(self, config, core):
        self.config = config
        super().__init__({"cmd": In(stream.Signature(isa.Insn)), "done": Out(1),
                          "fault": Out(Fault), "idle": Out(1), "clear": In(1),
                          "cycles": Out(32)})
        cb = config.cb

        def words(flat, entry_bytes):
            raw = np.ascontiguousarray(flat).view(np.uint8).reshape(-1, entry_bytes)
            return [int.from_bytes(row.tobytes(), "little") for row in raw]

        def mem(flat, entry_bytes):
            init = words(flat, entry_bytes)
            return Memory(shape=unsigned(8 * entry_bytes), depth=len(init), init=init)

        self.ibuf = mem(core.ibuf, cb)
        self.wbuf = mem(core.wbuf, cb * cb)
        self.pbuf = mem(core.pbuf, isa.POST_BYTES)
        self.obuf = mem(core.obuf, cb)
        self.abuf = mem(core.abuf, 4 * cb)

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = unit = ComputeUnit(self.config)
        for name in ("ibuf", "wbuf", "pbuf", "obuf", "abuf"):
            m.submodules[name] = getattr(self, name)
        m.d.comb += [unit.cmd.valid.eq(self.cmd.valid), unit.cmd.payload.eq(self.cmd.payload),
                     self.cmd.ready.eq(unit.cmd.ready), self.done.eq(unit.done),
                     self.fault.eq(unit.fault), self.idle.eq(unit.idle),
                     unit.clear.eq(self.clear)]
        m.d.sync += self.cycles.eq(self.cycles + 1)
        for name in ("ibuf", "wbuf", "pbuf", "abuf"):
            port, ext = getattr(self, name).read_port(), getattr(unit, f"{name}_read")
            m.d.comb += [port.addr.eq(ext.addr), port.en.eq(ext.en), ext.data.eq(port.data)]
        for name, bits in (("obuf", 8), ("abuf", 32)):
            port, ext = getattr(self, name).write_port(granularity=bits), getattr(unit, f"{name}_write")
            m.d.comb += [port.addr.eq(ext.addr), port.data.eq(ext.data), port.en.eq(ext.en)]
        return m


def random_core(config, rng):
    """A golden-model core with random buffers (ABUF with int32 extremes, so sums wrap)."""
    core = Core(config, 0)
    core.ibuf[:] = rng.integers(0, 256, core.ibuf.size)
    core.wbuf[:] = rng.integers(0, 256, core.wbuf.size)
    core.obuf[:] = rng.integers(0, 256, core.obuf.size)
    core.abuf[:] = rng.integers(-(1 << 31), 1 << 31, core.abuf.shape, dtype=np.int64)
    core.abuf.reshape(-1)[::7] = (1 << 31) - 1
    entries = []
    for k in range(config.pbuf_depth):
        pooling = k >= config.pbuf_depth // 2       # upper half: small-accumulator scales
        lo = int(rng.integers(-128, -100))
        entries.append(isa.pack_fields(isa.POST_FIELDS, {
            "bias": int(rng.integers(-4000, 4000)),
            "mult_a": int(rng.integers(1, 1 << 16)),
            "mult_b": int(rng.integers(1, 1 << 16)),
            "shift": int(rng.integers(14, 19) if pooling else rng.integers(24, 32)),
            "zp_out": int(rng.integers(-20, 20)),
            "lo": lo if k % 5 else 0,
            "hi": int(rng.integers(100, 128)) if k % 7 else 6,
            "zp_a": int(rng.integers(-128, 128)), "zp_b": int(rng.integers(-128, 128)),
        }))
    core.pbuf[:] = np.frombuffer(b"".join(e.to_bytes(16, "little") for e in entries), np.uint8)
    return core


def golden(core, state, word):
    """Execute one word on the golden model; returns the fault it raises."""
    dec = Decoder()(word)
    if dec.illegal:
        return Fault.ILLEGAL
    if dec.opcode == isa.Opcode.SETUP:
        state["setup"] = dec.fields
        return Fault.NONE
    if dec.opcode not in (isa.Opcode.CONV, isa.Opcode.MISC):
        return Fault.ILLEGAL
    windowed = dec.opcode == isa.Opcode.CONV or dec.fields["func"] in (
        isa.MiscFunc.MAXPOOL.value, isa.MiscFunc.AVGPOOL.value)
    if windowed and state["setup"] is None:
        return Fault.ILLEGAL
    try:
        run = execute_conv if dec.opcode == isa.Opcode.CONV else execute_misc
        run(core, state["setup"], dec.fields)
    except TenantFault as fault:
        return fault.code
    return Fault.NONE


def run_program(config, core, program, max_cycles=20000):
    """Run ``program`` (words, or "clear") on the RTL; returns per word (fault, cycles, obuf
    bytes, abuf) after it finished."""
    dut = Harness(config, core)
    results = []

    async def bench(ctx):
        for word in program:
            if word == "clear":
                ctx.set(dut.clear, 1)
                await ctx.tick()
                ctx.set(dut.clear, 0)
                results.append(None)
                continue
            assert ctx.get(dut.idle) and ctx.get(dut.cmd.ready)
            ctx.set(dut.cmd.valid, 1)
            ctx.set(dut.cmd.payload.as_value(), word)
            t0 = ctx.get(dut.cycles)
            await ctx.tick()
            ctx.set(dut.cmd.valid, 0)
            while not ctx.get(dut.done):
                await ctx.tick()
                assert ctx.get(dut.cycles) - t0 < max_cycles, "instruction does not finish"
            cycles = ctx.get(dut.cycles) - t0
            fault = ctx.get(dut.fault)
            obuf = [ctx.get(dut.obuf.data[i]) for i in range(config.obuf_depth)]
            abuf = [ctx.get(dut.abuf.data[i]) for i in range(config.obuf_depth)]
            results.append((fault, cycles, obuf, abuf))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return dut, results


def check_program(config, program, seed, max_cycles=20000, prepare=None, faults=None):
    """Runs ``program`` on RTL and golden model from the same random buffers and compares the
    faults and OBUF / ABUF after every instruction. Returns the RTL cycle counts.

    ``prepare(core)`` may change the random buffers first; ``faults``, a list, receives the
    fault of every instruction."""
    rng = np.random.default_rng(seed)
    core = random_core(config, rng)
    if prepare is not None:
        prepare(core)
    dut, results = run_program(config, core, program, max_cycles)
    cb, state, cycles = config.cb, {"setup": None}, []
    for word, result in zip(program, results):
        if word == "clear":
            state["setup"] = None
            continue
        fault, count, obuf, abuf = result
        expected = golden(core, state, word)
        desc = isa.decode(word)
        assert fault == expected, f"{desc.opcode}: fault {fault}, expected {expected}"
        if faults is not None:
            faults.append(Fault(fault))
        got_obuf = np.frombuffer(b"".join(v.to_bytes(cb, "little") for v in obuf), np.uint8)
        got_abuf = np.frombuffer(b"".join(v.to_bytes(4 * cb, "little") for v in abuf), np.int32)
        np.testing.assert_array_equal(got_obuf, core.obuf, err_msg=f"OBUF after {desc.opcode}")
        np.testing.assert_array_equal(got_abuf, core.abuf.reshape(-1),
                                      err_msg=f"ABUF after {desc.opcode}")
        cycles.append(count)
    return dut, cycles


def setup(**f):
    f = {"kh": 3, "kw": 3, "stride": 1, "n_icg": 1, "pad_value": 0, "dw": 0} | f
    return isa.encode(isa.Opcode.SETUP, **f)


def conv(**f):
    f = {"out_h": 3, "out_w": 3, "n_ob": 1, "in_h": 3, "in_w": 3, "acc_init": 1,
         "acc_final": 1} | f
    return isa.encode(isa.Opcode.CONV, **f)


def misc(func, **f):
    f = {"out_h": 2, "out_w": 2, "n_cb": 1, "in_h": 4, "in_w": 4, "func": func.value} | f
    return isa.encode(isa.Opcode.MISC, **f)


def expected_cycles(config, setup_fields, word):
    """RTL cycles of a CONV that never stalls: one per PE-array beat plus a fixed overhead."""
    f = isa.unpack_fields(isa.FIELDS["conv"], word)
    s = setup_fields
    beats = (f["n_ob"] * f["out_h"] * f["out_w"] * s["kh"] * s["kw"] * s["n_icg"]
             * (config.icp // config.ocp))
    return beats, beats + ComputeUnit.fixed_cycles(config, post=bool(f["acc_final"]))


def check_conv_cycles(config, program, cycles):
    setup_fields = None
    for word, count in zip(program, cycles):
        opcode = isa.decode(word).opcode
        if opcode == isa.Opcode.SETUP:
            setup_fields = isa.unpack_fields(isa.FIELDS["setup"], word)
        elif opcode == isa.Opcode.CONV:
            assert count == expected_cycles(config, setup_fields, word)[1]


CONFIGS = {"8x8": SMALL, "8x4": SMALL.replace(ocp=4)}


@pytest.mark.parametrize("name", CONFIGS)
def test_conv_program(name):
    config = CONFIGS[name]
    program = [
        setup(kh=3, kw=3, stride=1, n_icg=2, pad_value=-3),
        conv(ibuf_addr=5, wbuf_addr=2, pbuf_addr=8, obuf_addr=3, in_h=4, in_w=5, out_h=4,
             out_w=5, n_ob=2, pad_top=1, pad_left=1),
        # Partial-sum pair: ABUF (starting from its random contents), then finish to OBUF.
        setup(kh=2, kw=1, stride=2, n_icg=1, pad_value=7),
        conv(ibuf_addr=40, wbuf_addr=40, obuf_addr=30, in_h=5, in_w=3, out_h=3, out_w=2,
             n_ob=2, pad_top=0, pad_left=1, acc_init=0, acc_final=0),
        conv(ibuf_addr=90, wbuf_addr=50, pbuf_addr=16, obuf_addr=30, in_h=5, in_w=3, out_h=3,
             out_w=2, n_ob=2, pad_top=1, pad_left=0, acc_init=0, acc_final=1),
        # Depthwise: input block follows the output block.
        setup(kh=3, kw=3, stride=2, n_icg=1, pad_value=1, dw=1),
        conv(ibuf_addr=120, wbuf_addr=20, pbuf_addr=0, obuf_addr=45, in_h=5, in_w=4, out_h=3,
             out_w=2, n_ob=2, pad_top=1, pad_left=1),
        # 1x1, one beat per accumulation: results every cycle.
        setup(kh=1, kw=1, stride=1, n_icg=1),
        conv(ibuf_addr=7, wbuf_addr=60, pbuf_addr=24, obuf_addr=0, in_h=4, in_w=4, out_h=4,
             out_w=4, n_ob=2, acc_init=1, acc_final=1),
    ]
    _, cycles = check_program(config, program, seed=11)
    check_conv_cycles(config, program, cycles)


@pytest.mark.parametrize("name", CONFIGS)
def test_misc_program(name):
    config = CONFIGS[name]
    mp, ap, add = isa.MiscFunc.MAXPOOL, isa.MiscFunc.AVGPOOL, isa.MiscFunc.ADD
    program = [
        misc(add, src_a=3, src_b=100, obuf_addr=10, pbuf_addr=32, out_h=3, out_w=2, n_cb=2),
        setup(kh=3, kw=3, stride=2, pad_value=-128),
        misc(mp, src_a=20, obuf_addr=0, pbuf_addr=40, in_h=5, in_w=4, out_h=3, out_w=2,
             n_cb=2, pad_top=1, pad_left=1),
        setup(kh=2, kw=2, stride=2, pad_value=-5),
        misc(ap, src_a=60, obuf_addr=20, pbuf_addr=48, in_h=4, in_w=3, out_h=2, out_w=2,
             n_cb=2, pad_left=1),
        setup(kh=1, kw=1, stride=1, pad_value=0),
        misc(mp, src_a=9, obuf_addr=40, pbuf_addr=32, in_h=3, in_w=3, out_h=3, out_w=3, n_cb=1),
    ]
    check_program(config, program, seed=12)


def test_faults_have_no_effect():
    config = SMALL
    mp = isa.MiscFunc.MAXPOOL
    program = [
        conv(),                                          # CONV before SETUP
        misc(mp),                                        # pooling before SETUP
        setup(n_icg=2, dw=1),                            # depthwise with n_icg != 1
        setup(kh=0),
        setup(kh=3, kw=3, n_icg=1),
        misc(isa.MiscFunc.LUT, out_h=0),
        conv(out_w=0),
        misc(mp, n_cb=0),
        isa.encode(isa.Opcode.LOAD, length=1, rows=1, planes=1),
        conv(obuf_addr=60, n_ob=1, out_h=2, out_w=3),    # OBUF 60..65 of 64
        conv(ibuf_addr=250, in_h=3, in_w=3),             # IBUF extent
        conv(wbuf_addr=60),                              # WBUF 60..68 of 64
        conv(pbuf_addr=60),                              # PBUF 60..67 of 64
        conv(pbuf_addr=60, acc_final=0),                 # PBUF unused: fine
        misc(isa.MiscFunc.ADD, src_b=250),               # IBUF extent of B
        "clear",
        conv(),                                          # SETUP forgotten
    ]
    check_program(config, program, seed=13)


def test_conv_cycles_and_utilization():
    """The PE array is busy every cycle of a CONV but for a fixed overhead."""
    config = SMALL
    program = [setup(kh=3, kw=3, stride=1, n_icg=4, pad_value=0),
               conv(ibuf_addr=0, wbuf_addr=0, pbuf_addr=0, obuf_addr=0, in_h=6, in_w=6,
                    out_h=6, out_w=6, n_ob=1, pad_top=1, pad_left=1)]
    _, cycles = check_program(config, program, seed=14)
    beats, total = expected_cycles(config, isa.unpack_fields(isa.FIELDS["setup"], program[0]),
                                   program[1])
    assert cycles[1] == total, "stalled or faulted"
    assert beats / total > 0.95


def test_short_blocks_wait_for_parameters():
    """Blocks of one result are shorter than their parameters take to load: results are held
    back through the PE array / MISC lanes and nothing is lost."""
    config = SMALL.replace(ocp=4)
    add = isa.MiscFunc.ADD
    program = [
        setup(kh=1, kw=1, stride=1, n_icg=1),
        conv(ibuf_addr=3, wbuf_addr=1, pbuf_addr=0, obuf_addr=2, in_h=1, in_w=1, out_h=1,
             out_w=1, n_ob=6),
        setup(kh=1, kw=1, stride=1, n_icg=3),
        conv(ibuf_addr=30, wbuf_addr=9, pbuf_addr=8, obuf_addr=20, in_h=1, in_w=1, out_h=1,
             out_w=1, n_ob=5),
        misc(add, src_a=40, src_b=80, obuf_addr=40, pbuf_addr=16, out_h=1, out_w=1, n_cb=5),
    ]
    check_program(config, program, seed=15)


def random_program(config, rng, count):
    """Random SETUP + CONV / MISC pairs that fit the buffers (tiny, for simulation speed)."""
    cb = config.cb
    program = []
    for _ in range(count):
        kind = rng.choice(["conv", "dw", "pair", "maxpool", "avgpool", "add"])
        kh, kw = (int(v) for v in rng.integers(1, 4, 2))
        stride = int(rng.integers(1, 4))
        n_icg = int(rng.integers(1, 4)) if kind in ("conv", "pair") else 1
        n_blk = int(rng.integers(1, 3))
        out_h, out_w = (int(v) for v in rng.integers(1, 4, 2))
        pt, pl = (int(rng.integers(0, k)) for k in (kh, kw))
        in_h = max(0, (out_h - 1) * stride + kh - pt - int(rng.integers(0, 2)))
        in_w = max(0, (out_w - 1) * stride + kw - pl - int(rng.integers(0, 2)))
        groups = n_icg if kind in ("conv", "pair") else n_blk
        pad_value = -128 if kind == "maxpool" else int(rng.integers(-128, 128))
        setup_word = setup(kh=kh, kw=kw, stride=stride, n_icg=n_icg, pad_value=pad_value,
                           dw=int(kind == "dw"))

        def addr(depth, entries):
            return int(rng.integers(0, depth - entries + 1))

        entries = n_blk * out_h * out_w
        obuf = addr(config.obuf_depth, entries)
        pbuf = addr(config.pbuf_depth, n_blk * cb)
        if kind in ("conv", "dw", "pair"):
            weights = n_blk * kh * kw * n_icg
            fields = dict(ibuf_addr=addr(config.ibuf_depth, groups * in_h * in_w),
                          wbuf_addr=addr(config.wbuf_depth, weights), pbuf_addr=pbuf,
                          obuf_addr=obuf, in_h=in_h, in_w=in_w, out_h=out_h, out_w=out_w,
                          n_ob=n_blk, pad_top=pt, pad_left=pl)
            program.append(setup_word)
            if kind == "pair":
                program.append(conv(**fields | {"acc_init": 1, "acc_final": 0}))
                fields["ibuf_addr"] = addr(config.ibuf_depth, groups * in_h * in_w)
                program.append(conv(**fields | {"acc_init": 0, "acc_final": 1}))
            else:
                program.append(conv(**fields | {"acc_init": int(rng.integers(0, 2)),
                                                "acc_final": int(rng.integers(0, 2))}))
        elif kind == "add":
            program.append(misc(isa.MiscFunc.ADD, src_a=addr(config.ibuf_depth, entries),
                                src_b=addr(config.ibuf_depth, entries), obuf_addr=obuf,
                                pbuf_addr=pbuf, out_h=out_h, out_w=out_w, n_cb=n_blk))
        else:
            func = isa.MiscFunc.MAXPOOL if kind == "maxpool" else isa.MiscFunc.AVGPOOL
            program.append(setup_word)
            program.append(misc(func, src_a=addr(config.ibuf_depth, n_blk * in_h * in_w),
                                obuf_addr=obuf, pbuf_addr=pbuf, in_h=in_h, in_w=in_w,
                                out_h=out_h, out_w=out_w, n_cb=n_blk, pad_top=pt,
                                pad_left=pl))
    return program


RANDOM_CONFIGS = {
    "8x8": SMALL,
    "8x2": SMALL.replace(ocp=2),
    "16x8": SMALL.replace(icp=16, ocp=8, pbuf_depth=64),
}


@pytest.mark.parametrize("name", RANDOM_CONFIGS)
def test_random_programs(name):
    config = RANDOM_CONFIGS[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    program = random_program(config, rng, 10)
    check_program(config, program, seed=16)
