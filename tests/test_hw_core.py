"""CoreTop (fetch + dispatch + buffers + DMA + compute) in amaranth.sim against an AXI4 RAM
model, compared with the golden model.

The first tests replace the compute unit by a stand-in that copies IBUF entries to OBUF, so
fetch, dispatch, buffers, the real LOAD/SAVE units and the AXI merge are checked on their
own; the compiled-program tests run the real compute unit."""

import numpy as np
import pytest

from vdla import isa
from vdla.compiler.program import Allocation, ints_from_words
from vdla.compiler.static import compile_graph
from vdla.compiler.synthetic import IRBuilder, random_input
from vdla.config import get_config
from vdla.hw.core_top import CoreTop
from vdla.regs import Fault
from vdla.sim.host import Host
from vdla.sim.iss import Machine

from hw_sim import CopyCore, run_core_top
from isa_helpers import E, dma

Op, Buf = isa.Opcode, isa.Buffer
TINY = get_config("small").replace(ibuf_depth=64, wbuf_depth=16, pbuf_depth=16,
                                   obuf_depth=64, imem_depth=64)
DRAM_BYTES = 0x4000


class CopyTop(CoreTop):
    def make_core(self, config):
        return CopyCore(config)


def iss_run(config, words, dram, seg_base, seg_size, prog_base=0):
    """The golden model on the same image: returns (status, DRAM after)."""
    machine = Machine(config, len(dram))
    machine.dram[:] = dram
    machine.write_imem(prog_base, list(words))
    for name, value in {"CORE_MASK": 1, "PROG_BASE": prog_base, "PROG_SIZE": len(words),
                        "SEG_BASE_LO": seg_base & 0xFFFF_FFFF, "SEG_BASE_HI": seg_base >> 32,
                        "SEG_SIZE_LO": seg_size & 0xFFFF_FFFF, "SEG_SIZE_HI": seg_size >> 32,
                        "RUNS": 1}.items():
        machine.write_reg(0, name, value)
    machine.start(0)
    machine.run()
    return machine.status(0), machine.dram


def copy_program():
    load = dma(Op.LOAD, Buf.IBUF, 5, 0x100, 4, rows=3, planes=2, row_stride=6,
               plane_stride=20, deps={"push_next": 1})
    conv = E(Op.CONV, {"pop_prev": 1, "push_next": 1}, ibuf_addr=5, obuf_addr=2, out_h=4,
             out_w=6, n_ob=1)
    save = dma(Op.SAVE, Buf.OBUF, 2, 0x400, 24, deps={"pop_prev": 1})
    resave = dma(Op.SAVE, Buf.OBUF, 2, 0x600, 8, rows=3, row_stride=10)
    return [E(Op.STREAM, vcore=0, count=1, offset=1), E(Op.FRAME), load,
            E(Op.SETUP, kh=1, kw=1, stride=1, n_icg=1), conv, save, E(Op.SYNC, barrier=0),
            E(Op.FRAME, frame=1), resave, E(Op.END)]


@pytest.mark.parametrize("stall", [0.0, 0.4])
def test_copy_program_through_dram(stall):
    seg_base, seg_size = 0x1000, 0x800
    rng = np.random.default_rng(1)
    dram = rng.integers(0, 256, DRAM_BYTES, dtype=np.uint8)
    words = copy_program()
    out = run_core_top(CopyTop(TINY), dram, words, seg_base=seg_base, seg_size=seg_size,
                       prog_base=3, stall=stall)
    assert out["done"] and not out["fault_valid"], out
    seg = dram[seg_base:seg_base + seg_size]
    entries = [seg[0x100 + 8 * (p * 20 + r * 6 + i):][:8] for p in range(2) for r in range(3)
               for i in range(4)]
    expect = dram.copy()
    eseg = expect[seg_base:seg_base + seg_size]
    eseg[0x400:0x400 + 24 * 8] = np.concatenate(entries)
    for r in range(3):
        eseg[0x600 + 80 * r:0x600 + 80 * r + 64] = np.concatenate(entries[8 * r:8 * r + 8])
    assert np.array_equal(out["mem"], expect)
    assert sum(b for _, b in out["reads"]) == 24 and sum(b for _, b in out["writes"]) == 48
    print(f"copy program: {out['cycles']} cycles, load {out['load_busy']}, "
          f"compute {out['compute_busy']}, save {out['save_busy']}")


@pytest.mark.parametrize("case", ["segment", "illegal", "buffer", "deadlock"])
def test_fault_matches_golden_model(case):
    """Faults before any compute work: code and address as the golden model reports them."""
    seg_base, seg_size = 0x800, 0x400
    ok = dma(Op.LOAD, Buf.IBUF, 0, 0x0, 4, deps={"push_next": 1})
    bad = {
        "segment": dma(Op.LOAD, Buf.WBUF, 0, 0x3F8, 2),
        "illegal": dma(Op.LOAD, Buf.IBUF, 0, 0x0, 1, deps={"pop_prev": 1}),
        "buffer": dma(Op.LOAD, Buf.PBUF, TINY.pbuf_depth - 1, 0x0, 3),
        "deadlock": E(Op.CONV, {"pop_next": 1}, out_h=1, out_w=1, n_ob=1),
    }[case]
    words = [E(Op.STREAM, vcore=0, count=1, offset=1), E(Op.FRAME), ok,
             E(Op.SETUP, kh=1, kw=1, stride=1, n_icg=1),
             E(Op.CONV, {"pop_prev": 1}, out_h=1, out_w=1, n_ob=1), E(Op.FRAME), bad,
             E(Op.END)]
    dram = np.zeros(DRAM_BYTES, np.uint8)
    status, _ = iss_run(TINY, words, dram, seg_base, seg_size, prog_base=2)
    assert status["faulted"]
    out = run_core_top(CopyTop(TINY), dram, words, seg_base=seg_base, seg_size=seg_size,
                       prog_base=2)
    assert (out["fault"], out["fault_pc"]) == (status["fault"], status["fault_pc"])


def test_restart_after_fault_clears_buffers():
    """A second tenant start on the core: the fault is forgotten, and OBUF, filled by the
    first program, reads back as zeros (buffers are cleared at every start)."""
    seg_base, seg_size = 0x1000, 0x800
    dram = np.random.default_rng(2).integers(0, 256, DRAM_BYTES, dtype=np.uint8)
    faulting = copy_program()[:-1] + [dma(Op.LOAD, Buf.IBUF, 0, 0x800, 1), E(Op.END)]
    dump = [E(Op.STREAM, vcore=0, count=1, offset=1), E(Op.FRAME),
            dma(Op.SAVE, Buf.OBUF, 0, 0x700, 26), E(Op.END)]
    out = run_core_top(CopyTop(TINY), dram, None, seg_base=seg_base, seg_size=seg_size,
                       runs=[(faulting, 0), (dump, 20)])
    first, second = out["runs"]
    assert (first["fault"], first["fault_pc"]) == (Fault.SEGMENT, len(faulting) - 2)
    assert second["done"] and not second["fault_valid"]
    assert not out["mem"][seg_base + 0x700:seg_base + 0x700 + 26 * 8].any()
    # The first program did fill OBUF before it faulted: its SAVE reached DRAM.
    assert out["mem"][seg_base + 0x400:seg_base + 0x400 + 24 * 8].any()


# ------------------------------------------------------------ compiled programs, real units

SMALL_HW = get_config("small").replace(ibuf_depth=128, wbuf_depth=32, pbuf_depth=32,
                                       obuf_depth=64, imem_depth=128)


def tiny_graph(kind):
    b = IRBuilder(f"tiny_{kind}", seed=3)
    if kind == "conv_dense":
        # Chunked fully-connected layer: double-buffered steps (pop_next / push_prev tokens)
        # and a SETUP in the middle of a frame.
        x = b.input((20, 5, 5))
        b.output(b.dense(b.conv(x, 16, 3), 10))
        return b.graph()
    x = b.input((5, 6, 7))
    if kind == "conv_pool":
        y = b.pool(b.conv(x, 10, 3), "max", 2, 2)
    elif kind == "conv_add":
        a = b.conv(x, 8, 1, relu=False)
        y = b.add(a, b.conv(a, 8, 3, relu=False))
    else:
        raise ValueError(kind)
    b.output(y)
    return b.graph()


def golden_run(config, graph, seg_base):
    """Compile, link for one core, prepare DRAM and run the golden model.

    Returns ``(image words, DRAM before, DRAM after, ISS status, program, allocation)``."""
    program = compile_graph(graph, config)
    host = Host(config, seg_base + -(-program.segment_size // 8) * 8)
    handle = host.tenant(0, Allocation(cores=1, seg_base=seg_base))
    image = handle.load(program)
    for name, x in random_input(graph, seed=5).items():
        handle.write_input(name, x)
    before = host.machine.dram.copy()
    handle.start()
    host.run()
    status = handle.check()
    return (ints_from_words(image.words), before, host.machine.dram.copy(), status, program,
            handle.allocation)


@pytest.mark.parametrize("kind, stall", [("conv_pool", 0.0), ("conv_add", 0.0),
                                         ("conv_dense", 0.3)])
def test_compiled_program_matches_golden_model(kind, stall):
    seg_base = 0x2000
    words, before, after, status, program, alloc = golden_run(SMALL_HW, tiny_graph(kind),
                                                              seg_base)
    out = run_core_top(CoreTop(SMALL_HW), before, words, seg_base=seg_base,
                       seg_size=alloc.seg_size, max_cycles=60000, stall=stall)
    assert out["done"] and not out["fault_valid"], out
    assert np.array_equal(out["mem"], after)
    print(f"{kind}: {len(words)} words, RTL {out['cycles']} cycles (load {out['load_busy']}, "
          f"compute {out['compute_busy']}, save {out['save_busy']}); "
          f"golden model estimate {status['cycles']}")
