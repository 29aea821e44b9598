"""Divergences between the RTL and the golden model that the fuzzer has found.

:data:`KNOWN`: not fixed yet. The fuzzer counts and reports them but does not fail on them;
each has a one-line reason, a small repro case (run in every fuzz launch, so the report says
whether it still diverges) and a matcher that recognises it among a case's mismatches.

:data:`FIXED`: fixed ones; their repros run in every launch as regression cases and must
match. An entry of KNOWN whose repro matches again moves here.
"""

import dataclasses

import numpy as np

from vdla import isa

from . import fuzz_words as fw
from .fuzz_programs import FuzzCase

__all__ = ["Known", "KNOWN", "FIXED", "repro_case"]

Op, Buf = isa.Opcode, isa.Buffer


@dataclasses.dataclass(frozen=True)
class Known:
    """``repro(bench)`` makes the repro :class:`~.fuzz_programs.FuzzCase`;
    ``matches(bench, case, rtl, iss, problems)`` says whether this divergence explains
    every mismatch of a case (None for a fixed one)."""
    name: str
    reason: str
    repro: object
    matches: object = None


def repro_case(bench, name, streams, seg_size=0x400, prog_size=None):
    """A one-core case of hand-written ``streams`` at the bottom of A's window."""
    layout = bench.layout
    words = fw.region_words(streams)
    core = next(c for c in range(layout.config.cores) if layout.a_cores >> c & 1)
    return FuzzCase(seed=0, index=0, kind=f"repro of {name}", words=words,
                    prog_base=layout.imem_lo,
                    prog_size=len(words) if prog_size is None else prog_size,
                    core_mask=1 << core, runs=1, seg_base=layout.seg_lo, seg_size=seg_size,
                    segment=np.random.default_rng(0).integers(0, 256, seg_size, np.uint8))


def _dma(op, buf, dram_addr, length):
    return isa.encode(op, buf=buf, buf_addr=0, dram_addr=dram_addr, length=length, rows=1,
                      planes=1, row_stride=0, plane_stride=0)


SEG = 0x400
#: A LOAD whose extent ends 8 bytes past a segment of SEG bytes: faults SEGMENT when it runs.
BAD_LOAD = _dma(Op.LOAD, Buf.IBUF, SEG, 1)


def _later_save_repro(bench):
    frame = [isa.encode(Op.FRAME), BAD_LOAD, _dma(Op.SAVE, Buf.OBUF, 0x100, 4)]
    return repro_case(bench, "later_save_runs", [frame + [isa.encode(Op.END)]], SEG)


def _later_save_matches(bench, case, rtl, iss, problems):
    return bool(problems) and all(what == "later SAVE ran" for what, _ in problems)


def _header_repro(bench):
    # Two cores, a region of one word: header 1 lies outside it.
    layout = bench.layout
    cores = [c for c in range(layout.config.cores) if layout.a_cores >> c & 1][:2]
    streams = [[isa.encode(Op.FRAME), isa.encode(Op.END)] for _ in cores]
    case = repro_case(bench, "header_region_core", streams, prog_size=1)
    case.core_mask = sum(1 << c for c in cores)
    return case


def _region_repro(bench):
    # No END: the frame runs to the end of the region, an illegal word (0) in it.
    frame = [isa.encode(Op.FRAME), _dma(Op.LOAD, Buf.IBUF, 0, 1), 0,
             isa.encode(Op.SETUP, kh=1, kw=1, stride=1, n_icg=1)]
    return repro_case(bench, "illegal_before_region_end", [frame])


def _earlier_repro(bench):
    # The LOAD queue fills behind the faulting LOAD, so the dispatch reaches the illegal
    # word only after the LOAD's extent check has faulted.
    loads = [_dma(Op.LOAD, Buf.IBUF, 8 * k, 1) for k in range(8)]
    frame = [isa.encode(Op.FRAME), BAD_LOAD, *loads, 0, isa.encode(Op.END)]
    return repro_case(bench, "execution_fault_before_illegal", [frame], SEG)


def _boundary_repro(bench):
    # The FRAME word has a reserved bit set; the LOAD before it is still being checked.
    bad_frame = isa.encode(Op.FRAME) | 1 << (isa.INSN_BITS - 1)
    frame = [isa.encode(Op.FRAME), BAD_LOAD, bad_frame, isa.encode(Op.END)]
    return repro_case(bench, "illegal_boundary_cuts_frame", [frame], SEG)


KNOWN = [
    Known("later_save_runs",
          "a SAVE after a faulting LOAD (or CONV) of the same frame that waits for no token "
          "from it runs on the RTL (its unit issues while the LOAD's extent is being "
          "checked); the golden model's load-first schedule faults first. The ISA allows "
          "both (instructions of the frame that do not wait for the faulting one may or may "
          "not have run); the comparison still reports it",
          _later_save_repro, _later_save_matches),
]

FIXED = [
    Known("illegal_before_region_end",
          "a frame running past the end of the region with an illegal word in it: the RTL "
          "faulted ILLEGAL at the word, the golden model (whole frame read first) REGION; "
          "fixed in hw/fetch.py (a core fault inside a frame waits for the rest of the frame)",
          _region_repro),
    Known("execution_fault_before_illegal",
          "an instruction faulting SEGMENT / BUFFER when it runs, an illegal word later in its "
          "frame: the RTL reported whichever it met first, the golden model the illegal word; "
          "fixed in hw/fetch.py (the same scan)",
          _earlier_repro),
    Known("illegal_boundary_cuts_frame",
          "an illegal FRAME / SYNC / END (a flag or a reserved bit): the RTL faulted at once "
          "and dropped the queued rest of the frame before it (its SAVEs, its faults), the "
          "golden model runs that frame first; fixed in hw/dispatch.py (refused once drained)",
          _boundary_repro),
    Known("header_region_core",
          "a region shorter than the STREAM headers: the RTL faulted REGION on the core whose "
          "header lies outside it, the golden model on the tenant's first core; fixed in "
          "sim/iss.py (_read_headers names the header's core, as for CORES)",
          _header_repro),
]
