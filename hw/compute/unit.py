"""The COMPUTE unit: SETUP state, CONV on the PE array, MISC, post-processing.

Dataflow of an accepted CONV / MISC (one beat per cycle, in order, no instruction overlap)::

    Sequencer (A: counters, B: addresses) -> buffers (C: read, D: data, pad substitution)
        CONV -> PEArray -> ABUF                                                (partial sums)
                        -> result queue -> ParamCache -> PostProcess -> OBUF   (acc_final)
        MISC -> MiscLanes -> result queue -> LaneSplitter -> ParamCache -> PostProcess -> OBUF
                                          -> LutLookup (PBUF table) -> OBUF     (MISC LUT)

Only the sequencer can wait (``adv``, a flip-flop): it issues a beat while the result queue
is sure to have room for every result issued, and everything after it runs without stalls
up to the queue. Only the parameter cache can hold results back (when a block is shorter
than its parameters take to load), and OBUF / ABUF writes are never refused. Results are
written in order, so the write tagged ``final`` completes the instruction.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from vdla import isa
from vdla.regs import Fault

from ..buffers import compute_port_signatures
from .accept import ACCEPT_CYCLES, Accept
from .layouts import Kind, Tag
from .lut import LutLookup
from .misc import LaneSplitter, MiscLanes
from .multiplier import check_multipliers
from .params import ParamCache
from .pe_array import PEArray, pe_latency
from .postproc import PostProcess
from .sequencer import Sequencer

__all__ = ["ComputeUnit"]

_TAG_BITS = data.Layout.cast(Tag).size

#: Cycles a result spends in the result queue when nothing waits.
_QUEUE_CYCLES = 1


def _result_queue_depth(config):
    """Entries of the result queue: room for every result in flight when one is made each
    cycle (stages C and D, the PE array, the queue's own cycle and the cycle a freed place
    takes to be counted), so that results never wait for places; a power of two (LUT RAM)."""
    return 1 << (pe_latency(config) + 4).bit_length()


def _result_layout(config):
    """A result queue entry: a CONV result (``OCP`` sums) or a MISC one (``CB`` lanes; window
    sums fit 24 bits, see :class:`.misc.MiscLanes`)."""
    return data.StructLayout({
        "v": data.UnionLayout({
            "acc": data.ArrayLayout(signed(32), config.ocp),
            "lanes": data.StructLayout({"a": data.ArrayLayout(signed(24), config.cb),
                                        "b": data.ArrayLayout(signed(8), config.cb)}),
        }),
        "tag": Tag,
    })


class ComputeUnit(wiring.Component):
    """Executes SETUP, CONV and MISC (see :mod:`vdla.isa` for their semantics).

    Parameters
    ----------
    config : :class:`vdla.config.Config`
    multipliers : str
        Implementation of the PE array's multipliers (:data:`.multiplier.MULTIPLIERS`).
    post_multipliers : str or None
        Implementation of post-processing's multipliers; ``None``: as ``multipliers``. No
        choice changes a result or a cycle.

    Members
    -------
    cmd : ``In(stream.Signature(isa.Insn))``
        Taken only while ``idle``.
    done : ``Out(1)``
        Pulse: the instruction finished (its last result is written).
    fault : ``Out(regs.Fault)``
        Valid with ``done``. A faulting instruction has had no effect.
    idle : ``Out(1)``
    clear : ``In(1)``
        FRAME: forget the SETUP state.
    ibuf_read, wbuf_read, pbuf_read, obuf_write, abuf_read, abuf_write
        Compute-side buffer ports (:func:`vdla.hw.buffers.compute_port_signatures`).
    """

    def __init__(self, config, multipliers="infer", post_multipliers=None):
        self._config = config
        self._multipliers = check_multipliers(multipliers)
        self._post_multipliers = check_multipliers(
            multipliers if post_multipliers is None else post_multipliers)
        members = {
            "cmd": In(stream.Signature(isa.Insn)),
            "done": Out(1),
            "fault": Out(Fault),
            "idle": Out(1),
            "clear": In(1),
        }
        members.update({name: In(sig) for name, sig in compute_port_signatures(config).items()})
        super().__init__(members)

    @staticmethod
    def fixed_cycles(config, post=True):
        """Cycles of a CONV beyond one per PE-array beat, from taking it to ``done``, when
        nothing stalls: acceptance, sequencer stages A and B, buffer read and read data
        (stages C and D; the first beat's own cycle is counted in the beats), PE array, then
        (``post``) the result queue and post-processing, and the registered ``done``. A
        partial-sum CONV (not ``post``) writes ABUF straight from the PE array."""
        cycles = ACCEPT_CYCLES + 4 - 1 + pe_latency(config) + 1
        return cycles + (_QUEUE_CYCLES + PostProcess.latency if post else 0)

    @staticmethod
    def lut_cycles(config, entries):
        """Cycles of a MISC LUT of ``entries`` IBUF entries, from taking it to ``done``: ``CB``
        lookups per entry, and what a CONV adds around its beats with the MISC lanes (two
        stages) in place of the PE array and the lookup stages in place of
        post-processing. The result queue is never empty once it has its first entry."""
        cycles = ACCEPT_CYCLES + 4 - 1 + MiscLanes.latency + 1 + _QUEUE_CYCLES
        return cycles + LutLookup.latency + config.cb * entries

    def elaborate(self, platform):
        m = Module()
        config = self._config
        ocp, passes = config.ocp, config.icp // config.ocp

        m.submodules.accept = accept = Accept(config)
        m.submodules.sequencer = seq = Sequencer(config)
        m.submodules.pe_array = pe = PEArray(config, self._multipliers)
        m.submodules.misc_lanes = lanes = MiscLanes(config)
        m.submodules.lane_splitter = split = LaneSplitter(config)
        m.submodules.params = params = ParamCache(config)
        m.submodules.post = post = PostProcess(config, ocp, self._post_multipliers)
        m.submodules.lut = lut = LutLookup(config)

        job = accept.job
        conv = job.kind == Kind.CONV
        is_lut = job.kind == Kind.LUT
        setup = Signal(isa.SetupFields)
        setup_valid = Signal()
        m.d.comb += [accept.insn.eq(self.cmd.payload), accept.setup.eq(setup),
                     accept.setup_valid.eq(setup_valid)]

        # Control: SETUP and illegal opcodes finish at once; CONV / MISC are checked first.
        start = Signal()
        final_write = Signal()
        m.d.sync += self.done.eq(0)
        with m.FSM():
            with m.State("Idle"):
                m.d.comb += [self.cmd.ready.eq(1), self.idle.eq(1)]
                insn = self.cmd.payload
                with m.If(self.cmd.valid):
                    with m.If(insn.opcode == isa.Opcode.SETUP):
                        f = insn.body.setup
                        bad = ((f.kh == 0) | (f.kw == 0) | (f.stride == 0) | (f.n_icg == 0)
                               | (f.dw & (f.n_icg != 1)))
                        m.d.sync += self.done.eq(1)
                        with m.If(bad):
                            m.d.sync += self.fault.eq(Fault.ILLEGAL)
                        with m.Else():
                            m.d.sync += [self.fault.eq(Fault.NONE), setup.eq(f),
                                         setup_valid.eq(1)]
                    with m.Elif((insn.opcode == isa.Opcode.CONV)
                                | (insn.opcode == isa.Opcode.MISC)):
                        m.d.comb += accept.start.eq(1)
                        m.next = "Accept"
                    with m.Else():
                        m.d.sync += [self.done.eq(1), self.fault.eq(Fault.ILLEGAL)]
            with m.State("Accept"):
                with m.If(accept.done):
                    with m.If(accept.fault == Fault.NONE):
                        m.d.comb += start.eq(1)
                        m.next = "Run"
                    with m.Else():
                        m.d.sync += [self.done.eq(1), self.fault.eq(accept.fault)]
                        m.next = "Idle"
            with m.State("Run"):
                with m.If(final_write):
                    m.d.sync += [self.done.eq(1), self.fault.eq(Fault.NONE)]
                    m.next = "Idle"
        with m.If(self.clear):
            m.d.sync += setup_valid.eq(0)

        # The parameter cache starts loading while the instruction is being checked (its job
        # fields are latched by then): a faulting instruction leaves only the cache changed.
        params_start = Signal()
        m.d.sync += params_start.eq(accept.start)
        m.d.comb += [
            seq.start.eq(start), seq.job.eq(job),
            params.start.eq(params_start), params.load.eq(job.acc_final & ~is_lut),
            params.n_blk.eq(job.n_blk), params.pbuf_addr.eq(job.pbuf_addr),
            lanes.func.eq(job.func), lut.pbuf_addr.eq(job.pbuf_addr),
        ]
        # PBUF serves the parameter cache, or a LUT's lookups (the cache loads nothing then).
        m.d.comb += lut.pbuf.data.eq(self.pbuf_read.data)
        with m.If(is_lut):
            m.d.comb += [self.pbuf_read.addr.eq(lut.pbuf.addr), self.pbuf_read.en.eq(lut.pbuf.en)]
        with m.Else():
            wiring.connect(m, wiring.flipped(self.pbuf_read), params.pbuf)

        # Buffer reads. Only the sequencer moves with ``adv``; a beat it issues goes through
        # the read (stage C), its data (stage D, registered straight out of the block RAMs,
        # whose clock-to-output leaves no room for logic in the same cycle) and the PE array
        # or MISC lanes without ever waiting.
        adv = Signal()
        beat = seq.beat
        m.d.comb += [
            seq.adv.eq(adv),
            self.ibuf_read.addr.eq(beat.ibuf_addr), self.ibuf_read.en.eq(adv),
            self.wbuf_read.addr.eq(beat.wbuf_addr), self.wbuf_read.en.eq(adv & conv),
            self.abuf_read.addr.eq(beat.tag.addr), self.abuf_read.en.eq(adv & conv),
        ]
        ctrl = data.StructLayout({"valid": 1, "pad": 1, "first": 1, "last": 1, "tag": Tag})
        c, d = Signal(ctrl), Signal(ctrl)
        # Data registers have no reset (only valid bits do): it keeps the reset net small.
        d_x = Signal.like(self.ibuf_read.data, reset_less=True)
        d_w = Signal.like(self.wbuf_read.data, reset_less=True)
        d_init = Signal.like(self.abuf_read.data, reset_less=True)
        m.d.sync += [c.valid.eq(adv & seq.valid), d.eq(c), d_x.eq(self.ibuf_read.data),
                     d_w.eq(self.wbuf_read.data), d_init.eq(self.abuf_read.data)]
        with m.If(adv):
            m.d.sync += [c.pad.eq(seq.pad), c.first.eq(beat.first), c.last.eq(beat.last),
                         c.tag.eq(beat.tag)]
        with m.If(start):
            m.d.sync += [c.valid.eq(0), d.valid.eq(0)]
        x = Signal(data.ArrayLayout(signed(8), config.cb))
        m.d.comb += x.eq(Mux(d.pad, Cat(*[job.pad_value] * config.cb), d_x.as_value()))

        m.d.comb += [
            pe.sink.valid.eq(d.valid & conv),
            pe.sink.payload.x.eq(x),
            pe.sink.payload.first.eq(d.first),
            pe.sink.payload.last.eq(d.last),
            pe.sink.payload.tag.eq(d.tag),
            lanes.sink.valid.eq(d.valid & ~conv),
            lanes.sink.payload.x.eq(x),
            lanes.sink.payload.first.eq(d.first),
            lanes.sink.payload.last.eq(d.last),
            lanes.sink.payload.tag.eq(d.tag),
        ]
        for q in range(passes):
            with m.If(d.tag.p == q):
                for o in range(ocp):
                    lane = q * ocp + o
                    m.d.comb += [
                        pe.sink.payload.w[o].eq(d_w[lane]),
                        pe.sink.payload.init[o].eq(Mux(job.acc_init, 0, d_init[lane])),
                    ]

        # Results: partial sums straight to ABUF, everything else through the result queue
        # to the parameter cache, the one place that can hold results back (when a block is
        # shorter than its parameters take to load). ``adv`` is a flip-flop: the sequencer
        # issues a beat only while every result it has issued is sure of a place in the
        # queue. (A ready chained back from the cache to the sequencer, fanning out to its
        # registers and the buffer reads, held one ECP5 core to ~65 MHz.)
        result = _result_layout(config)
        m.submodules.results = results = SyncFIFO(
            width=data.Layout.cast(result).size, depth=_result_queue_depth(config))
        written = Signal(result)
        entry = data.View(result, results.r_data)
        pe_tag = Tag(pe.source.payload.tag[:_TAG_BITS])
        to_abuf = conv & ~job.acc_final
        reserved = Signal(range(results.depth + 1))
        go = Signal(init=1)
        reserve = go & seq.valid & beat.last & ~to_abuf
        m.d.comb += adv.eq(go)
        m.d.sync += [reserved.eq(reserved + reserve - (results.r_en & results.r_rdy)),
                     go.eq(reserved + reserve < results.depth)]
        m.d.comb += results.w_data.eq(written)
        with m.If(conv):
            m.d.comb += [
                written.v.acc.eq(pe.source.payload.acc),
                written.tag.eq(pe_tag),
                results.w_en.eq(pe.source.valid & job.acc_final),
                params.sink.valid.eq(results.r_rdy),
                params.sink.payload.a.eq(entry.v.acc),
                params.sink.payload.tag.eq(entry.tag),
                results.r_en.eq(params.sink.ready),
            ]
        with m.Elif(is_lut):
            m.d.comb += [
                written.v.lanes.b.eq(lanes.source.payload.b),
                written.tag.eq(lanes.source.payload.tag),
                results.w_en.eq(lanes.source.valid),
                lut.sink.valid.eq(results.r_rdy),
                lut.sink.payload.x.eq(entry.v.lanes.b),
                lut.sink.payload.tag.eq(entry.tag),
                results.r_en.eq(lut.sink.ready),
            ]
        with m.Else():
            m.d.comb += [
                written.v.lanes.b.eq(lanes.source.payload.b),
                written.tag.eq(lanes.source.payload.tag),
                results.w_en.eq(lanes.source.valid),
                split.sink.valid.eq(results.r_rdy),
                split.sink.payload.b.eq(entry.v.lanes.b),
                split.sink.payload.tag.eq(entry.tag),
                results.r_en.eq(split.sink.ready),
                params.sink.valid.eq(split.source.valid),
                params.sink.payload.add.eq(job.kind == Kind.ADD),
                params.sink.payload.a.eq(split.source.payload.a),
                params.sink.payload.b.eq(split.source.payload.b),
                params.sink.payload.tag.eq(split.source.payload.tag),
                split.source.ready.eq(params.sink.ready),
            ]
            for lane in range(config.cb):
                m.d.comb += [written.v.lanes.a[lane].eq(lanes.source.payload.a[lane]),
                             split.sink.payload.a[lane].eq(entry.v.lanes.a[lane])]
        wiring.connect(m, params.source, post.sink)
        m.d.comb += post.source.ready.eq(1)

        def lane_mask(p, valid):
            return Cat(*[(valid & (p == q)).replicate(ocp) for q in range(passes)])

        post_tag = Tag(post.source.payload.tag[:_TAG_BITS])
        abuf_write = pe.source.valid & to_abuf
        with m.If(is_lut):
            wiring.connect(m, wiring.flipped(self.obuf_write), lut.obuf)
        with m.Else():
            m.d.comb += [
                self.obuf_write.addr.eq(post_tag.addr),
                self.obuf_write.data.eq(Cat(*[post.source.payload.y.as_value()] * passes)),
                self.obuf_write.en.eq(lane_mask(post_tag.p, post.source.valid)),
            ]
        m.d.comb += [
            self.abuf_write.addr.eq(pe_tag.addr),
            self.abuf_write.data.eq(Cat(*[pe.source.payload.acc.as_value()] * passes)),
            self.abuf_write.en.eq(lane_mask(pe_tag.p, abuf_write)),
            final_write.eq((post.source.valid & post_tag.final)
                           | (abuf_write & pe_tag.final) | lut.final),
        ]
        return m
