"""MISC LUT: each int8 lane of a result looked up in a 256-byte table held in PBUF.

The table takes :data:`vdla.isa.LUT_ENTRIES` PBUF entries from ``pbuf_addr``; ``table[i]`` is
byte ``i % 16`` of entry ``i // 16``, so a lookup is one read of the existing PBUF port and
a byte select of its data. One lane per cycle (``CB`` cycles per IBUF entry): a wider lookup
would need a table copy per lane, and the FPGA build has no LUTs to spare for it.

Stages, none of which stalls (the result queue in front holds the entries; its credits keep
the sequencer from overrunning it)::

    L0  lane k of the queue's head entry (popped with its last lane)
    L1  PBUF read: entry pbuf_addr + (x + 128) // 16
    L2  the 8-byte half of the read data holding byte (x + 128) % 16
    L3  that byte
    L4  OBUF write of lane k alone

The byte is picked in two registered steps: right behind the block RAM's output there is room
for one level of logic only, and on ECP5 the two steps (a 2:1 then an 8:1 multiplexer, 33 more
flip-flops) took 56 fewer LUT4s than one 16:1 multiplexer.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from vdla import isa

from ..buffers import compute_port_signatures
from .layouts import Tag

__all__ = ["LutLookup"]


class LutLookup(wiring.Component):
    """Table lookup of ``CB``-lane entries, one lane per cycle.

    Members
    -------
    pbuf_addr : ``In(12)``
        First PBUF entry of the table; fixed while a job runs.
    sink : ``In(stream.Signature({x: CB x int8, tag: Tag}))``
        An entry of int8 lanes and its destination; taken with its last lane's lookup.
    pbuf : ``In(ReadPort.Signature(...))``
        PBUF read port (data the cycle after ``en``).
    obuf : ``In(WritePort.Signature(...))``
        OBUF write port: one lane per write.
    final : ``Out(1)``
        The write on ``obuf`` this cycle is the instruction's last.
    """

    #: Cycles from taking an entry's first lane to writing it (L0 to L4).
    latency = 4

    def __init__(self, config):
        self._cb = config.cb
        ports = compute_port_signatures(config)
        super().__init__({
            "pbuf_addr": In(isa.FIELDS["misc"]["pbuf_addr"][1]),
            "sink": In(stream.Signature(data.StructLayout({
                "x": data.ArrayLayout(signed(8), config.cb), "tag": Tag}))),
            "pbuf": In(ports["pbuf_read"]),
            "obuf": In(ports["obuf_write"]),
            "final": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cb = self._cb
        stage = data.StructLayout({"lane": range(cb),
                                   "addr": data.Layout.cast(Tag)["addr"].shape, "final": 1})
        # Only the valid bits are reset: a synchronous reset on the data registers costs a
        # LUT each on ECP5.
        v1, v2, v3, v4 = (Signal(name=f"l{k}_valid") for k in (1, 2, 3, 4))
        l1, l2, l3, l4 = (Signal(stage, name=f"l{k}", reset_less=True) for k in (1, 2, 3, 4))
        l1_x = Signal(8, reset_less=True)
        l2_sel = Signal(4, reset_less=True)
        l3_half = Signal(64, reset_less=True)
        l3_sel = Signal(3, reset_less=True)
        l4_y = Signal(8, reset_less=True)

        # L0: lane k of the head entry.
        lane = Signal(range(cb))
        head, last = self.sink.payload, lane == cb - 1
        m.d.comb += self.sink.ready.eq(self.sink.valid & last)
        with m.If(self.sink.valid):
            m.d.sync += lane.eq(Mux(last, 0, lane + 1))
        m.d.sync += [
            v1.eq(self.sink.valid), l1.lane.eq(lane), l1.addr.eq(head.tag.addr),
            l1.final.eq(head.tag.final & last), l1_x.eq(head.x[lane]),
        ]

        # L1: x + 128 is x with its sign bit flipped; its high nibble picks the entry.
        index = Cat(l1_x[:7], ~l1_x[7])
        m.d.comb += [self.pbuf.addr.eq(self.pbuf_addr + index[4:]), self.pbuf.en.eq(v1)]
        m.d.sync += [v2.eq(v1), l2.eq(l1), l2_sel.eq(index[:4])]

        # L2: the half of the entry read, registered straight behind the block RAM's output.
        raw = self.pbuf.data.as_value()
        m.d.sync += [v3.eq(v2), l3.eq(l2), l3_half.eq(raw.word_select(l2_sel[3], 64)),
                     l3_sel.eq(l2_sel[:3])]

        # L3: the byte.
        m.d.sync += [v4.eq(v3), l4.eq(l3), l4_y.eq(l3_half.word_select(l3_sel, 8))]

        # L4: one lane of OBUF.
        m.d.comb += [
            self.obuf.addr.eq(l4.addr),
            self.obuf.data.eq(Cat(*[l4_y] * cb)),
            self.obuf.en.eq(Cat(*[v4 & (l4.lane == k) for k in range(cb)])),
            self.final.eq(v4 & l4.final),
        ]
        return m
