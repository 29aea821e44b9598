"""Static properties of generated code: fields, frames, tokens, buffer ranges, DMA, memory plan."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vdla import isa
from vdla.compiler import dma, memplan, static, synthetic, verify
from vdla.compiler.errors import CompileError
from vdla.compiler.program import ints_from_words
from vdla.config import CONFIGS, get_config


def _mixed_graph(seed=1):
    b = synthetic.IRBuilder("mixed", seed)
    x = b.input((5, 13, 11))
    y = b.conv(x, 12, 3)
    y = b.conv(y, 12, 3, 2, depthwise=True)
    z = b.pool(y, "max", 3, 2, (1, 1, 1, 1))
    z = b.conv(z, 20, 1)
    w = b.add(z, b.conv(z, 20, 3))
    b.output(b.dense(b.pool(w, "avg", 2, 1), 10))
    return b.graph()


def _big_graph():
    b = synthetic.IRBuilder("big", 2)
    x = b.input((3, 40, 300))                       # wider than an 8-bit tile field
    x = b.conv(x, 16, 7, 2)
    x = b.conv(x, 300, 3)                           # weights over small WBUF: chunked
    x = b.pool(x, "max", 2)
    x = b.add(x, b.conv(x, 300, 1))
    b.output(b.dense(x, 40))                        # big input: input-channel chunks
    return b.graph()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_frames_are_well_formed(name):
    cfg = get_config(name)
    for graph in (_mixed_graph(), _big_graph()):
        try:
            program = static.compile_graph(graph, cfg)
        except CompileError as exc:
            assert name == "icebreaker", exc        # the tiny core may refuse big layers
            continue
        code = ints_from_words(program.code)
        assert program.frames["first"][0] == 0
        assert int(program.frames["count"].sum()) == len(code)
        assert np.all(np.diff(program.frames["layer"].astype(int)) >= 0)
        assert set(program.frames["layer"]) == set(range(len(graph.layers)))
        for f, row in enumerate(program.frames):
            words = code[row["first"]:row["first"] + row["count"]]
            head = isa.decode(words[0])
            assert head.opcode == isa.Opcode.FRAME
            assert head.body.frame.frame == f and head.body.frame.layer == row["layer"]
            assert row["cycles"] > 0
            verify.check_frame(words, cfg, f"{name} frame {f}")


def test_reencode_exact():
    cfg = get_config("small")
    code = ints_from_words(static.compile_graph(_mixed_graph(), cfg).code)
    for word, (op, deps, fields) in zip(code, verify.decode_frame(code)):
        assert isa.encode(op, deps, **fields) == word


def test_verifier_catches_missing_tokens():
    cfg = get_config("small")
    program = static.compile_graph(_big_graph(), cfg)
    code = ints_from_words(program.code)
    row = min(program.frames, key=lambda r: abs(int(r["count"]) - 40))
    words = code[row["first"]:row["first"] + row["count"]]
    verify.check_frame(words, cfg)
    flag_bits = {name: off for name, (off, _, _) in isa.FIELDS["head"].items()
                 if name.startswith("deps.")}
    caught = 0
    for i, w in enumerate(words):
        for name, off in flag_bits.items():
            if (w >> off) & 1:
                broken = list(words)
                broken[i] = w & ~(1 << off)
                with pytest.raises(verify.FrameCheckError):
                    verify.check_frame(broken, cfg)
                caught += 1
    assert caught > 10


def _clear_pair(words, pusher, pop_flag, push_flag):
    """Drop the first matched token (pop on a LOAD/COMPUTE, push on its partner) of a frame."""
    decoded = verify.decode_frame(words)
    bit = {n[5:]: off for n, (off, _, _) in isa.FIELDS["head"].items() if n.startswith("deps.")}
    pops = [k for k, (op, d, _) in enumerate(decoded) if d[pop_flag] and
            isa.UNIT_OF[op] == pusher[0]]
    pushes = [k for k, (op, d, _) in enumerate(decoded) if d[push_flag] and
              isa.UNIT_OF[op] == pusher[1]]
    if not pops:
        return None
    out = list(words)
    out[pops[0]] &= ~(1 << bit[pop_flag])
    out[pushes[0]] &= ~(1 << bit[push_flag])
    return out


def test_verifier_catches_races():
    # Balanced but missing waits: the load/compute overwrite data still in use.
    cfg = get_config("small")
    program = static.compile_graph(_big_graph(), cfg)
    code = ints_from_words(program.code)
    found = set()
    for row in program.frames:
        words = code[row["first"]:row["first"] + row["count"]]
        for units, pop, push in (((isa.Unit.LOAD, isa.Unit.COMPUTE), "pop_next", "push_prev"),
                                 ((isa.Unit.COMPUTE, isa.Unit.SAVE), "pop_next", "push_prev")):
            broken = _clear_pair(words, units, pop, push)
            if broken is not None and units not in found:
                with pytest.raises(verify.FrameCheckError, match="overwrites|races"):
                    verify.check_frame(broken, cfg)
                found.add(units)
    assert len(found) == 2


def test_field_overflow_is_a_compile_error():
    b = synthetic.IRBuilder("pads", 3)
    x = b.input((4, 20, 20))
    b.output(b.conv(x, 8, 3, 1, pads=(16, 1, 1, 1)))
    with pytest.raises(CompileError, match="conv0"):
        static.compile_graph(b.graph(), get_config("small"))


def test_untileable_layer_names_it():
    b = synthetic.IRBuilder("huge", 4)
    x = b.input((8, 40, 40))
    b.output(b.pool(x, "avg", (40, 40), 1))         # one window larger than IBUF
    with pytest.raises(CompileError, match="pool0.*cannot be tiled"):
        static.compile_graph(b.graph(), get_config("icebreaker"))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([0, 1, 2, 3]), st.integers(1, 1500), st.integers(1, 1100),
       st.integers(1, 600), st.integers(0, 3), st.integers(0, 3), st.sampled_from([8, 16, 32]))
def test_dma_split_covers_region(buf, length, rows, planes, gap_r, gap_p, cb):
    ew = dma.entry_words(buf, cb)
    length = -(-length // ew) * ew                  # whole entries per row
    if length * rows * planes // ew + 5 >= 1 << 14:      # the buffer address field
        return
    rs = length + gap_r * ew
    ps = rows * rs + gap_p * ew
    fields = dma.dma_fields(buf, 5, 8 * 1000, length, rows, planes, rs, ps, cb)
    expect = (1000 + np.arange(planes)[:, None, None] * ps + np.arange(rows)[None, :, None] * rs
              + np.arange(length)[None, None, :]).reshape(-1)
    got = np.full(expect.size, -1, np.int64)
    for f in fields:
        assert 1 <= f["length"] <= dma.MAX_LENGTH and 1 <= f["rows"] <= dma.MAX_ROWS
        assert 1 <= f["planes"] <= dma.MAX_PLANES and f["buf"] == buf
        isa.encode(isa.Opcode.LOAD if buf != 3 else isa.Opcode.SAVE, **f)
        k = ((f["buf_addr"] - 5) * ew + np.arange(f["length"] * f["rows"] * f["planes"]))
        p, rem = np.divmod(np.arange(k.size), f["rows"] * f["length"])
        r, i = np.divmod(rem, f["length"])
        got[k] = f["dram_addr"] // 8 + p * f["plane_stride"] + r * f["row_stride"] + i
    assert np.array_equal(got, expect)


def test_memory_plan_liveness():
    cfg = get_config("u200")
    graph = synthetic.resnet50(64)
    mem = memplan.plan_memory(graph, cfg)
    life = memplan._lifetimes(graph)
    names = list(mem.offsets)
    assert all(mem.offsets[n] >= mem.weights_size and mem.offsets[n] % 64 == 0 for n in names)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            (fa, la), (fb, lb) = life[a], life[b]
            dedicated = "activation" not in (mem.roles[a], mem.roles[b])
            if dedicated or not (la < fb or lb < fa):
                ra = (mem.offsets[a], mem.offsets[a] + mem.sizes[a])
                rb = (mem.offsets[b], mem.offsets[b] + mem.sizes[b])
                assert ra[1] <= rb[0] or rb[1] <= ra[0], (a, b)
    assert mem.segment_size >= max(mem.offsets[n] + mem.sizes[n] for n in names)
    intermediates = sum(mem.sizes[n] for n in names if mem.roles[n] == "activation")
    assert mem.segment_size - mem.weights_size < intermediates / 4       # space is reused


# Its compile time is a figure of make bench (bench/run.py, compile section), not a limit here.
@pytest.mark.parametrize("name", ["u200", "ulx3s"])
def test_resnet50_compiles(name):
    cfg = get_config(name)
    graph = synthetic.resnet50()
    program = static.compile_graph(graph, cfg)
    assert sum(l.kind == "conv" for l in program.layers) == 53
    assert 3.5e9 < sum(l.macs for l in program.layers) < 4.5e9
    per_layer = np.bincount(program.frames["layer"].astype(int), minlength=len(graph.layers))
    big = [i for i, l in enumerate(program.layers) if l.macs > 50e6]
    assert np.median(per_layer[big]) >= 12           # big layers spread over the cores
    assert len(program.weights) <= program.segment_size
