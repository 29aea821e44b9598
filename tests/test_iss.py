"""Instruction-set simulator: numerics against the layer reference, token ordering and the
two policies, barriers, faults and tenant isolation, host driver. Programs are built by hand
with isa.encode."""

import numpy as np
import pytest

from vdla import isa
from vdla.compiler import ir, layout, static, synthetic
from vdla.compiler.link import link
from vdla.compiler.program import (FRAME_DTYPE, Allocation, LayerEntry, Program, TensorEntry,
                                   words_from_ints)
from vdla.config import get_config
from vdla.regs import Fault
from vdla.sim import host as host_mod
from vdla.sim.iss import Machine, MachineError
from vdla.sim.reference import run_layer
from isa_helpers import E, dma

CFG = get_config("small")
CB = CFG.cb
Op, Buf = isa.Opcode, isa.Buffer
PUSH_NEXT, POP_PREV, POP_NEXT, PUSH_PREV = ({"push_next": 1}, {"pop_prev": 1}, {"pop_next": 1},
                                            {"push_prev": 1})


def requant(rng, k, lo=-128, hi=127):
    return ir.Requant(bias=rng.integers(-3000, 3000, k), mult_a=rng.integers(1 << 15, 1 << 16, k),
                      shift=rng.integers(18, 24, k), zp_out=int(rng.integers(-10, 10)),
                      lo=lo, hi=hi)


def rand8(rng, shape):
    return rng.integers(-128, 128, shape).astype(np.int8)


class Seg:
    """Bump allocator of a tenant's segment contents (8-byte aligned blobs)."""

    def __init__(self):
        self.blob = bytearray()

    def put(self, data):
        offset = len(self.blob)
        data = bytes(np.ascontiguousarray(data).reshape(-1).view(np.uint8))
        self.blob += data + bytes(-len(data) % 64)
        return offset

    def reserve(self, nbytes):
        return self.put(np.zeros(nbytes, np.uint8))


def region(streams):
    """Region words: STREAM headers, then the streams back to back."""
    words, offset = [], len(streams)
    for k, s in enumerate(streams):
        words.append(E(Op.STREAM, vcore=k, count=len(streams), offset=offset))
        offset += len(s)
    for s in streams:
        words += s
    return words


def install(m, tenant, words, mask=0b1, prog_base=0, seg_base=0, seg=None, seg_size=None,
            runs=1):
    m.write_imem(prog_base, words)
    blob = bytes(seg.blob) if seg is not None else b""
    seg_size = seg_size if seg_size is not None else len(blob)
    m.dram[seg_base:seg_base + len(blob)] = np.frombuffer(blob, np.uint8)
    for name, value in {"CORE_MASK": mask, "PROG_BASE": prog_base, "PROG_SIZE": len(words),
                        "SEG_BASE_LO": seg_base, "SEG_BASE_HI": 0, "SEG_SIZE_LO": seg_size,
                        "SEG_SIZE_HI": 0, "RUNS": runs}.items():
        m.write_reg(tenant, name, value)


# ------------------------------------------------------------------ layers as frames

def conv_frame(seg, layer, x_off, y_off, in_shape, band=None):
    """Words of one frame computing output rows ``band`` (default: all) of a Conv layer
    whose input is stored blocked at ``x_off``: strided row-band LOAD, weights, PBUF,
    SETUP, CONV, strided SAVE. Weights and PBUF are appended to ``seg`` once per layer."""
    c, h, w = in_shape
    k, _, kh, kw = layer.weight.shape
    top, left, bottom, right = layer.pads
    s = layer.stride
    oh, ow = (h + top + bottom - kh) // s + 1, (w + left + right - kw) // s + 1
    dw = layer.depthwise
    icb, kb = layout.blocks(c, CB), layout.blocks(k, CB)
    if not hasattr(layer, "_offsets"):
        blocks = layout.dw_weight_blocks(layer.weight, CB) if dw else \
            layout.conv_weight_blocks(layer.weight, CB)
        layer._offsets = (seg.put(blocks), seg.put(layout.post_params(layer.requant, kb * CB)),
                          blocks.size)
    w_off, p_off, w_bytes = layer._offsets
    r0, r1 = band or (0, oh)
    y0 = max(r0 * s - top, 0)
    y1 = min((r1 - 1) * s - top + kh, h)
    n_icg = 1 if dw else icb
    groups = kb if dw else icb
    pix = w * CB // 8
    return [
        E(Op.FRAME, frame=0, layer=0),
        dma(Op.LOAD, Buf.IBUF, 0, x_off + y0 * w * CB, pix, rows=y1 - y0, planes=groups,
            row_stride=pix, plane_stride=h * pix),
        dma(Op.LOAD, Buf.WBUF, 0, w_off, w_bytes // 8),
        dma(Op.LOAD, Buf.PBUF, 0, p_off, kb * CB * 2, deps=PUSH_NEXT),
        E(Op.SETUP, kh=kh, kw=kw, stride=s, n_icg=n_icg, pad_value=layer.pad_value, dw=int(dw)),
        E(Op.CONV, {**POP_PREV, **PUSH_NEXT}, ibuf_addr=0, wbuf_addr=0, pbuf_addr=0, obuf_addr=0,
          out_h=r1 - r0, out_w=ow, n_ob=kb, in_h=y1 - y0, in_w=w,
          pad_top=max(top - r0 * s, 0), pad_left=left, acc_init=1, acc_final=1),
        dma(Op.SAVE, Buf.OBUF, 0, y_off + r0 * ow * CB, (r1 - r0) * ow * CB // 8, rows=1,
            planes=kb, plane_stride=oh * ow * CB // 8, deps=POP_PREV),
    ]


def conv_layer(rng, c, k, kernel, stride, pad, depthwise=False):
    weight = rand8(rng, (k, 1 if depthwise else c, kernel, kernel))
    return ir.Conv("conv", "x", "y", weight, stride, (pad, pad, pad, pad),
                   int(rng.integers(-20, 20)), requant(rng, k), groups=c if depthwise else 1)


def run_one(words_streams, seg, mask=0b1, policy="load-first", dram=1 << 16):
    m = Machine(CFG, dram, policy)
    install(m, 0, region(words_streams), mask=mask, seg=seg, seg_size=dram)
    m.start(0)
    m.run()
    return m


def read_tensor(m, offset, shape, base=0):
    c, h, w = shape
    n = layout.blocks(c, CB) * CB * h * w
    return layout.from_blocked(m.dram[base + offset:base + offset + n], shape, CB)


# ------------------------------------------------------------------ numerics

@pytest.mark.parametrize("c, k, kernel, stride, pad, dw, h", [
    (12, 10, 3, 1, 1, False, 6), (8, 16, 3, 2, 1, False, 7), (5, 3, 1, 1, 0, False, 4),
    (16, 16, 3, 1, 1, True, 5), (12, 12, 3, 2, 0, True, 7), (3, 8, 5, 2, 2, False, 9),
])
def test_conv_matches_reference(c, k, kernel, stride, pad, dw, h):
    rng = np.random.default_rng(c * 100 + k + kernel)
    layer = conv_layer(rng, c, k, kernel, stride, pad, dw)
    x = rand8(rng, (c, h, h))
    expected = run_layer(layer, {"x": x})
    seg = Seg()
    x_off = seg.put(layout.to_blocked(x, CB))
    y_off = seg.reserve(expected.size * 2 + 64 * 8)
    frame = conv_frame(seg, layer, x_off, y_off, x.shape)
    m = run_one([frame + [E(Op.END)]], seg)
    assert m.status(0)["done"], m.status(0)
    np.testing.assert_array_equal(read_tensor(m, y_off, expected.shape), expected)


def test_conv_partial_sums_through_abuf():
    """Input channel groups accumulated by successive CONVs (acc_init / acc_final)."""
    rng = np.random.default_rng(7)
    c, k, h = 24, 8, 4
    layer = conv_layer(rng, c, k, 3, 1, 1)
    x = rand8(rng, (c, h, h))
    expected = run_layer(layer, {"x": x})
    seg = Seg()
    x_off = seg.put(layout.to_blocked(x, CB))
    blocks = layout.conv_weight_blocks(layer.weight, CB)            # (1, 3, 3, 3, CB, CB)
    w_off = seg.put(np.concatenate([blocks[:, :, :, g] for g in range(3)]))
    p_off = seg.put(layout.post_params(layer.requant, CB))
    y_off = seg.reserve(h * h * CB)
    words = [E(Op.FRAME, frame=0, layer=0),
             dma(Op.LOAD, Buf.IBUF, 0, x_off, 3 * h * h * CB // 8),
             dma(Op.LOAD, Buf.WBUF, 0, w_off, 27 * CB * CB // 8),
             dma(Op.LOAD, Buf.PBUF, 0, p_off, 16, deps=PUSH_NEXT),
             E(Op.SETUP, kh=3, kw=3, stride=1, n_icg=1, pad_value=layer.pad_value)]
    for g in range(3):
        words.append(E(Op.CONV, POP_PREV if g == 0 else (PUSH_NEXT if g == 2 else None),
                       ibuf_addr=g * h * h, wbuf_addr=g * 9, obuf_addr=0, out_h=h, out_w=h,
                       n_ob=1, in_h=h, in_w=h, pad_top=1, pad_left=1, acc_init=int(g == 0),
                       acc_final=int(g == 2)))
    words += [dma(Op.SAVE, Buf.OBUF, 0, y_off, h * h * CB // 8, deps=POP_PREV), E(Op.END)]
    m = run_one([words], seg)
    np.testing.assert_array_equal(read_tensor(m, y_off, expected.shape), expected)


@pytest.mark.parametrize("mode, kernel, stride, pad", [("max", 3, 2, 1), ("avg", 2, 2, 0),
                                                        ("avg", 5, 1, 0)])
def test_pool_matches_reference(mode, kernel, stride, pad):
    rng = np.random.default_rng(kernel)
    c, h = 11, 5
    pad_value = -128 if mode == "max" else 3
    layer = ir.Pool("p", "x", "y", mode, (kernel, kernel), stride, (pad,) * 4, pad_value,
                    requant(rng, c))
    x = rand8(rng, (c, h, h))
    expected = run_layer(layer, {"x": x})
    _, oh, ow = expected.shape
    seg = Seg()
    x_off = seg.put(layout.to_blocked(x, CB))
    p_off = seg.put(layout.post_params(layer.requant, 2 * CB))
    y_off = seg.reserve(2 * oh * ow * CB)
    words = [E(Op.FRAME, frame=0, layer=0),
             dma(Op.LOAD, Buf.IBUF, 0, x_off, 2 * h * h),
             dma(Op.LOAD, Buf.PBUF, 0, p_off, 2 * CB * 2, deps=PUSH_NEXT),
             E(Op.SETUP, kh=kernel, kw=kernel, stride=stride, n_icg=1, pad_value=pad_value),
             E(Op.MISC, {**POP_PREV, **PUSH_NEXT}, func=isa.MiscFunc.MAXPOOL if mode == "max"
               else isa.MiscFunc.AVGPOOL, src_a=0, obuf_addr=0, pbuf_addr=0, out_h=oh,
               out_w=ow, n_cb=2, in_h=h, in_w=h, pad_top=pad, pad_left=pad),
             dma(Op.SAVE, Buf.OBUF, 0, y_off, 2 * oh * ow, deps=POP_PREV), E(Op.END)]
    m = run_one([words], seg)
    np.testing.assert_array_equal(read_tensor(m, y_off, expected.shape), expected)


def test_add_matches_reference():
    rng = np.random.default_rng(5)
    c, h = 13, 3
    rq = ir.Requant(bias=np.zeros(c), mult_a=rng.integers(1 << 14, 1 << 15, c),
                    mult_b=rng.integers(1 << 14, 1 << 15, c), shift=np.full(c, 15),
                    zp_out=3, zp_a=-4, zp_b=7, lo=0, hi=127)
    layer = ir.Add("add", "a", "b", "y", rq)
    a, b = rand8(rng, (c, h, h)), rand8(rng, (c, h, h))
    expected = run_layer(layer, {"a": a, "b": b})
    seg = Seg()
    a_off, b_off = seg.put(layout.to_blocked(a, CB)), seg.put(layout.to_blocked(b, CB))
    p_off = seg.put(layout.post_params(rq, 2 * CB))
    y_off = seg.reserve(2 * h * h * CB)
    n = 2 * h * h
    words = [E(Op.FRAME, frame=0, layer=0),
             dma(Op.LOAD, Buf.IBUF, 0, a_off, n), dma(Op.LOAD, Buf.IBUF, n, b_off, n),
             dma(Op.LOAD, Buf.PBUF, 0, p_off, 2 * CB * 2, deps=PUSH_NEXT),
             E(Op.MISC, {**POP_PREV, **PUSH_NEXT}, func=isa.MiscFunc.ADD, src_a=0, src_b=n,
               obuf_addr=0, pbuf_addr=0, out_h=h, out_w=h, n_cb=2),
             dma(Op.SAVE, Buf.OBUF, 0, y_off, n, deps=POP_PREV), E(Op.END)]
    m = run_one([words], seg)
    np.testing.assert_array_equal(read_tensor(m, y_off, expected.shape), expected)


# ------------------------------------------------------------------ linked programs, host

def two_layer_program(seed=0, bands=3):
    """Two 3x3 convolutions (row bands, one frame each) as a Program the linker can split."""
    rng = np.random.default_rng(seed)
    c, k, h = 12, 10, 9
    l0, l1 = conv_layer(rng, c, k, 3, 1, 1), conv_layer(rng, k, 8, 3, 1, 1)
    seg = Seg()
    x_off = seg.reserve(2 * h * h * CB)
    t_off = seg.reserve(2 * h * h * CB)
    y_off = seg.reserve(1 * h * h * CB)
    cut = np.linspace(0, h, bands + 1).astype(int)
    ints, frames = [], []
    for index, (layer, src, dst, shape) in enumerate(((l0, x_off, t_off, (c, h, h)),
                                                      (l1, t_off, y_off, (k, h, h)))):
        for r0, r1 in zip(cut[:-1], cut[1:]):
            words = conv_frame(seg, layer, src, dst, shape, band=(r0, r1))
            words[0] = E(Op.FRAME, frame=len(frames), layer=index)
            frames.append((index, len(ints), len(words), 1000 * (r1 - r0)))
            ints += words
    table = np.array(frames, FRAME_DTYPE)
    tensors = [TensorEntry("x", (c, h, h), 0.1, 0, (1, c, h, h), x_off, 2 * h * h * CB, "input"),
               TensorEntry("t", (k, h, h), 0.1, 0, (1, k, h, h), t_off, 2 * h * h * CB,
                           "activation"),
               TensorEntry("y", (8, h, h), 0.05, 2, (1, 8 * h * h), y_off, h * h * CB, "output")]
    layers = [LayerEntry("l0", "conv", ["x"], "t", []), LayerEntry("l1", "conv", ["t"], "y", [0])]
    # This hand-made layout puts the weights after the activations, so the "weight blob"
    # written at segment offset 0 is the whole segment image.
    program = Program("two", CFG.name, CFG.core_hash(), tensors, layers, table,
                      words_from_ints(ints), bytes(seg.blob), len(seg.blob), ["x"], ["y"])
    l0.input, l0.output, l1.input, l1.output = "x", "t", "t", "y"
    return program, (l0, l1)


@pytest.mark.parametrize("cores", [1, 2, 3])
@pytest.mark.parametrize("policy", ["load-first", "compute-first"])
def test_linked_program_any_core_count_and_policy(cores, policy):
    program, (l0, l1) = two_layer_program()
    x = rand8(np.random.default_rng(1), (12, 9, 9))
    expected = run_layer(l1, {"t": run_layer(l0, {"x": x})})
    out = host_mod.run_program_int(program, CFG, {"x": x}, cores=cores, policy=policy)
    np.testing.assert_array_equal(out["y"], expected)


def test_missing_sync_shows_as_policy_difference():
    """Layer 1's halo rows come from the other core: without the barrier, running the cores
    in the opposite order (compute-first) reads stale rows."""
    program, _ = two_layer_program()
    image = link(program, CFG, Allocation(cores=2))
    words = [int(lo) | int(hi) << 64 for lo, hi in image.words]
    no_sync = [w for w in words if isa.decode(w).opcode != Op.SYNC]
    x = rand8(np.random.default_rng(2), (12, 9, 9))
    results = {}
    for policy in ("load-first", "compute-first"):
        for name, ws in (("sync", words), ("nosync", None)):
            m = Machine(CFG, len(program.weights), policy)
            if ws is None:   # rebuild headers for the shortened streams
                streams = []
                for off, length in image.streams:
                    streams.append([w for w in words[off:off + length]
                                    if isa.decode(w).opcode != Op.SYNC])
                ws = region(streams)
                assert len(ws) == len(no_sync)
            install(m, 0, ws, mask=0b11, seg=None, seg_size=len(program.weights))
            m.dram[:] = np.frombuffer(program.weights, np.uint8)
            m.dram[program.tensor("x").offset:][:2 * 81 * CB] = layout.to_blocked(x, CB)
            m.start(0)
            m.run()
            assert m.status(0)["done"]
            results[policy, name] = read_tensor(m, program.tensor("y").offset, (8, 9, 9))
    np.testing.assert_array_equal(results["load-first", "sync"], results["compute-first", "sync"])
    assert not np.array_equal(results["load-first", "nosync"], results["compute-first", "nosync"])


def hazard_frame(seg, with_flag):
    """Two 1x1 CONVs reusing IBUF entry 0: the second LOAD must wait (C->L) for the first
    CONV; ``with_flag=False`` drops that wait."""
    rng = np.random.default_rng(11)
    xa, xb = rand8(rng, (8, 1, 4)), rand8(rng, (8, 1, 4))
    a_off, b_off = seg.put(layout.to_blocked(xa, CB)), seg.put(layout.to_blocked(xb, CB))
    w_off = seg.put(rand8(rng, (CB, CB)))
    rq = requant(rng, CB)
    p_off = seg.put(layout.post_params(rq, CB))
    y_off = seg.reserve(8 * CB)
    conv = dict(ibuf_addr=0, wbuf_addr=0, pbuf_addr=0, out_h=1, out_w=4, n_ob=1, in_h=1,
                in_w=4, pad_top=0, pad_left=0, acc_init=1, acc_final=1)
    return [E(Op.FRAME, frame=0, layer=0),
            dma(Op.LOAD, Buf.WBUF, 0, w_off, 8), dma(Op.LOAD, Buf.PBUF, 0, p_off, 16),
            dma(Op.LOAD, Buf.IBUF, 0, a_off, 4, deps=PUSH_NEXT),
            dma(Op.LOAD, Buf.IBUF, 0, b_off, 4, deps={"push_next": 1,
                                                       "pop_next": int(with_flag)}),
            E(Op.SETUP, kh=1, kw=1, stride=1, n_icg=1, pad_value=0),
            E(Op.CONV, {"pop_prev": 1, "push_prev": int(with_flag)}, obuf_addr=0, **conv),
            E(Op.CONV, {**POP_PREV, **PUSH_NEXT}, obuf_addr=4, **conv),
            dma(Op.SAVE, Buf.OBUF, 0, y_off, 8, deps=POP_PREV), E(Op.END)], y_off


@pytest.mark.parametrize("with_flag", [True, False])
def test_missing_dependency_flag_differs_between_policies(with_flag):
    outs = []
    for policy in ("load-first", "compute-first"):
        seg = Seg()
        words, y_off = hazard_frame(seg, with_flag)
        m = run_one([words], seg, policy=policy)
        assert m.status(0)["done"], m.status(0)
        outs.append(m.dram[y_off:y_off + 8 * CB].copy())
    assert np.array_equal(outs[0], outs[1]) == with_flag


# ------------------------------------------------------------------ faults and isolation

GOOD_SEG, BAD_SEG, SEG_BYTES = 0, 0x8000, 0x4000
BAD_BASE = 2000


def good_tenant(m):
    """Tenant 0 on core 0: one conv frame; returns a checker of its result."""
    rng = np.random.default_rng(3)
    layer = conv_layer(rng, 12, 10, 3, 1, 1)
    x = rand8(rng, (12, 6, 6))
    expected = run_layer(layer, {"x": x})
    seg = Seg()
    x_off, y_off = seg.put(layout.to_blocked(x, CB)), seg.reserve(2 * 36 * CB)
    words = region([conv_frame(seg, layer, x_off, y_off, x.shape) + [E(Op.END)]])
    install(m, 0, words, mask=0b0001, seg=seg, seg_base=GOOD_SEG, seg_size=SEG_BYTES)
    return lambda: np.testing.assert_array_equal(
        read_tensor(m, y_off, expected.shape, GOOD_SEG), expected)


def bad_frame(seg):
    """A valid conv frame for the faulty tenant; the cases below break one word of it."""
    rng = np.random.default_rng(4)
    layer = conv_layer(rng, 8, 8, 3, 1, 1)
    x = rand8(rng, (8, 4, 4))
    x_off = seg.put(layout.to_blocked(x, CB))
    conv_frame(seg, layer, x_off, 0, x.shape)        # places weights and PBUF before y
    y_off = seg.reserve(16 * CB)
    return conv_frame(seg, layer, x_off, y_off, x.shape), y_off


def _set(index, word):
    def edit(frame):
        frame[index] = word
        return [frame + [E(Op.END)]], index
    return edit


def _insert(index, word):
    def edit(frame):
        frame.insert(index, word)
        return [frame + [E(Op.END)]], index
    return edit


SETUP_AT, CONV_AT, SAVE_AT = 4, 5, 6
ILLEGAL_CASES = {
    "undefined opcode": _insert(1, 6),
    "opcode 0": _insert(1, 0),
    "misc lut n_cb 0": _insert(5, E(Op.MISC, func=isa.MiscFunc.LUT, out_h=1, out_w=1, n_cb=0)),
    "zero length": _set(1, dma(Op.LOAD, Buf.IBUF, 0, 0, 0)),
    "zero rows": _set(1, dma(Op.LOAD, Buf.IBUF, 0, 0, 1, rows=0)),
    "load pop_prev": _set(1, dma(Op.LOAD, Buf.IBUF, 0, 0, 1, deps=POP_PREV)),
    "load push_prev": _set(1, dma(Op.LOAD, Buf.IBUF, 0, 0, 1, deps=PUSH_PREV)),
    "save push_next": _set(SAVE_AT, dma(Op.SAVE, Buf.OBUF, 0, 0, 1, deps=PUSH_NEXT)),
    "setup flag": _set(SETUP_AT, E(Op.SETUP, PUSH_NEXT, kh=3, kw=3, stride=1, n_icg=1)),
    "setup kh 0": _set(SETUP_AT, E(Op.SETUP, kh=0, kw=3, stride=1, n_icg=1)),
    "setup stride 0": _set(SETUP_AT, E(Op.SETUP, kh=3, kw=3, stride=0, n_icg=1)),
    "dw n_icg 2": _set(SETUP_AT, E(Op.SETUP, kh=3, kw=3, stride=1, n_icg=2, dw=1)),
    "load to obuf": _set(1, dma(Op.LOAD, Buf.OBUF, 0, 0, 1)),
    "save from ibuf": _set(SAVE_AT, dma(Op.SAVE, Buf.IBUF, 0, 0, 1, deps=POP_PREV)),
    "unaligned dram": _set(1, dma(Op.LOAD, Buf.IBUF, 0, 4, 1)),
    "conv before setup": lambda frame: ([frame[:SETUP_AT] + frame[SETUP_AT + 1:]
                                         + [E(Op.END)]], SETUP_AT),
    "conv n_ob 0": _set(CONV_AT, E(Op.CONV, n_ob=0, out_h=1, out_w=1)),
    "stream in stream": _insert(3, E(Op.STREAM, vcore=0, count=1, offset=1)),
    "frame flag": _set(0, E(Op.FRAME, PUSH_NEXT)),
    "load outside frame": lambda frame: ([frame[1:] + [E(Op.END)]], 0),
    "sync flag": lambda frame: ([frame + [E(Op.SYNC, POP_PREV, barrier=0), E(Op.END)]],
                                len(frame)),
}


def run_pair(build_bad, bad_mask=0b0010, policy="load-first"):
    """Good tenant 0 and a faulty tenant 1 side by side; returns (machine, fault pc offset)."""
    m = Machine(CFG, 0x10000, policy)
    check_good = good_tenant(m)
    seg = Seg()
    frame, _ = bad_frame(seg)
    streams, bad_index = build_bad(frame)
    words = region(streams)
    install(m, 1, words, mask=bad_mask, prog_base=BAD_BASE, seg=seg, seg_base=BAD_SEG,
            seg_size=SEG_BYTES)
    m.start(0)
    m.start(1)
    m.run()
    assert m.status(0)["done"] and not m.status(0)["faulted"]
    check_good()
    # The good tenant's whole segment is exactly what it is after running alone.
    solo = Machine(CFG, 0x10000, policy)
    good_tenant(solo)
    solo.start(0)
    solo.run()
    good = slice(GOOD_SEG, GOOD_SEG + SEG_BYTES)
    np.testing.assert_array_equal(m.dram[good], solo.dram[good])
    return m, bad_index


@pytest.mark.parametrize("case", sorted(ILLEGAL_CASES))
def test_illegal_faults_only_its_tenant(case):
    m, index = run_pair(ILLEGAL_CASES[case], bad_mask=0b0010)
    st = m.status(1)
    assert st["faulted"] and st["fault"] == Fault.ILLEGAL, st
    assert not st["running"] and not st["done"]
    assert m.read_reg(1, "FAULT_PC") == BAD_BASE + 1 + index, st["fault_reason"]
    assert st["fault_core"] == 1
    status = m.read_reg(1, "STATUS")
    assert status & 0b111 == 0b100 and (status >> 4) & 0xF == Fault.ILLEGAL.value
    assert m.read_global("IRQ_STATUS") == 0b11


def test_segment_fault_moves_nothing():
    m = Machine(CFG, 0x10000)
    seg = Seg()
    frame, y_off = bad_frame(seg)
    words = region([frame + [E(Op.END)]])
    seg_size = y_off + 8 * CB       # the SAVE of 16 pixels crosses the end after 8
    install(m, 1, words, mask=0b10, seg=seg, seg_base=BAD_SEG, seg_size=seg_size)
    m.dram[BAD_SEG + y_off:BAD_SEG + y_off + 16 * CB] = 0x5A
    m.start(1)
    m.run()
    st = m.status(1)
    assert st["fault"] == Fault.SEGMENT and st["fault_pc"] == 1 + SAVE_AT
    assert (m.dram[BAD_SEG + y_off:BAD_SEG + y_off + 16 * CB] == 0x5A).all()


@pytest.mark.parametrize("case, at", [
    ("load past segment", 1), ("ibuf overrun", 1), ("pbuf overrun", 3), ("conv tile overrun", 5),
    ("obuf overrun", 5)])
def test_segment_and_buffer_faults(case, at):
    edits = {
        "load past segment": _set(1, dma(Op.LOAD, Buf.IBUF, 0, SEG_BYTES - 8, 2)),
        "ibuf overrun": _set(1, dma(Op.LOAD, Buf.IBUF, CFG.ibuf_depth - 1, 0, 2)),
        "pbuf overrun": _set(3, dma(Op.LOAD, Buf.PBUF, CFG.pbuf_depth - 1, 0, 3,
                                    deps=PUSH_NEXT)),
        "conv tile overrun": _set(5, E(Op.CONV, {**POP_PREV, **PUSH_NEXT},
                                       ibuf_addr=CFG.ibuf_depth - 4, in_h=4, in_w=4, out_h=4,
                                       out_w=4, n_ob=1, acc_init=1, acc_final=1)),
        "obuf overrun": _set(5, E(Op.CONV, {**POP_PREV, **PUSH_NEXT},
                                  obuf_addr=CFG.obuf_depth - 4, in_h=4, in_w=4, out_h=4,
                                  out_w=4, n_ob=1, acc_init=1, acc_final=1)),
    }
    m, index = run_pair(edits[case])
    st = m.status(1)
    expected = Fault.SEGMENT if case == "load past segment" else Fault.BUFFER
    assert st["fault"] == expected, st
    assert st["fault_pc"] == BAD_BASE + 1 + at
    assert st["fault_core"] == 1


def test_fault_reports_the_physical_core_and_stops_the_other_cores():
    def two_streams(frame):
        broken = list(frame)
        broken[1] = dma(Op.LOAD, Buf.IBUF, CFG.ibuf_depth, 0, 1)
        return [frame + [E(Op.END)], broken + [E(Op.END)]], None
    m, _ = run_pair(two_streams, bad_mask=0b1010)
    st = m.status(1)
    assert st["fault"] == Fault.BUFFER and st["fault_core"] == 3
    assert st["fault_pc"] == BAD_BASE + 2 + len(bad_frame(Seg())[0]) + 1 + 1


@pytest.mark.parametrize("case", ["mask has more cores", "mask has fewer cores",
                                  "no header", "mask outside pool", "empty mask"])
def test_cores_fault(case):
    m = Machine(CFG, 0x10000)
    seg = Seg()
    frame, _ = bad_frame(seg)
    one = region([frame + [E(Op.END)]])
    two = region([frame + [E(Op.END)], [E(Op.END)]])
    words, mask = {"mask has more cores": (one, 0b11), "mask has fewer cores": (two, 0b1),
                   "no header": (one[1:], 0b1), "mask outside pool": (one, 0b10000),
                   "empty mask": (one, 0)}[case]
    install(m, 0, words, mask=mask, seg=seg, seg_size=SEG_BYTES)
    m.start(0)
    assert m.status(0)["fault"] == Fault.CORES
    m.run()
    assert m.status(0)["faulted"] and m.dram[:SEG_BYTES].any()


def test_region_fault():
    m = Machine(CFG, 0x10000)
    seg = Seg()
    frame, _ = bad_frame(seg)
    words = region([frame + [E(Op.END)]])
    install(m, 0, words, prog_base=100, seg=seg, seg_size=SEG_BYTES)
    m.write_reg(0, "PROG_SIZE", len(words) - 1)
    m.start(0)
    m.run()
    st = m.status(0)
    assert st["fault"] == Fault.REGION and st["fault_pc"] == 100 + len(words) - 1


@pytest.mark.parametrize("streams, pc", [
    ([[E(Op.SYNC, barrier=0), E(Op.END)], [E(Op.SYNC, barrier=1), E(Op.END)]], 4),
    ([[E(Op.SYNC, barrier=0), E(Op.END)], [E(Op.END)]], 4),
])
def test_barrier_that_cannot_complete_is_a_deadlock(streams, pc):
    m = Machine(CFG, 0x1000)
    install(m, 0, region(streams), mask=0b11, seg_size=0x1000)
    m.start(0)
    m.run()
    st = m.status(0)
    assert st["fault"] == Fault.DEADLOCK and st["fault_pc"] == pc and st["fault_core"] == 1


def test_missing_token_is_a_deadlock():
    m, _ = run_pair(_set(3, dma(Op.LOAD, Buf.PBUF, 0, 0, 16)))   # LOAD drops push_next
    st = m.status(1)
    assert st["fault"] == Fault.DEADLOCK and st["fault_pc"] == BAD_BASE + 1 + CONV_AT


def test_barrier_holds_every_core_until_all_arrive():
    """Two cores, three phases: a core's SAVE after SYNC 0 sees what the other core wrote
    before it (checked in both core orders)."""
    for policy in ("load-first", "compute-first"):
        m = Machine(CFG, 0x1000, policy)
        m.dram[:16] = np.arange(16)
        copy = lambda src, dst: [E(Op.FRAME), dma(Op.LOAD, Buf.IBUF, 0, src, 1,
                                                  deps=PUSH_NEXT),
                                 E(Op.MISC, {**POP_PREV, **PUSH_NEXT}, func=isa.MiscFunc.ADD,
                                   out_h=1, out_w=1, n_cb=1),
                                 dma(Op.SAVE, Buf.OBUF, 0, dst, 1, deps=POP_PREV)]
        # PBUF is zero: ADD yields clamp(0 + 0) = 0 for every lane, so each stage writes zeros
        # over the next stage's source only if it runs first.
        s0 = [E(Op.SYNC, barrier=0)] + copy(64, 128) + [E(Op.END)]
        s1 = copy(0, 64) + [E(Op.SYNC, barrier=0), E(Op.END)]
        install(m, 0, region([s0, s1]), mask=0b11, seg_size=0x1000)
        m.dram[64:72] = 9
        m.start(0)
        m.run()
        assert m.status(0)["done"]
        assert (m.dram[64:72] == 0).all() and (m.dram[128:136] == 0).all()
        assert m.status(0)["cycles"] > 0


def test_overlapping_masks_fault_and_disjoint_tenants_complete():
    m = Machine(CFG, 0x10000)
    check_good = good_tenant(m)
    seg = Seg()
    frame, _ = bad_frame(seg)
    install(m, 1, region([frame + [E(Op.END)]]), mask=0b0011, prog_base=BAD_BASE, seg=seg,
            seg_base=BAD_SEG, seg_size=SEG_BYTES)
    m.start(0)
    m.start(1)          # as the dispatch: the start faults CORES at the lowest requested core
    status = m.status(1)
    assert status["faulted"] and status["fault"] == Fault.CORES
    assert (status["fault_core"], status["fault_pc"]) == (0, BAD_BASE)
    assert "overlaps running tenant 0" in status["fault_reason"]
    assert m.status(0)["running"] and m.irq_status == 0b10
    m.write_reg(1, "CORE_MASK", 0b1000)
    m.start(1)
    m.run()
    assert m.status(0)["done"] and m.status(1)["done"]
    check_good()


def test_runs_ctrl_status_and_stop():
    m = Machine(CFG, 0x10000)
    check = good_tenant(m)
    m.write_reg(0, "RUNS", 3)
    m.write_reg(0, "CTRL", 0b1001)       # start, irq_enable
    assert m.read_reg(0, "STATUS") & 1
    m.run()
    assert m.read_reg(0, "INFERENCES") == 3 and m.status(0)["done"]
    assert m.read_reg(0, "CYCLES_LO") > 0 and m.irq == 1
    check()
    m.write_reg(0, "CTRL", 0b100)        # clear
    assert m.read_reg(0, "INFERENCES") == 0 and m.read_reg(0, "STATUS") == 0
    m.write_reg(0, "RUNS", 0)
    m.start(0)
    with pytest.raises(MachineError, match="RUNS=0"):
        m.run()
    m.run(max_phases=5)
    assert m.read_reg(0, "INFERENCES") == 5 and m.status(0)["running"]
    for name, value in (("CTRL", 0b1100), ("CTRL", 0b1001), ("CORE_MASK", 0b10),
                        ("SEG_BASE_LO", 0)):
        with pytest.raises(MachineError, match="running"):      # nothing changes
            m.write_reg(0, name, value)
    assert m.tenants[0].irq_enable is False and m.read_reg(0, "CORE_MASK") == 1
    m.write_reg(0, "RUNS", 0)
    m.write_reg(0, "CTRL", 0b10)         # stop
    m.run()
    assert m.status(0)["stopped"] and not m.status(0)["running"]
    with pytest.raises(MachineError, match="read-only"):
        m.write_reg(0, "STATUS", 0)


# ------------------------------------------------------------------ host driver

def test_host_confines_handles():
    program, _ = two_layer_program()
    host = host_mod.Host(CFG, 0x20000)
    a = host.tenant(0, Allocation(cores=2, prog_base=0, seg_base=0))
    a.load(program)
    bad = host.tenant(1, Allocation(cores=1, core_mask=0b100, prog_base=10, seg_base=0x10000))
    with pytest.raises(host_mod.HostError, match="program region overlaps"):
        bad.load(program)
    bad = host.tenant(2, Allocation(cores=1, core_mask=0b100, prog_base=4000, seg_base=0x800))
    with pytest.raises(host_mod.HostError, match="segment overlaps"):
        bad.load(program)
    b = host.tenant(3, Allocation(cores=1, core_mask=0b100, prog_base=4000, seg_base=0x10000))
    b.load(program)       # the refused loads took nothing
    # A handle's allocation cannot be changed from outside: it hands out copies.
    b.allocation.seg_base = 0
    b.write_segment(0, program.weights[:8])     # where its own weights are
    assert host.machine.dram[:len(program.weights)].tobytes() == program.weights
    with pytest.raises(AttributeError):
        b.allocation = Allocation(cores=1, seg_base=0)
    with pytest.raises(host_mod.HostError, match="outside its DRAM segment"):
        b.write_segment(program.segment_size - 4, b"12345678")
    with pytest.raises(host_mod.HostError, match="expected int8"):
        b.write_input("x", np.zeros((12, 9, 8), np.int8))
    x = rand8(np.random.default_rng(0), (12, 9, 9))
    a.write_input("x", x)
    b.write_input("x", x)
    a.start()
    b.start()
    host.run()
    assert a.check()["done"] and b.check()["done"]
    np.testing.assert_array_equal(a.read_output("y"), b.read_output("y"))


def test_run_program_quantizes_like_onnx():
    program, (l0, l1) = two_layer_program()
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 12, 9, 9)).astype(np.float32) * 5
    x.flat[:4] = [0.05, 0.15, -0.25, 100.0]     # ties round to even; saturation
    q = host_mod.quantize(x, 0.1, 0)
    assert list(q.flat[:4]) == [0, 2, -2, 127]
    out = host_mod.run_program(program, CFG, {"x": x})
    expected = run_layer(l1, {"t": run_layer(l0, {"x": q.reshape(12, 9, 9)})})
    assert out["y"].shape == (1, 8 * 81) and out["y"].dtype == np.float32
    np.testing.assert_allclose(out["y"], ((expected.astype(np.float32) - 2) * 0.05).reshape(1, -1))


# ------------------------------------------------------------------ through the static compiler

def _mini_graphs():
    b = synthetic.IRBuilder("mini", 1)
    x = b.input((5, 13, 11))
    x = b.conv(x, 12, 3)
    x = b.pool(x, "max", 3, 2, (1, 1, 1, 1))
    y = b.conv(x, 12, 3, depthwise=True)
    y = b.conv(y, 12, 1, relu=False)
    x = b.add(x, y)
    x = b.conv(x, 20, 3, 2)
    x = b.pool(x, "avg", 2, 2)
    b.output(b.dense(b.pool(x, "avg", b.shape(x)[1:], 1), 10))
    mini = b.graph()
    b = synthetic.IRBuilder("wide", 2)
    x = b.input((40, 20, 20))
    b.output(b.conv(b.conv(x, 70, 3), 33, 5, 2))
    return mini, b.graph(), synthetic.random_input


def test_compiled_programs_match_the_reference_on_any_cores_and_policy():
    from vdla.sim.reference import run_graph
    mini, wide, random_input = _mini_graphs()
    for graph in (mini, wide):
        program = static.compile_graph(graph, CFG)
        inputs = random_input(graph, 0)
        expected = run_graph(graph, inputs)
        for cores, policy in ((1, "load-first"), (2, "compute-first"), (3, "load-first"),
                              (4, "compute-first")):
            out = host_mod.run_program_int(program, CFG, inputs, cores=cores, policy=policy)
            for name in graph.outputs:
                np.testing.assert_array_equal(out[name], expected[name],
                                              err_msg=f"{graph.name} {cores} {policy}")


def test_two_compiled_models_share_the_pool():
    from vdla.sim.reference import run_graph
    mini, wide, random_input = _mini_graphs()
    host = host_mod.Host(CFG, 1 << 20)
    handles, expected = [], []
    for t, (graph, alloc) in enumerate(((mini, Allocation(cores=1, core_mask=0b1000,
                                                          prog_base=6000, seg_base=0x80000)),
                                        (wide, Allocation(cores=3, prog_base=0, seg_base=0)))):
        program = static.compile_graph(graph, CFG)
        handle = host.tenant(t, alloc)
        handle.load(program)
        inputs = random_input(graph, t)
        for name, x in inputs.items():
            handle.write_input(name, x)
        handles.append(handle)
        expected.append(run_graph(graph, inputs))
    for handle in handles:
        handle.start()
    host.run(policy="compute-first")
    for handle, want in zip(handles, expected):
        handle.check()
        for name in handle.program.outputs:
            np.testing.assert_array_equal(handle.read_output(name), want[name])


def test_cycle_estimate_shrinks_with_cores():
    _, wide, random_input = _mini_graphs()
    program = static.compile_graph(wide, CFG)
    cycles = []
    for cores in (1, 2, 4):
        host = host_mod.Host(CFG, program.segment_size)
        handle = host.tenant(0, Allocation(cores=cores))
        handle.load(program)
        handle.write_input("input", random_input(wide, 0)["input"])
        handle.start()
        host.run()
        cycles.append(handle.check()["cycles"])
    assert cycles[0] > cycles[1] > cycles[2]
    assert cycles[0] >= int(program.frames["cycles"].sum()) // 4
