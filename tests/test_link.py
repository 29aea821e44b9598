"""Dynamic stage: frame assignment, stream layout, registers, errors, speed; image files."""

import json

import numpy as np
import pytest

from vdla import isa
from vdla.compiler import image as image_files
from vdla.compiler.errors import LinkError
from vdla.compiler.link import assign_frames, benchmark_link, link
from vdla.compiler.program import (FRAME_DTYPE, Allocation, LayerEntry, Program,
                                   ints_from_words, words_from_ints)
from vdla.config import get_config

SMALL = get_config("small")
U200 = get_config("u200")


def synthetic_program(config, n_layers=6, n_frames=40, seed=0, max_words=6, zero_cycles=()):
    """A program whose words are recognisable: FRAME(frame, layer), then LOADs whose
    ``dram_addr`` is 8 x the word's index in ``code`` (a link must copy them verbatim)."""
    rng = np.random.default_rng(seed)
    layer = np.sort(np.concatenate([np.arange(n_layers),
                                    rng.integers(0, n_layers, n_frames - n_layers)]))
    counts = rng.integers(1, max_words + 1, n_frames)
    first = np.cumsum(counts) - counts
    frames = np.zeros(n_frames, FRAME_DTYPE)
    frames["layer"], frames["first"], frames["count"] = layer, first, counts
    frames["cycles"] = rng.integers(100, 10_000, n_frames)
    for z in zero_cycles:
        frames["cycles"][layer == z] = 0
    ints = []
    for f in range(n_frames):
        ints.append(isa.encode(isa.Opcode.FRAME, frame=f, layer=int(layer[f])))
        ints += [isa.encode(isa.Opcode.LOAD, buf=isa.Buffer.IBUF, dram_addr=8 * len(ints),
                            length=1, rows=1, planes=1) for _ in range(counts[f] - 1)]
        assert len(ints) == first[f] + counts[f]
    layers = [LayerEntry(f"l{i}", "conv", [], f"t{i}", []) for i in range(n_layers)]
    return Program("synthetic", config.name, config.core_hash(), [], layers, frames,
                   words_from_ints(ints), b"", 4096, [], [])


def large_program(config, n_layers=53, n_frames=2500, n_words=80_000, seed=1):
    """ResNet-50-sized frame table (53 layers, 2.5k frames, 80k words) for the speed test."""
    rng = np.random.default_rng(seed)
    layer = np.sort(np.concatenate([np.arange(n_layers),
                                    rng.integers(0, n_layers, n_frames - n_layers)]))
    counts = rng.multinomial(n_words - 2 * n_frames, np.full(n_frames, 1 / n_frames)) + 2
    frames = np.zeros(n_frames, FRAME_DTYPE)
    frames["layer"], frames["count"] = layer, counts
    frames["first"] = np.cumsum(counts) - counts
    frames["cycles"] = rng.integers(1_000, 100_000, n_frames)
    code = np.zeros((n_words, 2), np.uint64)
    code[:, 0] = np.arange(n_words, dtype=np.uint64) << np.uint64(8) | np.uint64(1)
    layers = [LayerEntry(f"l{i}", "conv", [], f"t{i}", []) for i in range(n_layers)]
    return Program("large", config.name, config.core_hash(), [], layers, frames, code, b"",
                   1 << 20, [], [])


def reference_streams(program, assignment, cores):
    """The streams spelled out with Python loops (what link must produce, word for word)."""
    code = ints_from_words(program.code)
    n_layers = len(program.layers)
    streams = [[] for _ in range(cores)]
    for k in range(cores):
        for layer in range(n_layers):
            for f, row in enumerate(program.frames):
                if row["layer"] == layer and assignment[f] == k:
                    streams[k] += code[row["first"]:row["first"] + row["count"]]
            streams[k].append(isa.encode(isa.Opcode.SYNC, barrier=layer)
                              if layer < n_layers - 1 else isa.encode(isa.Opcode.END))
    return streams


@pytest.mark.parametrize("cores", [1, 2, 3, 4])
def test_image_matches_reference(cores):
    program = synthetic_program(SMALL)
    image = link(program, SMALL, Allocation(cores=cores))
    streams = reference_streams(program, image.assignment, cores)
    words = ints_from_words(image.words)
    offset = cores
    for k, stream in enumerate(streams):
        head = isa.decode(words[k])
        assert head.opcode == isa.Opcode.STREAM
        assert (head.body.stream.vcore, head.body.stream.count, head.body.stream.offset) \
            == (k, cores, offset)
        assert image.streams[k] == (offset, len(stream))
        assert words[offset:offset + len(stream)] == stream
        offset += len(stream)
    assert offset == len(words) == image.registers["PROG_SIZE"]


def test_every_frame_exactly_once_in_layer_order():
    program = synthetic_program(SMALL, n_layers=9, n_frames=70, seed=3)
    image = link(program, SMALL, Allocation(cores=4))
    words = ints_from_words(image.words)
    seen = []
    for offset, length in image.streams:
        layers = []
        for w in words[offset:offset + length]:
            insn = isa.decode(w)
            if insn.opcode == isa.Opcode.FRAME:
                seen.append(insn.body.frame.frame)
                layers.append(insn.body.frame.layer)
                assert image.assignment[insn.body.frame.frame] == image.streams.index(
                    (offset, length))
        assert layers == sorted(layers)
    assert sorted(seen) == list(range(len(program.frames)))


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 7, 16])
def test_assignment_is_contiguous_and_balanced(cores):
    program = synthetic_program(U200, n_layers=5, n_frames=200, seed=cores)
    frames = program.frames
    vcore = assign_frames(frames["layer"].astype(np.int64), frames["cycles"], cores, 5)
    for layer in range(5):
        sel = frames["layer"] == layer
        cyc = frames["cycles"][sel].astype(np.int64)
        v = vcore[sel]
        assert (np.diff(v) >= 0).all(), "chunks must be contiguous"
        load = np.bincount(v, weights=cyc, minlength=cores)
        # The midpoint rule misses the even share by at most one frame's cycles.
        assert load.max() - cyc.sum() / cores <= cyc.max()
        if len(cyc) >= 4 * cores:
            assert (load > 0).all()


def test_zero_cycle_layer_split_by_count():
    program = synthetic_program(SMALL, n_layers=3, n_frames=30, zero_cycles=(1,))
    image = link(program, SMALL, Allocation(cores=2))
    sel = program.frames["layer"] == 1
    counts = np.bincount(image.assignment[sel], minlength=2)
    assert abs(int(counts[0]) - int(counts[1])) <= 1


def test_registers_and_defaults():
    program = synthetic_program(SMALL)
    image = link(program, SMALL, Allocation(cores=2, core_mask=0b1010, prog_base=100,
                                            prog_size=1000, seg_base=0x1_2345_6788,
                                            seg_size=0x2_0000_0000))
    assert image.registers == {
        "CORE_MASK": 0b1010, "PROG_BASE": 100, "PROG_SIZE": 1000,
        "SEG_BASE_LO": 0x2345_6788, "SEG_BASE_HI": 1, "SEG_SIZE_LO": 0, "SEG_SIZE_HI": 2,
        "RUNS": 1}
    image = link(program, SMALL, Allocation(cores=3))
    assert image.registers["CORE_MASK"] == 0b111
    assert image.registers["PROG_SIZE"] == len(image.words)
    assert image.registers["SEG_SIZE_LO"] == program.segment_size
    assert image.cores == 3 and len(image.assignment) == len(program.frames)


@pytest.mark.parametrize("alloc, program_change, message", [
    (Allocation(cores=0), None, "cores must be 1..4"),
    (Allocation(cores=5), None, "cores must be 1..4"),
    (Allocation(cores=2, core_mask=0b111), None, "holds 3 cores"),
    (Allocation(cores=1, core_mask=0b10000), None, "outside the pool"),
    (Allocation(cores=1), {"core_hash": "0123456789abcdef"}, "core hash"),
    (Allocation(cores=1, prog_size=10), None, "program region holds 10"),
    (Allocation(cores=1, prog_base=SMALL.imem_depth - 40), None, "exceeds the instruction memory"),
    (Allocation(cores=1, prog_base=SMALL.imem_depth + 800), None, "outside the instruction memory"),
    (Allocation(cores=1, seg_size=100), None, "smaller than the 4096"),
    (Allocation(cores=1, seg_base=4), None, "multiple of 8"),
])
def test_link_errors(alloc, program_change, message):
    program = synthetic_program(SMALL)
    for name, value in (program_change or {}).items():
        setattr(program, name, value)
    with pytest.raises(LinkError, match=message) as info:
        link(program, SMALL, alloc)
    assert "\n" not in str(info.value)


def test_corrupt_frame_table_is_a_link_error():
    program = synthetic_program(SMALL)
    program.frames = program.frames[::-1].copy()
    with pytest.raises(LinkError, match="ordered by layer"):
        link(program, SMALL, Allocation(cores=1))
    program = synthetic_program(SMALL)
    program.frames["count"][-1] += 1000
    with pytest.raises(LinkError, match="outside the program"):
        link(program, SMALL, Allocation(cores=1))


def test_link_of_a_resnet50_sized_program():
    # Its link time is a figure of make bench (bench/run.py, compile section), not a limit here.
    program = large_program(U200)
    image = link(program, U200, Allocation(cores=16))
    assert len(image.words) == 16 + 80_000 + 16 * 53
    timings = benchmark_link(program, U200, (1, 2, 4, 16), repeats=2)
    assert set(timings) >= {"p50_ms", "p99_ms", "max_ms"}


def test_image_files_round_trip(tmp_path):
    program = synthetic_program(SMALL)
    image = link(program, SMALL, Allocation(cores=2))
    paths = image_files.write_image(image, tmp_path / "out" / "img.v1", program=program)
    assert paths[0].name == "img.v1.bin"
    assert [p.suffix for p in paths] == [".bin", ".hex", ".json"]
    assert (image_files.read_image_bin(paths[0]) == image.words).all()
    assert (image_files.read_image_hex(paths[1]) == image.words).all()
    ints = image_files.memory_init(image.words)
    assert ints == ints_from_words(image.words)
    lines = paths[1].read_text().splitlines()
    assert all(len(line) == 32 for line in lines)
    assert int(lines[0], 16) == ints[0]
    raw = paths[0].read_bytes()
    assert int.from_bytes(raw[:16], "little") == ints[0]
    meta = json.loads(paths[2].read_text())
    assert meta["registers"] == image.registers
    assert meta["cores"] == 2 and meta["words"] == len(image.words)
    assert sum(meta["assignment"]["frames_per_core"]) == len(program.frames)
    assert sum(meta["assignment"]["cycles_per_core"]) == int(program.frames["cycles"].sum())
