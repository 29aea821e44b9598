"""The MISC lane datapath: window maximum / sum per lane (pooling) and operand pairing (ADD).

All ``CB`` lanes of one IBUF entry per cycle. A window is a run of beats from ``first`` to
``last``: MAXPOOL keeps the running maximum, AVGPOOL the running int32 sum (at most 255 x 255
int8 values, so it never wraps). ADD runs windows of two beats, A then B, and emits the pair;
LUT windows of one beat (the entry, looked up after the result queue by :mod:`.lut`).
Results of ``CB`` lanes are then cut into ``CB/OCP`` beats of ``OCP`` lanes, the width of the
post-processing shared with CONV (:class:`LaneSplitter`).
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from vdla import isa

from .layouts import Tag

__all__ = ["MiscLanes", "LaneSplitter", "lanes_layout"]


def lanes_layout(lanes):
    """A MISC result of ``lanes`` lanes: ``a`` (window result, or ADD's A) and ``b`` (ADD's B)."""
    return data.StructLayout({
        "a": data.ArrayLayout(signed(32), lanes),
        "b": data.ArrayLayout(signed(8), lanes),
        "tag": Tag,
    })


class MiscLanes(wiring.Component):
    """Per-lane window reduction.

    Members
    -------
    func : ``In(isa.MiscFunc)``
        Fixed while an instruction runs.
    sink : ``In(stream.Signature(..., always_ready=True))``
        ``{x: CB x int8 (pad value already substituted), first, last, tag: Tag}``.
    source : ``Out(stream.Signature(lanes_layout(CB), always_ready=True))``
        One result per ``last`` beat, :attr:`latency` cycles after it (never held back, like
        the PE array's).
    """

    #: Register stages from the sink to the source.
    latency = 2

    def __init__(self, config):
        self._cb = config.cb
        super().__init__({
            "func": In(isa.MiscFunc),
            "sink": In(stream.Signature(data.StructLayout({
                "x": data.ArrayLayout(signed(8), config.cb), "first": 1, "last": 1,
                "tag": Tag}), always_ready=True)),
            "source": Out(stream.Signature(lanes_layout(config.cb), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        # The beat is registered first: the pad substitution in front of it and the window
        # logic behind do not fit one cycle together at 100 MHz on ECP5.
        valid, out = Signal(), self.source.payload
        beat = Signal.like(self.sink.payload, reset_less=True)
        m.d.sync += [valid.eq(self.sink.valid), beat.eq(self.sink.payload)]

        # A window sum of at most 255 x 255 int8 values fits 24 bits; under MAXPOOL the
        # accumulator only ever holds int8 values, so the maximum compares 8 bits.
        acc = Signal(data.ArrayLayout(signed(24), self._cb), reset_less=True)
        is_max = self.func == isa.MiscFunc.MAXPOOL
        is_add = self.func == isa.MiscFunc.ADD
        m.d.sync += self.source.valid.eq(valid & beat.last)
        with m.If(valid):
            m.d.sync += out.tag.eq(beat.tag)
            for lane in range(self._cb):
                x, a = beat.x[lane], acc[lane]
                step = Mux(is_max, Mux(x > a[:8].as_signed(), x, a), a + x)
                value = Mux(beat.first, x, step)
                m.d.sync += [acc[lane].eq(value), out.b[lane].eq(x),
                             out.a[lane].eq(Mux(is_add, a, value))]
        return m


class LaneSplitter(wiring.Component):
    """Cuts ``CB``-lane results into ``CB/OCP`` beats of ``OCP`` lanes (pass ``p`` carries
    lanes ``p*OCP ...``); a block's end and the instruction's end go with the last pass.

    Members
    -------
    sink : ``In(stream.Signature(lanes_layout(CB)))``
    source : ``Out(stream.Signature(lanes_layout(OCP)))``
    """

    def __init__(self, config):
        self._cb, self._ocp = config.cb, config.ocp
        super().__init__({
            "sink": In(stream.Signature(lanes_layout(config.cb))),
            "source": Out(stream.Signature(lanes_layout(config.ocp))),
        })

    def elaborate(self, platform):
        m = Module()
        cb, ocp = self._cb, self._ocp
        passes = cb // ocp
        held = Signal(lanes_layout(cb), reset_less=True)
        p = Signal(range(passes))
        last_pass = p == passes - 1
        src, out = self.source, self.source.payload
        m.d.comb += self.sink.ready.eq(~src.valid | (src.ready & last_pass))

        with m.If(src.valid & src.ready):
            m.d.sync += p.eq(Mux(last_pass, 0, p + 1))
            with m.If(last_pass):
                m.d.sync += src.valid.eq(0)
        # ``held`` loads whenever the splitter could take a beat, valid or not (it is read only
        # while ``src.valid``): its 270 clock enables then depend on registers alone, not on
        # the result queue's level behind ``sink.valid`` (that enable's net, placed amid the
        # flip-flops it drives, was an 8x4 core's critical path: 12 ns of routing).
        with m.If(self.sink.ready):
            m.d.sync += held.eq(self.sink.payload)
        with m.If(self.sink.valid & self.sink.ready):
            m.d.sync += src.valid.eq(1)

        for q in range(passes):
            with m.If(p == q):
                for lane in range(ocp):
                    m.d.comb += [out.a[lane].eq(held.a[q * ocp + lane]),
                                 out.b[lane].eq(held.b[q * ocp + lane])]
        m.d.comb += [
            out.tag.addr.eq(held.tag.addr),
            out.tag.p.eq(p),
            out.tag.blk_last.eq(held.tag.blk_last & last_pass),
            out.tag.final.eq(held.tag.final & last_pass),
        ]
        return m
