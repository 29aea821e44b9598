"""MISC LUT: the golden model against the ISA's definition, and the ComputeUnit against the
golden model instruction by instruction (amaranth's simulator), faults and cycles included."""

import numpy as np
import pytest

from vdla import isa
from vdla.hw.compute import ComputeUnit
from vdla.regs import Fault
from vdla.sim.iss_compute import execute_misc, misc_cycles
from vdla.sim.iss_core import Core
from vdla.sim.iss_decode import Decoder, TenantFault

from test_hw_compute import SMALL, check_program, misc, setup

LUT = isa.MiscFunc.LUT
#: PBUF entries of the random tables (the rest keeps the PostParams of random_core).
TABLE_AREA = 32


def lut(**f):
    return misc(LUT, **f)


def put_table(core, pbuf_addr, table):
    """Store ``table`` (256 int8) as the ISA defines it: table[i] is byte i % 16 of PBUF
    entry pbuf_addr + i // 16."""
    for i, value in enumerate(np.asarray(table, np.int8).view(np.uint8)):
        core.pbuf[(pbuf_addr + i // 16) * isa.POST_BYTES + i % 16] = value


@pytest.mark.parametrize("pbuf_addr", [0, 7, SMALL.pbuf_depth - isa.LUT_ENTRIES])
def test_golden_model_follows_the_isa(pbuf_addr):
    """Independent of the RTL: the table as the ISA lays it out, the lanes and entries as
    ADD lays them out."""
    rng = np.random.default_rng(pbuf_addr)
    core = Core(SMALL, 0)
    table = rng.integers(-128, 128, 256)
    put_table(core, pbuf_addr, table)
    x = rng.integers(-128, 128, (2 * 3 * 4, SMALL.cb))
    core.ibuf[5 * SMALL.cb:(5 + len(x)) * SMALL.cb] = x.astype(np.int8).view(np.uint8).ravel()
    word = lut(src_a=5, obuf_addr=9, pbuf_addr=pbuf_addr, out_h=3, out_w=4, n_cb=2)
    execute_misc(core, None, Decoder()(word).fields)
    got = core.obuf[9 * SMALL.cb:(9 + len(x)) * SMALL.cb].view(np.int8).reshape(x.shape)
    np.testing.assert_array_equal(got, table[x + 128])


def test_golden_model_faults_outside_pbuf():
    core = Core(SMALL, 0)
    fields = Decoder()(lut(pbuf_addr=SMALL.pbuf_depth - isa.LUT_ENTRIES + 1)).fields
    with pytest.raises(TenantFault) as info:
        execute_misc(core, None, fields)
    assert info.value.code == Fault.BUFFER and "PBUF" in info.value.reason


def random_luts(config, rng, count):
    """LUT instructions of random shapes and places; the tables in the first TABLE_AREA
    PBUF entries (random bytes there)."""
    program = []
    for _ in range(count):
        n_cb = int(rng.integers(1, 4))
        out_h, out_w = (int(v) for v in rng.integers(1, 5, 2))
        entries = n_cb * out_h * out_w
        program.append(lut(
            src_a=int(rng.integers(0, config.ibuf_depth - entries + 1)),
            src_b=int(rng.integers(0, 1 << 14)), in_h=int(rng.integers(0, 256)),
            obuf_addr=int(rng.integers(0, config.obuf_depth - entries + 1)),
            pbuf_addr=int(rng.integers(0, TABLE_AREA - isa.LUT_ENTRIES + 1)),
            out_h=out_h, out_w=out_w, n_cb=n_cb))
    return program


def check_lut_cycles(config, program, cycles):
    """Every LUT took CB cycles per entry plus the unit's fixed overhead, the cycles the
    golden model counts for it."""
    for word, count in zip(program, cycles):
        dec = Decoder()(word)
        if dec.opcode == isa.Opcode.MISC and dec.fields["func"] == LUT.value:
            f = dec.fields
            entries = f["n_cb"] * f["out_h"] * f["out_w"]
            assert count == ComputeUnit.lut_cycles(config, entries)
            assert count == misc_cycles(None, f, config)


CONFIGS = {"8x8": SMALL, "8x4": SMALL.replace(ocp=4),
           "16x8": SMALL.replace(icp=16, ocp=8)}


@pytest.mark.parametrize("name", CONFIGS)
def test_random_luts(name):
    """Random LUTs between an ADD and a pooling, which use PBUF as PostParams: the port goes
    back and forth between the lookups and the parameter cache."""
    config = CONFIGS[name]
    rng = np.random.default_rng(sum(map(ord, name)) + 40)
    program = [
        *random_luts(config, rng, 3),
        misc(isa.MiscFunc.ADD, src_a=3, src_b=100, obuf_addr=10, pbuf_addr=TABLE_AREA,
             out_h=2, out_w=2, n_cb=1),
        *random_luts(config, rng, 2),
        setup(kh=2, kw=2, stride=2, pad_value=-128),
        misc(isa.MiscFunc.MAXPOOL, src_a=20, obuf_addr=0, pbuf_addr=TABLE_AREA, in_h=4,
             in_w=4, out_h=2, out_w=2, n_cb=1),
        *random_luts(config, rng, 2),
    ]

    def tables(core):
        core.pbuf[:TABLE_AREA * isa.POST_BYTES] = rng.integers(0, 256, TABLE_AREA * 16)

    _, cycles = check_program(config, program, seed=17, prepare=tables)
    check_lut_cycles(config, program, cycles)


def test_lut_faults():
    """Faults as the other MISC functions take them: ILLEGAL for an empty tile, BUFFER for
    an extent outside IBUF / OBUF or a table outside PBUF, no SETUP needed; a faulting LUT
    writes nothing."""
    config = SMALL
    depth = config.pbuf_depth
    program = [
        lut(pbuf_addr=0, n_cb=1, out_h=2, out_w=2),                 # no SETUP in the frame: fine
        lut(n_cb=0),
        lut(out_w=0),
        lut(pbuf_addr=depth - isa.LUT_ENTRIES + 1),                 # table past PBUF
        lut(pbuf_addr=(1 << 12) - 1),
        lut(pbuf_addr=depth - isa.LUT_ENTRIES, obuf_addr=20),       # the last table that fits
        lut(src_a=config.ibuf_depth - 3, out_h=2, out_w=2),         # IBUF extent
        lut(obuf_addr=config.obuf_depth - 1, out_h=1, out_w=2),     # OBUF extent
        lut(pbuf_addr=depth - isa.LUT_ENTRIES, n_cb=3, out_h=4, out_w=5),  # one table, any n_cb
    ]
    faults = []
    _, cycles = check_program(config, program, seed=18, faults=faults)
    N, I, B = Fault.NONE, Fault.ILLEGAL, Fault.BUFFER
    assert faults == [N, I, I, B, B, N, B, B, N]
    fine = [k for k, fault in enumerate(faults) if fault == N]
    check_lut_cycles(config, [program[k] for k in fine], [cycles[k] for k in fine])
