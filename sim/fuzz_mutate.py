"""Mutants of a compiled program for the instruction-stream fuzzer.

The program is linked for A's cores, then one to three mutations hit its streams: a bit
flipped, a field nudged or replaced, words swapped, duplicated, moved or deleted, and some of
the random-program corruptions (a dependency flag, a DMA extent moved to the segment end, a
barrier changed, an undefined word). The STREAM headers are rebuilt for the mutated streams
nine times in ten, so execution gets past the start checks and deep into the program. The
segment holds the program's weights and random bytes elsewhere (inputs, activations).
"""

import numpy as np

from vdla import isa
from vdla.compiler.link import link
from vdla.compiler.program import Allocation, ints_from_words

from . import fuzz_corrupt as fc
from . import fuzz_programs as fp
from . import fuzz_words as fw

__all__ = ["mutant_case", "MUTATIONS"]


def _word(rng, streams):
    at = fc.pick(rng, fc.positions(streams))
    return at


def _bit_flip(rng, streams, ctx):
    at = _word(rng, streams)
    if at:
        k, i = at
        used = [spec for spec in fw.body_fields(streams[k][i]).values()]
        roll = rng.random()
        if used and roll < 0.7:
            # Mostly a bit of a defined field: a reserved bit only ever faults ILLEGAL.
            off, width, _ = fc.pick(rng, used)
            bit = off + int(rng.integers(width))
        else:
            bit = int(rng.integers(0, 8)) if roll < 0.85 else int(rng.integers(8, 128))
        streams[k][i] ^= 1 << bit
        return f"bit {bit} flipped at stream {k} word {i}"


def _field(rng, streams, ctx):
    at = fc.pick(rng, [(k, i) for k, i in fc.positions(streams)
                        if fw.view_of(streams[k][i])])
    if at:
        k, i = at
        w = streams[k][i]
        view = fw.view_of(w)
        name = fc.pick(rng, list(isa.FIELDS[view]))
        width = isa.FIELDS[view][name][1]
        old = fw.get(w, view, name)
        new = fc.pick(rng, [old + 1, old - 1, old + 8, old - 8, 0, 2 * old,
                             int(rng.integers(0, 1 << width)), (1 << width) - 1])
        streams[k][i] = fw.put(w, view, name, new)
        return f"{view}.{name} {old} -> {fw.get(streams[k][i], view, name)} at stream {k} word {i}"


def _delete(rng, streams, ctx):
    return fc.drop(rng, streams, ctx)


def _move(rng, streams, ctx):
    at = _word(rng, streams)
    if at:
        k, i = at
        s = streams[k]
        word = s.pop(i)
        j = min(len(s), max(0, i + int(rng.choice([-5, -3, -2, 2, 3, 5]))))
        s.insert(j, word)
        return f"stream {k} word {i} moved to {j}"


_C = fc.CORRUPTIONS
#: ``name -> (fn(rng, streams, ctx) -> note or None, relative weight)``.
MUTATIONS = {
    "bit_flip": (_bit_flip, 4), "field": (_field, 4), "swap": (_C["swap"], 2),
    "duplicate": (_C["duplicate"], 1), "delete": (_delete, 2), "move": (_move, 1),
    "flip_flag": (_C["flip_flag"], 2), "segment_edge": (_C["segment_edge"], 2),
    "barrier": (_C["barrier"], 1), "bad_word": (_C["bad_word"], 1),
    "reserved_bit": (_C["reserved_bit"], 1),
}


def mutant_case(rng, layout, seed, index, name, program):
    """A :class:`~.fuzz_programs.FuzzCase` mutating ``program`` (compiled for
    ``layout.config``)."""
    mask, count = fp.choose_mask(rng, layout)
    image = link(program, layout.config, Allocation(cores=count))
    ints = ints_from_words(image.words)
    streams = [ints[start:start + length] for start, length in image.streams]
    seg_size = program.segment_size
    roll = rng.random()
    if roll < 0.1:
        seg_size -= 8 * int(rng.integers(1, 17))    # the last extents reach past the end
    elif roll < 0.15:
        seg_size += 8 * int(rng.integers(1, 65))
    ctx = {"config": layout.config, "seg_size": seg_size}
    names = list(MUTATIONS)
    weights = np.array([MUTATIONS[n][1] for n in names], float)
    notes = []
    for _ in range(int(rng.integers(1, 4))):
        pick = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        note = MUTATIONS[pick][0](rng, streams, ctx)
        if note:
            notes.append(note)
    if rng.random() < 0.9:
        words = fw.region_words(streams)
    else:
        words = ints[:count] + [w for s in streams for w in s]
        notes.append("STREAM headers of the unmutated image kept")
    if rng.random() < 0.03:
        notes.append(fc.corrupt_headers(rng, words, count))
    prog_base, prog_size = fp.place_region(rng, layout, len(words))
    segment = rng.integers(0, 256, seg_size, dtype=np.uint8)
    weights_blob = np.frombuffer(program.weights, np.uint8)[:seg_size]
    segment[:len(weights_blob)] = weights_blob
    return fp.FuzzCase(seed=seed, index=index, kind=f"mutant of {name}", words=words,
                       prog_base=prog_base, prog_size=prog_size, core_mask=mask,
                       runs=2 if rng.random() < 0.05 else 1,
                       seg_base=fp.place_segment(rng, layout, seg_size), seg_size=seg_size,
                       segment=segment, notes=notes)
