"""Instruction frames: steps with double-buffered loads, turned into encoded words with tokens.

A frame is a sequence of *steps*. Step ``s`` loads what it needs (LOAD), computes (CONV or
MISC, possibly preceded by a SETUP) and, if it completes an output chunk, saves it (SAVE).
The tilers place every step's loads in buffer halves that steps ``s-1`` and ``s+1`` do not
use, and every output chunk in an OBUF region the chunk before it does not use; the
dependency tokens (VTA style) then make load, compute and save overlap without hazards:

* LOAD -> COMPUTE: the last LOAD of step ``s`` pushes, the first compute of step ``s`` pops;
* COMPUTE -> LOAD: the first LOAD of step ``s`` waits for the last compute of the latest
  step reading what it overwrites: ``wait_step``, by default ``s-2`` (alternating halves);
* COMPUTE -> SAVE: the compute finishing a chunk pushes, the chunk's first SAVE pops;
* SAVE -> COMPUTE: a step that overwrites the OBUF region of an earlier chunk (``wait_chunk``)
  pops a token its last SAVE pushed.

Tokens are only pushed where a matching pop exists, so every frame leaves the queues empty.
"""

import dataclasses

from vdla import isa

from .cost import estimate_cycles

__all__ = ["Step", "assemble_frame", "compute_cycles"]

_OP = isa.Opcode
_FULL = {"pop_prev": 0, "pop_next": 0, "push_prev": 0, "push_next": 0}


@dataclasses.dataclass
class Step:
    """One step of a frame.

    ``computes`` holds ``(Opcode, fields)`` pairs: CONV / MISC, and SETUP to change the window
    state for the following ones. ``saves`` is non-empty when the step completes an output
    chunk. ``wait_chunk`` is the index (among the frame's chunks) of an earlier chunk whose
    OBUF region this step's computes overwrite. ``wait_step`` is the latest earlier step
    whose buffers the loads overwrite (default ``s-2``; ``-1``: none).
    """
    loads: list = dataclasses.field(default_factory=list)
    computes: list = dataclasses.field(default_factory=list)
    saves: list = dataclasses.field(default_factory=list)
    wait_chunk: int = None
    wait_step: int = None


def compute_cycles(op, fields, setup, config):
    """PE-array (MISC: lane) cycles of one CONV / MISC under the window state ``setup``
    (see cost.py)."""
    if op == _OP.CONV:
        n_icg = 1 if setup["dw"] else setup["n_icg"]
        return (fields["out_h"] * fields["out_w"] * fields["n_ob"] * setup["kh"] * setup["kw"]
                * n_icg * (config.cb // config.ocp))
    entries = fields["n_cb"] * fields["out_h"] * fields["out_w"]
    if fields["func"] == isa.MiscFunc.ADD.value:
        return entries
    if fields["func"] == isa.MiscFunc.LUT.value:
        return entries * config.cb          # one lane a cycle
    return entries * setup["kh"] * setup["kw"]


def assemble_frame(frame, layer, setup, steps, config):
    """Encode one frame: ``(list of 128-bit ints, estimated cycles)``.

    ``setup`` is the SETUP field dict issued right after FRAME; ``frame`` the frame-table index.
    """
    # Flags per (step, role): decided first, encoded once.
    load_flags = [[dict(_FULL) for _ in st.loads] for st in steps]
    comp_idx = [[i for i, (op, _) in enumerate(st.computes) if op != _OP.SETUP] for st in steps]
    comp_flags = [[dict(_FULL) for _ in st.computes] for st in steps]
    save_flags = [[dict(_FULL) for _ in st.saves] for st in steps]
    chunk_step = [s for s, st in enumerate(steps) if st.saves]
    last_wait = last_step = -1
    for s, st in enumerate(steps):
        if not comp_idx[s]:
            raise ValueError(f"frame {frame}: step {s} has no compute instruction")
        first_c, last_c = comp_idx[s][0], comp_idx[s][-1]
        if st.loads:
            load_flags[s][-1]["push_next"] = 1
            comp_flags[s][first_c]["pop_prev"] = 1
            w = s - 2 if st.wait_step is None else st.wait_step
            if w >= 0:
                if not last_step < w < s:
                    raise ValueError(f"frame {frame}: step {s} waits for step {w} out of order")
                last_step = w
                load_flags[s][0]["pop_next"] = 1
                comp_flags[w][comp_idx[w][-1]]["push_prev"] = 1
        if st.saves:
            comp_flags[s][last_c]["push_next"] = 1
            save_flags[s][0]["pop_prev"] = 1
        if st.wait_chunk is not None:
            c = st.wait_chunk
            if not (last_wait < c < len(chunk_step)) or chunk_step[c] >= s:
                raise ValueError(f"frame {frame}: step {s} waits for chunk {c} out of order")
            last_wait = c
            save_flags[chunk_step[c]][-1]["push_prev"] = 1
            comp_flags[s][first_c]["pop_next"] = 1

    words = [isa.encode(_OP.FRAME, frame=frame, layer=layer), isa.encode(_OP.SETUP, **setup)]
    state = dict(setup)
    compute = dma_words = n_dma = dma_rows = 0
    for s, st in enumerate(steps):
        for fields, flags in zip(st.loads, load_flags[s]):
            words.append(isa.encode(_OP.LOAD, flags, **fields))
            dma_words += fields["length"] * fields["rows"] * fields["planes"]
            dma_rows += fields["rows"] * fields["planes"]
        for (op, fields), flags in zip(st.computes, comp_flags[s]):
            if op == _OP.SETUP:
                words.append(isa.encode(op, **fields))
                state = dict(fields)
                continue
            words.append(isa.encode(op, flags, **fields))
            compute += compute_cycles(op, fields, state, config)
        for fields, flags in zip(st.saves, save_flags[s]):
            words.append(isa.encode(_OP.SAVE, flags, **fields))
            dma_words += fields["length"] * fields["rows"] * fields["planes"]
            dma_rows += fields["rows"] * fields["planes"]
        n_dma += len(st.loads) + len(st.saves)
    cycles = estimate_cycles(config, compute, dma_words, len(words), n_dma, dma_rows)
    return words, cycles
