"""Judging a fuzz case: the RTL's run against the golden model's, and the fuzz report.

The rules (the project's: hardware and golden model agree bit for bit, faults included):

* B, the well-behaved tenant, ends done with the golden model's readings;
* no DRAM byte outside A's segment differs from the golden model's DRAM (B's segment holds
  the golden outputs and activations, every other byte its initial value);
* A's STATUS (state, fault code, fault core), FAULT_PC and INFERENCES equal the golden
  model's. Where the golden model's two schedules (``load-first``, ``compute-first``, see
  :mod:`.iss_core`) disagree the RTL may match either, and when several of A's cores fault in
  the same phase it may report any of them (one that the core meets alone, in the phase of
  the golden model's fault): timing decides which the hardware sees first. Both count as
  *schedule-dependent*;
* A's segment: equal to the golden model's when A ends done, unless the two schedules leave
  different segments (a missing dependency flag: a *racy* program, not compared). After a
  fault of a one-core A, the bytes that differ must have been written by SAVEs of the faulting
  frame before the faulting word (they may or may not have run); bytes of a later SAVE are
  reported (``later SAVE ran``), any other byte is a divergence. With several cores, each
  running its own frame when one faults, the segment is not compared.

A mismatch a :class:`~.fuzz_known.Known` divergence explains is counted under its name and
does not fail the run.
"""

import collections
import dataclasses

import numpy as np

from vdla import isa, regs
from vdla.compiler.disasm import format_insn
from vdla.regs import Fault

from . import fuzz_places as places
from . import fuzz_words as fw

__all__ = ["Verdict", "judge", "describe", "context", "summary", "MATCH"]

_STATUS = isa.flat_fields(regs.Status)
MATCH = "match"


@dataclasses.dataclass
class Verdict:
    """How one case went: ``kind`` is ``match``, the name of a known divergence or
    ``divergence``; ``problems`` the mismatches and ``notes`` what was allowed (schedule-
    dependent status, racy program, segment after a fault), both as ``(kind, text)``."""
    case: object
    kind: str
    problems: list
    notes: list
    rtl: dict
    iss: dict
    #: Further instruction-memory addresses the report shows (the SAVEs of "later SAVE ran").
    pcs: list = dataclasses.field(default_factory=list)


def describe(reading):
    """One line from a ``{STATUS, FAULT_PC, INFERENCES}`` reading."""
    s = isa.unpack_fields(_STATUS, reading["STATUS"])
    state = [name for name in ("running", "done", "faulted", "stopped") if s[name]]
    text = "+".join(state) or "idle"
    if s["faulted"]:
        text += f" {Fault(s['fault']).name} at word {reading['FAULT_PC']} on core {s['fault_core']}"
    return f"{text}, {reading['INFERENCES']} inference(s)"


def _done(reading):
    return bool(isa.unpack_fields(_STATUS, reading["STATUS"])["done"])


def _where(bench, case, address):
    b_lo, b_hi = bench.b_segment
    if b_lo <= address < b_hi:
        return f"B's segment +0x{address - b_lo:x}"
    if address < case.seg_base:
        return f"0x{case.seg_base - address:x} bytes below A's segment"
    return f"0x{address - case.seg_base - case.seg_size:x} bytes above A's segment"


def judge(bench, case, rtl, iss, iss_alt, known=(), solo=None):
    """The :class:`Verdict` of ``case`` from the RTL result and the golden model's runs
    under the two schedules (``iss``: load-first, ``iss_alt``: compute-first). ``solo(k)``
    runs virtual core ``k`` of the case alone on the golden model (for faults of several
    cores in one phase)."""
    problems, notes = [], []
    if rtl["timeout"]:
        problems.append(("timeout", f"tenant(s) {rtl['timeout']} still running "
                                    f"{rtl['cycles']} cycles after the start"
                         + (" and not stopped by CTRL stop" if rtl["stuck"] else "")))
    if rtl["b"] != iss["b"]:
        problems.append(("tenant B", f"B: RTL {describe(rtl['b'])}; golden model "
                                     f"{describe(iss['b'])}"))
    lo, hi = case.seg_base, case.seg_base + case.seg_size
    outside = np.ones(len(iss["dram"]), bool)
    outside[lo:hi] = False
    bad = np.flatnonzero((rtl["dram"] != iss["dram"]) & outside)
    if len(bad):
        a = int(bad[0])
        problems.append(("outside A's segment",
                         f"{len(bad)} DRAM bytes outside A's segment differ from the golden "
                         f"model's, first at 0x{a:x} ({_where(bench, case, a)}): RTL "
                         f"0x{rtl['dram'][a]:02x}, golden 0x{iss['dram'][a]:02x}"))
    pcs = []
    golden = _status(case, rtl, iss, iss_alt, solo, problems, notes)
    if golden is not None:
        pcs = _segment(case, rtl, iss, iss_alt, golden, problems, notes)
    kind = MATCH
    if problems:
        kind = "divergence"
        for k in known:
            if k.matches(bench, case, rtl, iss, problems):
                kind = k.name
                break
    return Verdict(case=case, kind=kind, problems=problems, notes=notes, rtl=rtl, iss=iss,
                   pcs=pcs or [])


def _status(case, rtl, iss, iss_alt, solo, problems, notes):
    """Check A's readings; return the golden run they match (None: they match neither)."""
    if rtl["a"] == iss["a"]:
        return iss
    if rtl["a"] == iss_alt["a"]:
        notes.append(("schedule-dependent", f"A {describe(rtl['a'])} as under compute-first "
                                            f"(load-first: {describe(iss['a'])})"))
        return iss_alt
    other = _other_core(case, rtl, iss, solo)
    if other:
        notes.append(("schedule-dependent", other))
        return None
    problems.append(("A's status", f"A: RTL {describe(rtl['a'])}; golden model "
                                   f"{describe(iss['a'])}"))
    return None


def _fault(reading):
    s = isa.unpack_fields(_STATUS, reading["STATUS"])
    return (s["fault_core"], reading["FAULT_PC"]) if s["faulted"] else None


def _other_core(case, rtl, iss, solo):
    """Why the RTL's fault of another core than the golden model's, in the same phase, is
    one the hardware may see first (None when it is not)."""
    cores = [c for c in range(case.core_mask.bit_length()) if case.core_mask >> c & 1]
    got, want = _fault(rtl["a"]), _fault(iss["a"])
    if solo is None or len(cores) < 2 or not got or not want or got[0] == want[0] \
            or got[0] not in cores or want[0] not in cores:
        return None
    k, j = cores.index(got[0]), cores.index(want[0])
    alone = solo(k)
    if alone is None or alone["a"] != rtl["a"]:
        return None
    phase = places.phase_of(case, k, got[1])
    if phase is None or phase != places.phase_of(case, j, want[1]):
        return None
    return (f"A {describe(rtl['a'])}: core {got[0]} faults so when alone, in the phase of "
            f"the golden model's fault on core {want[0]}")


def _segment(case, rtl, iss, iss_alt, golden, problems, notes):
    """A's segment: equal to the golden model's when A ends done (unless the schedules
    disagree); after a fault of one core, the bytes that differ are explained by SAVEs of
    the faulting frame before the faulting word (allowed) or after it (not allowed by the
    ISA's wording, see fuzz_known). Returns the addresses of such later SAVEs."""
    seg = slice(case.seg_base, case.seg_base + case.seg_size)
    mine, want = rtl["dram"][seg], golden["dram"][seg]
    differs = mine != want
    if not differs.any():
        return
    other = iss_alt if golden is iss else iss
    if _done(rtl["a"]):
        if not np.array_equal(want, other["dram"][seg]):
            if not np.array_equal(mine, other["dram"][seg]):
                notes.append(("racy", "the two schedules leave different segments "
                                      "(not compared)"))
            return
        first = int(np.flatnonzero(differs)[0])
        problems.append(("A's segment", f"{int(differs.sum())} bytes of A's segment differ "
                                        f"from the golden model's, first at +0x{first:x}"))
        return
    if bin(case.core_mask).count("1") != 1:
        notes.append(("segment after a fault", f"{int(differs.sum())} bytes of A's "
                                                f"segment differ; several cores, not compared"))
        return
    pc = rtl["a"]["FAULT_PC"]
    # A fault at a FRAME / SYNC / END word (or outside frames) has no frame of its own:
    # everything before it has run, on both.
    first, end = places.frame_around(case, pc) or (pc, pc)
    before = places.save_bytes(case, first, min(pc, end))
    after = places.save_bytes(case, pc + 1, end)
    if ((want != other["dram"][seg]) & ~(before | after)).any():
        notes.append(("racy", "the two schedules leave different segments before the "
                              "faulting frame (not compared)"))
    elif not (differs & ~before).any():
        notes.append(("segment after a fault", f"{int(differs.sum())} bytes of A's "
                                                f"segment differ, written by SAVEs before the "
                                                f"faulting word (allowed)"))
    elif not (differs & ~(before | after)).any():
        saves = [p for p in range(pc + 1, end)
                 if places.save_bytes(case, p, p + 1)[differs & ~before].any()]
        problems.append(("later SAVE ran", f"{int((differs & ~before).sum())} bytes of A's "
                                           f"segment written by SAVE(s) after the faulting "
                                           f"word, at {saves}"))
        return saves
    else:
        first = int(np.flatnonzero(differs & ~(before | after))[0])
        problems.append(("A's segment after the fault",
                         f"{int(differs.sum())} bytes differ, first at +0x{first:x}, "
                         f"not written by any SAVE of the faulting frame"))


def show(case, pc):
    """One disassembled word of A's window, with what the mnemonic leaves out (reserved
    bits, the raw bits of an undefined word, a word past the region)."""
    word = case.word_at(pc)
    text = format_insn(word)
    op = fw.opcode(word)
    if op in isa.BODY_OF and word & isa.reserved_mask(op):
        text += f"  (reserved bits 0x{word & isa.reserved_mask(op):x})"
    elif op in (None, isa.Opcode.INVALID) and word:
        text += f"  (word 0x{word:032x})"
    if not case.prog_base <= pc < case.prog_base + case.prog_size:
        text += "  (outside the region)"
    return text


def context(case, pcs, before=6, limit=14):
    """Disassembly lines around the words at ``pcs`` (instruction-memory addresses of A's
    window), from the FRAME that opens the first one, at most ``limit`` lines."""
    pcs = sorted({pc for pc in pcs if pc is not None})
    if not pcs:
        return []
    first = pcs[0]
    start = first
    while start > max(case.prog_base, first - before) and \
            fw.opcode(case.word_at(start)) != isa.Opcode.FRAME:
        start -= 1
    lines = []
    for pc in range(start, min(pcs[-1], start + limit - 1) + 1):
        mark = ">>" if pc in pcs else "  "
        lines.append(f"{mark} {pc:6d} (+{pc - case.prog_base}): {show(case, pc)}")
    if pcs[-1] > start + limit - 1:
        lines.append(f">> {pcs[-1]:6d} (+{pcs[-1] - case.prog_base}): {show(case, pcs[-1])}")
    return lines


def _report(v):
    case = v.case
    lines = [f"{case.name}: {v.kind}"]
    lines += [f"  {what}: {text}" for what, text in v.problems]
    lines += [f"  {kind}: {text}" for kind, text in v.notes]
    changes = "; ".join(case.notes) or "none"
    lines.append(f"  program: {len(case.words)} words at {case.prog_base} (PROG_SIZE "
                 f"{case.prog_size}), cores 0x{case.core_mask:x}, segment 0x{case.seg_base:x}"
                 f"+0x{case.seg_size:x}, RUNS {case.runs}; changes: {changes}")
    if v.iss.get("reason"):
        lines.append(f"  golden model's reason: {v.iss['reason']}")
    pcs = [r["FAULT_PC"] for r in (v.rtl["a"], v.iss["a"])
           if isa.unpack_fields(_STATUS, r["STATUS"])["faulted"]]
    lines += ["  " + line for line in context(case, pcs + v.pcs)]
    return lines


def summary(verdicts, seed=None, facts=None, known=()):
    """The fuzz report: counts per outcome (every name of ``known`` listed, hit or not),
    then every mismatch with its disassembly."""
    counts = collections.Counter(v.kind for v in verdicts)
    kinds = collections.Counter(v.case.kind.split(" of ")[0] for v in verdicts)
    noted = collections.Counter(kind for v in verdicts if v.kind == MATCH
                                for kind in {k for k, _ in v.notes})
    head = f"fuzz{'' if seed is None else f' seed {seed}'}: {len(verdicts)} programs ran " \
           f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}); " \
           f"{counts[MATCH]} matched"
    if noted:
        head += f" (of which {', '.join(f'{n} {k}' for k, n in sorted(noted.items()))})"
    lines = [head]
    for kind in sorted(set(known) | set(counts) - {MATCH, "divergence"}):
        lines.append(f"  known divergence {kind}: {counts[kind]}")
    lines.append(f"  new divergences: {counts['divergence']}")
    if facts:
        lines.append(f"  RTL: {facts['sim_cycles']} cycles in {facts['wall_seconds']:.1f} s "
                     f"({facts['wall_seconds'] / max(1, len(verdicts)):.2f} s per program), "
                     f"launch {facts['launch_s']:.1f} s, build {facts['build_s']:.1f} s")
    for v in verdicts:
        if v.kind != MATCH:
            lines += _report(v)
    return "\n".join(lines)
