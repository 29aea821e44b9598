"""Instruction decoding and the checks the second-level dispatch makes on each word.

Decoding goes through :data:`vdla.isa.FIELDS` / :func:`vdla.isa.unpack_fields`, so the model
follows the one ISA definition; decoded words are cached by value, because a program runs the
same few thousand words for every inference.
"""

import dataclasses

from vdla import isa
from vdla.regs import Fault

__all__ = ["TenantFault", "Decoded", "Decoder", "FLAG_NAMES"]

FLAG_NAMES = ("pop_prev", "pop_next", "push_prev", "push_next")
_OPCODES = {op.value: op for op in isa.Opcode if op != isa.Opcode.INVALID}
#: Per opcode, the bits that must be zero (isa.reserved_mask).
_RESERVED = {op: isa.reserved_mask(op) for op in isa.BODY_OF}

#: Dependency flags each unit may carry: LOAD has no upstream neighbour, SAVE no downstream
#: one; SETUP and control words carry none.
_LEGAL_FLAGS = {
    isa.Opcode.LOAD: {"pop_next", "push_next"},
    isa.Opcode.SAVE: {"pop_prev", "push_prev"},
    isa.Opcode.CONV: set(FLAG_NAMES),
    isa.Opcode.MISC: set(FLAG_NAMES),
}


class TenantFault(Exception):
    """Raised inside the model when a tenant faults; the machine records it and stops the
    tenant. ``pc`` is the instruction-memory word, ``core`` the physical core (or None)."""

    def __init__(self, code, reason, pc=None, core=None):
        super().__init__(f"{Fault(code).name} at word {pc}: {reason}")
        self.code, self.reason, self.pc, self.core = Fault(code), reason, pc, core


@dataclasses.dataclass(frozen=True)
class Decoded:
    """One decoded word: ``opcode`` (an :class:`isa.Opcode`, or None when undefined), its
    dependency flags as a dict, its body fields, and why it is illegal regardless of context
    (None when it is not)."""
    opcode: object
    flags: dict
    fields: dict
    illegal: str = None

    @property
    def unit(self):
        return isa.UNIT_OF[self.opcode]


def _static_check(opcode, flags, f):
    """Reason a word is ILLEGAL on its own (field values and flags), or None."""
    bad = [name for name, on in flags.items() if on and name not in _LEGAL_FLAGS.get(opcode, ())]
    if bad:
        return f"{opcode.name} may not carry dependency flag(s) {', '.join(bad)}"
    if opcode in (isa.Opcode.LOAD, isa.Opcode.SAVE):
        if opcode == isa.Opcode.LOAD and f["buf"] == isa.Buffer.OBUF.value:
            return "LOAD into OBUF"
        if opcode == isa.Opcode.SAVE and f["buf"] != isa.Buffer.OBUF.value:
            return f"SAVE from {isa.Buffer(f['buf']).name} (only OBUF is saved)"
        for name in ("length", "rows", "planes"):
            if f[name] == 0:
                return f"{opcode.name} with {name}=0"
        if f["dram_addr"] % isa.WORD_BYTES:
            return f"{opcode.name} dram_addr 0x{f['dram_addr']:x} not a multiple of {isa.WORD_BYTES}"
    elif opcode == isa.Opcode.SETUP:
        for name in ("kh", "kw", "stride", "n_icg"):
            if f[name] == 0:
                return f"SETUP with {name}=0"
        if f["dw"] and f["n_icg"] != 1:
            return f"depthwise SETUP with n_icg={f['n_icg']} (must be 1)"
    elif opcode == isa.Opcode.CONV:
        for name in ("out_h", "out_w", "n_ob"):
            if f[name] == 0:
                return f"CONV with {name}=0"
    elif opcode == isa.Opcode.MISC:
        if f["func"] not in {m.value for m in isa.MiscFunc}:
            return f"MISC with undefined func {f['func']}"
        for name in ("out_h", "out_w", "n_cb"):
            if f[name] == 0:
                return f"MISC with {name}=0"
    return None


class Decoder:
    """Decodes 128-bit words (ints) to :class:`Decoded`, caching by value."""

    def __init__(self):
        self._cache = {}

    def __call__(self, word):
        hit = self._cache.get(word)
        if hit is None:
            hit = self._cache[word] = self._decode(word)
        return hit

    @staticmethod
    def _decode(word):
        head = isa.unpack_fields(isa.FIELDS["head"], word)
        flags = {name: bool(head[f"deps.{name}"]) for name in FLAG_NAMES}
        opcode = _OPCODES.get(head["opcode"])
        if opcode is None:
            return Decoded(None, flags, {}, f"undefined opcode {head['opcode']}")
        view = isa.BODY_OF[opcode]
        fields = isa.unpack_fields(isa.FIELDS[view], word) if view else {}
        if word & _RESERVED[opcode]:
            return Decoded(opcode, flags, fields, f"{opcode.name} with reserved bits set")
        return Decoded(opcode, flags, fields, _static_check(opcode, flags, fields))
