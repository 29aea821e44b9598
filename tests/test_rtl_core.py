"""The single-core top (CoreTop) on Verilator through cocotb, bit for bit against the ISS.

Every test graph that compiles for the ``small`` configuration, and random single-layer
programs of every instruction class, run on the RTL with every tensor of the segment read
back (inputs, intermediate activations and outputs) and compared with the golden model; a few
run again with the AXI RAM pausing every channel at random.
Faulting programs (illegal words, DMA extents outside the segment) must report the golden
model's fault code and address and leave DRAM outside the segment untouched; the core then
runs a normal program again. One Verilator build for the session; all these runs share one
simulator launch (the launch costs more than most of the programs).
"""

import pathlib
import time

import numpy as np
import pytest

from graphs import GRAPHS, quantized
from vdla import isa
from vdla.compiler.errors import CompileError
from vdla.compiler.frontend import load_model
from vdla.compiler.layout import to_blocked
from vdla.compiler.link import link
from vdla.compiler.program import Allocation
from vdla.compiler.static import compile_graph
from vdla.compiler.synthetic import IRBuilder, random_input
from vdla.config import get_config
from vdla.regs import Fault
from vdla.sim import rtl_host
from vdla.sim.host import Host, run_program_int
from vdla.sim.iss import Machine
from isa_helpers import E, dma

pytestmark = pytest.mark.rtl

CONFIG = get_config("small")
ROOT = pathlib.Path(__file__).resolve().parent.parent
DIGITS = ROOT / "models" / "digits" / "digits_qdq.onnx"
Op, Buf = isa.Opcode, isa.Buffer

LAYER_KINDS = ("conv", "depthwise", "dense", "maxpool", "avgpool", "add")
LAYERS = [f"{kind}_{seed}" for kind in LAYER_KINDS for seed in range(5)] + ["conv_tiled",
                                                                             "dense_chunked"]
#: Cases run a second time with every AXI channel of the RAM pausing at random.
STALLED = ("graph:add_input", "graph:gemm_chain", "graph:maxpool_signed", "layer:depthwise_2",
           "layer:dense_chunked")
FAULTS = ("illegal_opcode", "illegal_flags", "segment_output", "segment_load_extent",
          "segment_save_high", "buffer_lut_table")
FAULT_SEG_BASE = 0x5008


# ------------------------------------------------------------------------------ programs

def random_layer(name):
    """A one-layer graph of the named kind with random shapes and parameters."""
    if name == "conv_tiled":
        # Input of 5 channel blocks x 24 x 22 pixels: more than IBUF holds, so it is tiled.
        b = IRBuilder(name, seed=99)
        b.output(b.conv(b.input((36, 24, 22)), 40, 3))
        return b.graph()
    if name == "dense_chunked":
        # 392 weight blocks per output block, WBUF holds 128: input-channel chunks.
        b = IRBuilder(name, seed=98)
        b.output(b.dense(b.input((64, 7, 7)), 24))
        return b.graph()
    kind, seed = name.rsplit("_", 1)
    rng = np.random.default_rng(int(seed) + 10 * LAYER_KINDS.index(kind))
    b = IRBuilder(name, seed=int(seed))

    def r(lo, hi):
        return int(rng.integers(lo, hi + 1))

    kh, kw = int(rng.choice([1, 2, 3, 5])), int(rng.choice([1, 3, 5]))
    stride = r(1, 2)
    pads = (r(0, kh - 1), r(0, kw - 1), r(0, kh - 1), r(0, kw - 1))
    shape = (r(1, 20), r(kh, 13), r(kw, 13))
    relu = bool(r(0, 1))
    if kind == "conv":
        y = b.conv(b.input(shape), r(1, 24), (kh, kw), stride, pads, relu=relu)
    elif kind == "depthwise":
        y = b.conv(b.input(shape), 0, (kh, kw), stride, pads, depthwise=True, relu=relu)
    elif kind == "dense":
        # Up to 48 x 6 x 6 inputs: more weight blocks than WBUF holds, so steps are chunked.
        y = b.dense(b.input((r(1, 48), r(1, 6), r(1, 6))), r(1, 72), relu=relu)
    elif kind in ("maxpool", "avgpool"):
        y = b.pool(b.input(shape), kind[:3], (kh, kw), r(1, 3), pads)
    else:
        y = b.add(b.input(shape, "a"), b.input(shape, "b"), relu=relu)
    b.output(y)
    return b.graph()


def iss_tensors(program, inputs):
    """Every tensor of the segment after one golden-model inference."""
    host = Host(CONFIG, -(-program.segment_size // 8) * 8)
    handle = host.tenant(0, Allocation(cores=1))
    handle.load(program)
    for name in program.inputs:
        handle.write_input(name, inputs[name])
    handle.start()
    host.run()
    handle.check()
    return {t.name: handle.read_output(t.name) for t in program.tensors}


def hand_program(bad, seg_size):
    """A frame that loads, computes and saves inside the segment, then one with ``bad``."""
    words = [E(Op.STREAM, vcore=0, count=1, offset=1), E(Op.FRAME),
             dma(Op.LOAD, Buf.IBUF, 0, 0x0, 4, deps={"push_next": 1}),
             E(Op.SETUP, kh=1, kw=1, stride=1, n_icg=1),
             E(Op.CONV, {"pop_prev": 1, "push_next": 1}, in_h=1, in_w=4, out_h=1, out_w=4,
               n_ob=1, acc_final=1),
             dma(Op.SAVE, Buf.OBUF, 0, seg_size - 32, 4, deps={"pop_prev": 1}),
             E(Op.FRAME), dma(Op.SAVE, Buf.OBUF, 0, 0x40, 2), bad, E(Op.END)]
    return np.array([[w & (2**64 - 1), w >> 64] for w in words], np.uint64)


def fault_case(name, tmp_path):
    """``(words, seg_size, DRAM before)`` of a faulting run at :data:`FAULT_SEG_BASE`."""
    rng = np.random.default_rng(FAULTS.index(name))
    seg_size = 0x800
    if name in ("illegal_opcode", "segment_output"):
        graph = load_model(quantized("conv3_valid_nobias", tmp_path))
        program = compile_graph(graph, CONFIG)
        image = link(program, CONFIG, Allocation(cores=1, seg_base=FAULT_SEG_BASE))
        words = image.words.copy()
        seg_size = program.segment_size
        if name == "illegal_opcode":
            frames = np.flatnonzero(rtl_host.opcodes(words) == Op.FRAME.value)
            words[frames[len(frames) // 2] + 1] = 0       # opcode 0 is illegal
        else:
            seg_size -= 8                                   # the last SAVE reaches past it
        segment = np.zeros(program.segment_size, np.uint8)
        segment[:len(program.weights)] = np.frombuffer(program.weights, np.uint8)
        x = random_input(graph, seed=3)[program.inputs[0]]
        entry = program.tensor(program.inputs[0])
        blocked = to_blocked(x, CONFIG.cb)
        segment[entry.offset:entry.offset + len(blocked)] = blocked
    else:
        bad = {
            "illegal_flags": dma(Op.LOAD, Buf.IBUF, 0, 0x0, 1, deps={"pop_prev": 1}),
            "segment_load_extent": dma(Op.LOAD, Buf.IBUF, 0, 0x100, 4, planes=2,
                                       plane_stride=(seg_size - 0x100) // 8 - 3),
            "segment_save_high": dma(Op.SAVE, Buf.OBUF, 0, 2**32 - 8, 1),
            # A lookup table reaching one entry past PBUF.
            "buffer_lut_table": E(Op.MISC, func=isa.MiscFunc.LUT, out_h=1, out_w=2, n_cb=1,
                                  pbuf_addr=CONFIG.pbuf_depth - isa.LUT_ENTRIES + 1),
        }[name]
        words = hand_program(bad, seg_size)
        segment = rng.integers(0, 256, seg_size, dtype=np.uint8)
    dram = rng.integers(0, 256, FAULT_SEG_BASE + seg_size + 0x2000, dtype=np.uint8)
    dram[FAULT_SEG_BASE:FAULT_SEG_BASE + len(segment)] = segment
    return words, seg_size, dram


def iss_raw(words, seg_size, dram):
    """The golden model on an image and a DRAM snapshot: ``(status, DRAM after)``."""
    machine = Machine(CONFIG, len(dram))
    machine.dram[:] = dram
    machine.write_imem(0, words)
    for reg, value in {"CORE_MASK": 1, "PROG_BASE": 0, "PROG_SIZE": len(words),
                       "SEG_BASE_LO": FAULT_SEG_BASE, "SEG_BASE_HI": 0,
                       "SEG_SIZE_LO": seg_size, "SEG_SIZE_HI": 0, "RUNS": 1}.items():
        machine.write_reg(0, reg, value)
    machine.start(0)
    machine.run()
    return machine.status(0), machine.dram.copy()


# ------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="session")
def core_rtl():
    started = time.perf_counter()
    rtl = rtl_host.get_build(CONFIG)
    print(f"\nCoreTop ({CONFIG.name}) on Verilator: "
          f"{'reused' if rtl.reused else 'built'} in {time.perf_counter() - started:.1f} s")
    return rtl


@pytest.fixture(scope="module")
def batch(core_rtl, tmp_path_factory):
    """Prepare every case, run them all in one simulator launch, return them by name."""
    tmp = tmp_path_factory.mktemp("rtl_core")
    cases, runs = {}, []
    for name in [f"graph:{g}" for g in sorted(GRAPHS)] + [f"layer:{n}" for n in LAYERS]:
        kind, short = name.split(":")
        try:
            graph = (load_model(quantized(short, tmp)) if kind == "graph"
                     else random_layer(short))
            program = compile_graph(graph, CONFIG)
        except CompileError as error:
            # Every case must compile: a refusal fails that case (see _case), not the batch.
            cases[name] = {"error": str(error)}
            continue
        inputs = random_input(graph, seed=len(runs))
        # Segments at varying offsets from the 4 KiB boundaries bursts may not cross.
        run = rtl_host.program_run(program, CONFIG, inputs, tensors="all",
                                   seg_base=rtl_host.DEFAULT_SEG_BASE + 0x238 * (len(runs) % 7))
        cases[name] = {"program": program, "inputs": inputs, "run": run}
        runs.append(run)
    for name in STALLED:
        case = cases[f"stall:{name}"] = cases[name]
        if "error" in case:
            continue
        run = rtl_host.program_run(case["program"], CONFIG, case["inputs"], tensors="all",
                                   stall=0.3)
        cases[f"stall:{name}"] = dict(case, run=run)
        runs.append(run)
    for name in FAULTS:
        words, seg_size, dram = fault_case(name, tmp)
        run = rtl_host.RtlRun(words=words, seg_base=FAULT_SEG_BASE, seg_size=seg_size,
                              init=[(0, dram)], reads=[(0, len(dram))], max_cycles=200_000)
        cases[f"fault:{name}"] = {"words": words, "seg_size": seg_size, "dram": dram,
                                  "run": run}
        runs.append(run)
    # The core must run normally again after all those faults.
    again = cases["graph:conv3_odd"]
    run = rtl_host.program_run(again["program"], CONFIG, again["inputs"], tensors="all")
    cases["restart"] = dict(again, run=run)
    runs.append(run)

    facts = rtl_host.run_batch(runs, CONFIG, rtl=core_rtl)
    print(f"\n{len(runs)} runs in one launch: {facts['sim_cycles']} cycles simulated in "
          f"{facts['wall_seconds']:.1f} s ({facts['sim_cycles'] / facts['wall_seconds']:.0f} "
          f"cycles/s), launch total {facts['launch_seconds']:.1f} s")
    return cases


def _case(batch, name):
    case = batch[name]
    if "error" in case:
        pytest.fail(f"does not compile for {CONFIG.name}: {case['error']}")
    return case


def check_against_iss(case):
    program, inputs, run = case["program"], case["inputs"], case["run"]
    assert run.ok, run.describe()
    expected = iss_tensors(program, inputs)
    got = run.tensors
    bad = [name for name in expected if not np.array_equal(got[name], expected[name])]
    assert not bad, f"tensors differing from the ISS: {bad}"
    official = run_program_int(program, CONFIG, inputs)
    for name in program.outputs:
        np.testing.assert_array_equal(run.outputs[name], official[name])


# --------------------------------------------------------------------------------- tests

@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_graph_matches_iss_per_layer(name, batch):
    check_against_iss(_case(batch, f"graph:{name}"))


@pytest.mark.parametrize("name", LAYERS)
def test_random_layer_matches_iss(name, batch):
    check_against_iss(_case(batch, f"layer:{name}"))


@pytest.mark.parametrize("name", STALLED)
def test_stalled_bus_matches_iss(name, batch):
    check_against_iss(_case(batch, f"stall:{name}"))


@pytest.mark.parametrize("name", FAULTS)
def test_fault_matches_iss_and_stays_in_segment(name, batch):
    case = batch[f"fault:{name}"]
    run, dram, seg_size = case["run"], case["dram"], case["seg_size"]
    status, iss_dram = iss_raw(case["words"], seg_size, dram)
    expected = {"illegal": Fault.ILLEGAL, "segment": Fault.SEGMENT,
                "buffer": Fault.BUFFER}[name.split("_")[0]]
    assert status["fault"] == expected, status
    assert run.status is not None and run.status["fault_valid"], run.describe()
    assert (run.status["fault"], run.status["fault_pc"]) == (expected, status["fault_pc"])
    after = run.data[0]
    lo, hi = FAULT_SEG_BASE, FAULT_SEG_BASE + seg_size
    outside = np.ones(len(dram), bool)
    outside[lo:hi] = False
    changed = np.flatnonzero((after != dram) & outside)
    assert not len(changed), (f"{len(changed)} bytes outside the segment changed, first at "
                              f"0x{changed[0]:x}")
    if name in ("illegal_opcode", "segment_output"):
        # The fault comes first in its frame (or stops the SAVE queue in order): everything
        # before it happened on both, nothing after it on either.
        bad = np.flatnonzero(after[lo:hi] != iss_dram[lo:hi])
        assert not len(bad), (f"{len(bad)} segment bytes differ from the ISS, first at "
                              f"+0x{bad[0]:x}")


def test_runs_normally_after_faults(batch):
    check_against_iss(batch["restart"])


def test_cli_run_rtl_matches_iss(core_rtl, tmp_path, capsys):
    """``vdla run --backend rtl`` on a batch of digits (one launch), against the ISS."""
    from models.digits.data import held_out
    from vdla import cli
    ifp = tmp_path / "digits.ifp"
    assert cli.main(["compile", str(DIGITS), "-o", str(ifp)]) == 0
    np.save(tmp_path / "x.npy", held_out()[0][:6])
    outputs = {}
    for backend in ("iss", "rtl"):
        out = tmp_path / f"y_{backend}.npy"
        status = cli.main(["run", str(ifp), "--input", str(tmp_path / "x.npy"), "--output",
                           str(out), "--backend", backend])
        assert status == 0, capsys.readouterr().err
        outputs[backend] = np.load(out)
    assert "cycles per inference" in capsys.readouterr().out
    np.testing.assert_array_equal(outputs["rtl"], outputs["iss"])

    status = cli.main(["run", str(ifp), "--input", str(tmp_path / "x.npy"), "--output",
                       str(tmp_path / "y.npy"), "--backend", "rtl", "--cores", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "--cores 1" in err[0]


@pytest.mark.slow
def test_performance_figures(core_rtl):
    """The bench's RTL figures hold: the PE array stays busy, long DMA bursts stream."""
    from bench.rtl import bench_rtl
    figures = bench_rtl(CONFIG.name, log=lambda message: None)
    assert figures["mac_utilization"]["utilization"] >= 0.9, figures["mac_utilization"]
    dma = figures["dma"]
    assert min(dma["load_fraction_of_peak"], dma["save_fraction_of_peak"]) >= 0.9, dma
    assert dma["both_fraction_of_peak"] >= 0.9, dma
    assert len(figures["digits_layers"]) == 5
