"""Dynamic stage: re-target a compiled program (IFP) to one allocation in well under 1 ms.

:func:`link` does only what depends on the allocation:

* assigns the frames of every layer to the tenant's virtual cores, balancing the frames'
  estimated cycles; each core gets one contiguous run of frames per layer (cut by the prefix
  sum of cycles) so neighbouring tiles, which share input rows, stay on one core;
* lays out one stream per virtual core: for each layer its frames' words, copied verbatim,
  then ``SYNC(barrier=layer)`` after every layer but the last, then ``END``; the region starts
  with one STREAM header per virtual core;
* sets the tenant registers of :mod:`vdla.regs` (core mask, program region, DRAM segment, RUNS).

Nothing is re-tiled, decoded or relocated: DRAM addresses in the code are segment-relative and
stream offsets region-relative. Everything is vectorized numpy with no Python loop over frames,
words or layers, because a tenant is re-linked while the FPGA keeps running (budget: 1 ms p50
for a ResNet-50-sized program of ~100k words).
"""

import gc
import time

import numpy as np

from vdla import isa

from .errors import LinkError
from .program import LinkedImage

__all__ = ["link", "assign_frames", "benchmark_link"]

_HEAD = isa.FIELDS["head"]
_U64_MAX = (1 << 64) - 1


def _low_lane(table, name):
    """Bit offset of a field that lies in the low 64 bits of a word (checked at import)."""
    off, width, _ = table[name]
    assert off + width <= 64, f"{name} is expected in the low 64 bits"
    return off


# The control words the linker writes have all their fields in the low 64-bit lane, so each
# is an int64 expression of a few column shifts: cheaper than a general field packer.
_OPCODE_AT = _low_lane(_HEAD, "opcode")
_BARRIER_AT = _low_lane(isa.FIELDS["sync"], "barrier")
_STREAM_AT = {name: _low_lane(isa.FIELDS["stream"], name) for name in ("vcore", "count", "offset")}
_SYNC_LO = isa.Opcode.SYNC.value << _OPCODE_AT
_END_WORD = isa.encode(isa.Opcode.END)
_STREAM_LO = isa.Opcode.STREAM.value << _OPCODE_AT
assert _END_WORD >> 64 == 0


def assign_frames(layer, cycles, cores, n_layers):
    """Virtual core of every frame: per layer, contiguous chunks balanced by cycles.

    Frame ``f`` of a layer whose frames total ``T`` cycles goes to core
    ``floor(cores * (P_f + c_f / 2) / T)``, where ``P_f`` is the cycles of the layer's frames
    before it: the core whose equal share of the layer holds the frame's midpoint. The result
    is non-decreasing within a layer (contiguous chunks) and each core's load differs from
    ``T / cores`` by at most about one frame. A layer whose frames all estimate 0 cycles is
    split by frame count instead.
    """
    weight = cycles.astype(np.float64)
    total = np.bincount(layer, weights=weight, minlength=n_layers)
    if not total.all():
        empty = total == 0
        weight = np.where(empty[layer], 1.0, weight)
        total = np.bincount(layer, weights=weight, minlength=n_layers)
    # Cycles before each frame within its layer: global exclusive prefix sum minus the
    # prefix sum at the layer's start (frames are ordered by layer).
    before = np.cumsum(weight) - weight
    layer_start = np.cumsum(total) - total
    midpoint = before - layer_start[layer] + 0.5 * weight
    vcore = (midpoint * (cores / total)[layer]).astype(np.int64)
    # The midpoint is strictly inside the layer, so only rounding could reach ``cores``.
    np.minimum(vcore, cores - 1, out=vcore)
    return vcore


def _check_allocation(program, config, allocation):
    cores = allocation.cores
    if not isinstance(cores, (int, np.integer)) or not 1 <= cores <= config.cores:
        raise LinkError(f"cores must be 1..{config.cores} for configuration {config.name}, "
                        f"not {cores!r}")
    cores = int(cores)
    mask = (1 << cores) - 1 if allocation.core_mask is None else int(allocation.core_mask)
    if mask < 0 or mask >> config.cores:
        raise LinkError(f"core mask 0x{mask:x} names cores outside the pool of {config.cores}")
    if bin(mask).count("1") != cores:
        raise LinkError(f"core mask 0x{mask:x} holds {bin(mask).count('1')} cores, "
                        f"the allocation asks for {cores}")
    if program.core_hash != config.core_hash():
        raise LinkError(f"program {program.model!r} was compiled for core hash "
                        f"{program.core_hash} ({program.config}), configuration {config.name} "
                        f"has {config.core_hash()}")
    return cores, mask


def _check_frames(program, frames):
    """Cheap sanity checks of the frame table, so a corrupt program fails here, in one line."""
    n_layers = len(program.layers)
    if n_layers == 0 or len(frames) == 0:
        raise LinkError(f"program {program.model!r} has no layers or no frames")
    if n_layers > 1 << isa.FIELDS["sync"]["barrier"][1]:
        raise LinkError(f"program has {n_layers} layers; SYNC numbers at most "
                        f"{1 << isa.FIELDS['sync']['barrier'][1]}")
    layer = frames["layer"]
    first = frames["first"].astype(np.int64)
    count = frames["count"].astype(np.int64)
    if (layer[1:] < layer[:-1]).any() or int(layer[-1]) >= n_layers:
        raise LinkError("frame table is not ordered by layer or names an unknown layer")
    if (count < 1).any() or int((first + count).max()) > len(program.code):
        raise LinkError("frame table points outside the program's instruction words")
    return n_layers, layer.astype(np.int64), first, count


def link(program, config, allocation):
    """Link ``program`` for ``allocation`` on ``config``; return a :class:`LinkedImage`.

    Raises :class:`LinkError` (one line) when the allocation cannot hold the program: core
    count or mask, configuration hash, program region, DRAM segment.
    """
    cores, mask = _check_allocation(program, config, allocation)
    frames = program.frames
    n_layers, layer, first, count = _check_frames(program, frames)
    vcore = assign_frames(layer, frames["cycles"], cores, n_layers)

    # Output order of the frames: by virtual core, then (stably) the frame order, which is
    # layer order. Every virtual core carries n_layers control words (n_layers-1 SYNC, 1 END).
    order = np.argsort(vcore, kind="stable")
    v_s, l_s, first_s, count_s = vcore[order], layer[order], first[order], count[order]
    words_before = np.cumsum(count_s) - count_s
    dst_frames = cores + words_before + v_s * n_layers + l_s

    # Control word of (core k, layer l) follows the core's frames of layers <= l.
    group_words = np.bincount(v_s * n_layers + l_s, weights=count_s,
                              minlength=cores * n_layers).astype(np.int64)
    ctrl = np.arange(cores * n_layers)
    dst_ctrl = cores + np.cumsum(group_words) + ctrl
    total = cores + int(count_s.sum()) + cores * n_layers

    prog_base = int(allocation.prog_base)
    prog_size = total if allocation.prog_size is None else int(allocation.prog_size)
    if prog_base < 0 or prog_base >= config.imem_depth:
        raise LinkError(f"program region base {prog_base} is outside the instruction memory "
                        f"of {config.imem_depth} words")
    if total > prog_size:
        raise LinkError(f"linked image needs {total} words, the program region holds "
                        f"{prog_size}")
    if prog_base + prog_size > config.imem_depth:
        raise LinkError(f"program region {prog_base}+{prog_size} words exceeds the instruction "
                        f"memory of {config.imem_depth} words")
    if total > 1 << isa.FIELDS["stream"]["offset"][1]:
        raise LinkError(f"linked image of {total} words exceeds the STREAM offset field")
    seg_base = int(allocation.seg_base)
    seg_size = program.segment_size if allocation.seg_size is None else int(allocation.seg_size)
    if seg_size < program.segment_size:
        raise LinkError(f"DRAM segment of {seg_size} bytes is smaller than the "
                        f"{program.segment_size} the program needs")
    if seg_base < 0 or seg_base % isa.WORD_BYTES or seg_base + seg_size > _U64_MAX:
        raise LinkError(f"DRAM segment base 0x{seg_base:x} must be a non-negative multiple of "
                        f"{isa.WORD_BYTES} inside the 64-bit address space")

    # Gather: the output is a tiling by ranges (frames, and single control words); each output
    # word's source index is its position plus the offset of the range it lies in, found with
    # one argsort over the few thousand range starts and one np.repeat over the words.
    starts = np.concatenate([dst_frames, dst_ctrl])
    sources = np.concatenate([first_s, np.zeros(len(dst_ctrl), np.int64)])
    by_start = np.argsort(starts, kind="stable")
    starts = starts[by_start]
    lengths = np.empty_like(starts)
    lengths[:-1] = starts[1:] - starts[:-1]
    lengths[-1] = total - starts[-1]
    src_index = np.repeat(sources[by_start] - starts, lengths)
    src_index += np.arange(cores, total)

    words = np.empty((total, 2), np.uint64)
    code = np.ascontiguousarray(program.code, np.uint64).view(np.complex128).reshape(-1)
    # mode="clip": with the default mode="raise" numpy buffers `out` (10x slower); the
    # indices are in range by construction.
    np.take(code, src_index, out=words[cores:].view(np.complex128).reshape(-1), mode="clip")

    # Control words overwrite the placeholders gathered from word 0: SYNC(l) after layer l,
    # END after the last layer, then the STREAM headers.
    ctrl_words = np.zeros((cores, n_layers, 2), np.uint64)
    ctrl_words[:, :, 0] = (np.arange(n_layers, dtype=np.uint64) << np.uint64(_BARRIER_AT)
                           | np.uint64(_SYNC_LO))
    ctrl_words[:, -1, 0] = _END_WORD
    words[dst_ctrl] = ctrl_words.reshape(-1, 2)
    stream_end = dst_ctrl[n_layers - 1::n_layers] + 1
    stream_start = np.empty(cores, np.int64)
    stream_start[0] = cores
    stream_start[1:] = stream_end[:-1]
    vcores = np.arange(cores, dtype=np.int64)
    words[:cores, 0] = (_STREAM_LO | vcores << _STREAM_AT["vcore"]
                        | cores << _STREAM_AT["count"] | stream_start << _STREAM_AT["offset"])
    words[:cores, 1] = 0

    registers = {
        "CORE_MASK": mask,
        "PROG_BASE": prog_base,
        "PROG_SIZE": prog_size,
        "SEG_BASE_LO": seg_base & 0xFFFF_FFFF,
        "SEG_BASE_HI": seg_base >> 32,
        "SEG_SIZE_LO": seg_size & 0xFFFF_FFFF,
        "SEG_SIZE_HI": seg_size >> 32,
        "RUNS": 1,
    }
    streams = list(zip(stream_start.tolist(), (stream_end - stream_start).tolist()))
    return LinkedImage(words=words, cores=cores, registers=registers, assignment=vcore,
                       streams=streams)


def benchmark_link(program, config, cores, repeats=1000, warmup=20):
    """Time :func:`link` ``repeats`` times; ``cores`` is a count or a sequence cycled through.

    Returns ``{"p50_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "repeats", "cores",
    "words", "frames"}``; the first ``warmup`` calls (page faults, caches) are not counted,
    and the garbage collector is paused while timing, as :mod:`timeit` does.
    """
    from .program import Allocation
    counts = [int(cores)] if np.isscalar(cores) else [int(c) for c in cores]
    allocations = [Allocation(cores=c) for c in counts]
    for i in range(warmup):
        link(program, config, allocations[i % len(allocations)])
    times = np.empty(repeats)
    # As timeit does: keep the cyclic garbage collector out of the measured calls.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(repeats):
            start = time.perf_counter()
            link(program, config, allocations[i % len(allocations)])
            times[i] = time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()
    times *= 1e3
    return {
        "p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99)),
        "mean_ms": float(times.mean()), "min_ms": float(times.min()),
        "max_ms": float(times.max()), "repeats": int(repeats), "cores": counts,
        "words": int(len(program.code)), "frames": int(len(program.frames)),
    }
