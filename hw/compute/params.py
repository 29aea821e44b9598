"""Post-processing parameters: PBUF entries cached per output block, two blocks deep.

A result beat needs ``OCP`` PBUF entries at once (``pbuf_addr + blk*CB + lane``), but PBUF
gives one entry per cycle. The parameters depend only on the block, so the cache loads the
``CB`` entries of block ``k`` into bank ``k % 2`` while block ``k - 1`` is being computed and
releases a bank when the last result of its block has taken its parameters. Results wait
(back-pressure) only when a block is shorter than the ``CB + 1`` cycles its parameters take
to load.

Each output lane keeps its entries of both banks in a small memory read asynchronously (LUT
RAM on ECP5): as registers, the ``2 * CB`` entries and the multiplexers choosing among them
took 2.1k flip-flops and 1.1k LUT4s of an 8 x 8 core.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from vdla import isa

from ..buffers import compute_port_signatures
from .layouts import Tag
from .postproc import PostProcess

__all__ = ["ParamCache"]


def _stored_layout():
    """What a bank keeps of a PBUF entry: every field but ``reserved``."""
    layout = data.Layout.cast(isa.PostParams)
    return data.StructLayout({name: field.shape for name, field in layout
                              if name != "reserved"})


_STORED = _stored_layout()


def _store(entry):
    """The kept fields of a PBUF entry (a view of :data:`_STORED`'s bits)."""
    return Cat(*[Value.cast(getattr(entry, name)) for name, _ in _STORED])


def _load(bits):
    """A full PostParams from kept fields (``reserved`` zero)."""
    stored = data.View(_STORED, bits)
    return Cat(*[Value.cast(getattr(stored, name)) if name != "reserved"
                 else Const(0, field.shape) for name, field in data.Layout.cast(isa.PostParams)])


class ParamCache(wiring.Component):
    """Attaches each result beat's ``OCP`` PostParams and hands it to post-processing.

    Members
    -------
    start : ``In(1)``
        Begin a job of ``n_blk`` blocks whose parameters start at PBUF entry ``pbuf_addr``;
        ``load`` says whether it is post-processed at all.
    pbuf : ``In(ReadPort.Signature(...))``
        PBUF read port (data the cycle after ``en``).
    sink : ``In(stream.Signature(...))``
        ``{add, a: OCP x int32, b: OCP x int8, tag: Tag}`` result beats, blocks in order.
    source : ``Out(stream.Signature(PostProcess.sink_layout(OCP)))``
    """

    def __init__(self, config):
        self._cb, self._ocp = config.cb, config.ocp
        self._passes = config.cb // config.ocp
        super().__init__({
            "start": In(1),
            "load": In(1),
            "n_blk": In(10),
            "pbuf_addr": In(12),
            "pbuf": In(compute_port_signatures(config)["pbuf_read"]),
            "sink": In(stream.Signature(data.StructLayout({
                "add": 1,
                "a": data.ArrayLayout(signed(32), config.ocp),
                "b": data.ArrayLayout(signed(8), config.ocp),
                "tag": Tag,
            }))),
            "source": Out(stream.Signature(PostProcess.sink_layout(config.ocp))),
        })

    def elaborate(self, platform):
        m = Module()
        cb, ocp, passes = self._cb, self._ocp, self._passes
        # Lane ``o``'s memory: entry ``k * passes + q`` holds bank ``k``'s PBUF entry
        # ``q * OCP + o``.
        banks = [Memory(shape=_STORED, depth=2 * passes, init=[]) for _ in range(ocp)]
        for lane, bank in enumerate(banks):
            m.submodules[f"bank_lane{lane}"] = bank
        ready = [Signal(name=f"bank{k}_ready") for k in range(2)]
        cur = Signal()          # bank of the block whose results come next

        # Loader: block ``blk`` goes to bank ``blk % 2`` once that bank is released.
        active = Signal()
        blk = Signal(10)
        idx = Signal(range(cb))
        addr = Signal(unsigned(16))
        bank_free = ~Cat(*ready).bit_select(blk[0], 1)
        read = Signal()
        m.d.comb += [
            read.eq(active & (blk != self.n_blk) & bank_free),
            self.pbuf.addr.eq(addr), self.pbuf.en.eq(read),
        ]
        with m.If(read):
            m.d.sync += [addr.eq(addr + 1), idx.eq(idx + 1)]
            with m.If(idx == cb - 1):
                m.d.sync += [idx.eq(0), blk.eq(blk + 1)]

        # The entry being read, as a lane and a pass (idx = pass * OCP + lane).
        lane_i = Signal(range(ocp))
        pass_i = Signal(range(passes))
        with m.If(read):
            m.d.sync += lane_i.eq(lane_i + 1)
            with m.If(lane_i == ocp - 1):
                m.d.sync += [lane_i.eq(0), pass_i.eq(pass_i + 1)]
                with m.If(pass_i == passes - 1):
                    m.d.sync += pass_i.eq(0)

        got = Signal()
        got_idx = Signal(range(cb))
        got_lane = Signal(range(ocp))
        got_addr = Signal(range(2 * passes))
        got_bank = Signal()
        m.d.sync += [got.eq(read), got_idx.eq(idx), got_bank.eq(blk[0]), got_lane.eq(lane_i),
                     got_addr.eq(Mux(blk[0], passes, 0) + pass_i)]
        entry = Signal(isa.PostParams)
        m.d.comb += entry.eq(self.pbuf.data)
        for lane, bank in enumerate(banks):
            port = bank.write_port()
            m.d.comb += [port.addr.eq(got_addr), port.en.eq(got & (got_lane == lane)),
                         port.data.eq(_store(entry))]
        with m.If(got):
            for k in range(2):
                with m.If((got_bank == k) & (got_idx == cb - 1)):
                    m.d.sync += ready[k].eq(1)

        # Results pass once their block's bank is loaded; a block's last result releases it.
        sink, source = self.sink, self.source
        cur_ready = Cat(*ready).bit_select(cur, 1)
        m.d.comb += [
            source.valid.eq(sink.valid & cur_ready),
            sink.ready.eq(source.ready & cur_ready),
            source.payload.add.eq(sink.payload.add),
            source.payload.a.eq(sink.payload.a),
            source.payload.b.eq(sink.payload.b),
            source.payload.tag.eq(sink.payload.tag),
        ]
        with m.If(sink.valid & sink.ready & sink.payload.tag.blk_last):
            m.d.sync += cur.eq(~cur)
            for k in range(2):
                with m.If(cur == k):
                    m.d.sync += ready[k].eq(0)

        p_bits = (passes - 1).bit_length()
        select = Signal(range(2 * passes))
        m.d.comb += select.eq(Mux(cur, passes, 0) + sink.payload.tag.p[:p_bits])
        for lane, bank in enumerate(banks):
            port = bank.read_port(domain="comb")
            m.d.comb += [port.addr.eq(select),
                         source.payload.params[lane].eq(_load(port.data))]

        with m.If(self.start):
            m.d.sync += [active.eq(self.load), blk.eq(0), idx.eq(0), addr.eq(self.pbuf_addr),
                         lane_i.eq(0), pass_i.eq(0),
                         cur.eq(0), ready[0].eq(0), ready[1].eq(0)]
        return m
