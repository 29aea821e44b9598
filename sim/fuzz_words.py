"""Bit-level helpers on 128-bit instruction words (ints) for the program fuzzer.

The generators corrupt words on purpose (reserved bits, undefined opcodes, out-of-range
fields), which :func:`vdla.isa.encode` refuses, so fields are read and written here through
:data:`vdla.isa.FIELDS` directly.
"""

from vdla import isa

__all__ = ["MASK128", "OPCODE_VALUES", "UNDEFINED_OPCODES", "opcode", "view_of", "get",
           "put", "with_flag", "flags_of", "header", "region_words", "body_fields"]

MASK128 = (1 << isa.INSN_BITS) - 1
OPCODE_VALUES = {op.value: op for op in isa.Opcode}
#: Encodings of the 4-bit opcode field that name no instruction.
UNDEFINED_OPCODES = [v for v in range(16) if v not in OPCODE_VALUES or v == 0]
_HEAD = isa.FIELDS["head"]


def opcode(word):
    """The :class:`isa.Opcode` of ``word``, or None for an undefined encoding."""
    return OPCODE_VALUES.get(word & 0xF)


def view_of(word):
    """Name of the body view of ``word`` (``"dma"``, ``"conv"``...), or None."""
    op = opcode(word)
    return isa.BODY_OF.get(op) if op not in (None, isa.Opcode.INVALID) else None


def body_fields(word):
    """``{field: (offset, width, signed)}`` of ``word``'s body view ({} for none)."""
    view = view_of(word)
    return isa.FIELDS[view] if view else {}


def get(word, view, name):
    off, width, signed = isa.FIELDS[view][name]
    value = (word >> off) & ((1 << width) - 1)
    return value - (1 << width) if signed and value >> (width - 1) else value


def put(word, view, name, value):
    """``word`` with field ``name`` of ``view`` set to ``value`` (wrapped to its width)."""
    off, width, _ = isa.FIELDS[view][name]
    mask = ((1 << width) - 1) << off
    return (word & ~mask) | ((int(value) << off) & mask)


def flags_of(word):
    return {name: (word >> _HEAD[f"deps.{name}"][0]) & 1
            for name in ("pop_prev", "pop_next", "push_prev", "push_next")}


def with_flag(word, name, on=True):
    bit = 1 << _HEAD[f"deps.{name}"][0]
    return (word | bit) if on else (word & ~bit)


def header(vcore, count, offset):
    return isa.encode(isa.Opcode.STREAM, vcore=vcore, count=count, offset=offset)


def region_words(streams):
    """STREAM headers (one per stream) followed by the streams back to back."""
    words, offset = [], len(streams)
    for k, s in enumerate(streams):
        words.append(header(k, len(streams), offset))
        offset += len(s)
    for s in streams:
        words += s
    return words
