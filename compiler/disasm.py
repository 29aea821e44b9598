"""Disassembler: instruction words -> one readable line each."""

from vdla import isa

from .program import ints_from_words

__all__ = ["format_insn", "disassemble"]

_FLAG_NAMES = ("pop_prev", "pop_next", "push_prev", "push_next")


def format_insn(word):
    """One instruction as text, e.g. ``CONV  [pop_prev] ibuf_addr=0 ... acc_final=1``."""
    head = isa.unpack_fields(isa.FIELDS["head"], word)
    try:
        opcode = isa.Opcode(head["opcode"])
    except ValueError:
        return f"??? opcode={head['opcode']} word=0x{word:032x}"
    flags = [f for f in _FLAG_NAMES if head[f"deps.{f}"]]
    text = f"{opcode.name:<6}"
    if flags:
        text += " [" + ",".join(flags) + "]"
    view = isa.BODY_OF.get(opcode)
    if view:
        fields = isa.unpack_fields(isa.FIELDS[view], word)
        parts = []
        for name, value in fields.items():
            if name == "buf":
                value = isa.Buffer(value).name
            elif name == "func":
                value = isa.MiscFunc(value).name
            elif name == "dram_addr":
                value = f"0x{value:x}"
            parts.append(f"{name}={value}")
        text += " " + " ".join(parts)
    return text


def disassemble(program, frames=None):
    """Yield the lines of a program listing, frame by frame (``frames``: indices to show)."""
    words = ints_from_words(program.code)
    selected = range(len(program.frames)) if frames is None else frames
    for index in selected:
        row = program.frames[index]
        layer = program.layers[int(row["layer"])]
        yield (f"; frame {index}  layer {int(row['layer'])} {layer.name} ({layer.kind})  "
               f"{int(row['count'])} words  ~{int(row['cycles'])} cycles")
        first = int(row["first"])
        for offset in range(int(row["count"])):
            yield f"{first + offset:7d}  {format_insn(words[first + offset])}"
