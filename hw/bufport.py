"""DMA-side buffer ports and buffer geometry in 8-byte words.

The DMA sees every buffer as an array of 8-byte words: word ``entry * words_per_entry + k``
is bytes ``8k .. 8k+7`` of that entry (little-endian, as the golden model's flat byte arrays).
LOAD writes IBUF / WBUF / PBUF through :class:`BufferWriteSignature`; SAVE reads OBUF through
:class:`BufferReadSignature`. Both ports are in the master's (the DMA's) view.
"""

from amaranth.hdl import unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from vdla import isa

__all__ = ["ADDR_BITS", "WORD_BITS", "BufferWriteSignature", "BufferReadSignature",
           "words_per_entry", "buffer_words"]

#: Width of a buffer word address (enough for 1 Mi words = 8 MiB per buffer).
ADDR_BITS = 20
WORD_BITS = 8 * isa.WORD_BYTES


class BufferWriteSignature(wiring.Signature):
    """LOAD -> buffers: one word per cycle, no back-pressure.

    Members: ``buf`` (:class:`isa.Buffer`), ``addr`` (word), ``data`` (64 bits), ``en``.
    """

    def __init__(self):
        super().__init__({
            "buf": Out(isa.Buffer),
            "addr": Out(unsigned(ADDR_BITS)),
            "data": Out(unsigned(WORD_BITS)),
            "en": Out(1),
        })

    def __eq__(self, other):
        return type(other) is type(self)

    def __hash__(self):
        return hash(type(self))

    def __repr__(self):
        return "BufferWriteSignature()"


class BufferReadSignature(wiring.Signature):
    """SAVE <- OBUF: ``data`` holds OBUF word ``addr`` the cycle after ``en``."""

    def __init__(self):
        super().__init__({
            "addr": Out(unsigned(ADDR_BITS)),
            "en": Out(1),
            "data": In(unsigned(WORD_BITS)),
        })

    def __eq__(self, other):
        return type(other) is type(self)

    def __hash__(self):
        return hash(type(self))

    def __repr__(self):
        return "BufferReadSignature()"


def words_per_entry(config, buf):
    """8-byte words in one entry of buffer ``buf`` (an :class:`isa.Buffer`)."""
    entry_bytes = {
        isa.Buffer.IBUF: config.cb,
        isa.Buffer.WBUF: config.cb * config.cb,
        isa.Buffer.PBUF: isa.POST_BYTES,
        isa.Buffer.OBUF: config.cb,
    }[isa.Buffer(buf)]
    return entry_bytes // isa.WORD_BYTES


def buffer_words(config, buf):
    """Size of buffer ``buf`` in 8-byte words."""
    depth = {
        isa.Buffer.IBUF: config.ibuf_depth,
        isa.Buffer.WBUF: config.wbuf_depth,
        isa.Buffer.PBUF: config.pbuf_depth,
        isa.Buffer.OBUF: config.obuf_depth,
    }[isa.Buffer(buf)]
    words = depth * words_per_entry(config, buf)
    if words > 1 << ADDR_BITS:
        raise ValueError(f"{config.name}: {isa.Buffer(buf).name} holds {words} words, more than "
                         f"the {ADDR_BITS}-bit DMA word address reaches")
    return words
