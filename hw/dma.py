"""LOAD and SAVE units: 3-D strided DMA between a tenant's DRAM segment and a core's buffers.

Both follow the unit protocol of ``docs/hw_interfaces.md``: an instruction is taken only when
idle, checked completely (:class:`~.dma_common.DmaCheck`: ILLEGAL, SEGMENT, BUFFER) before
its first address goes out, then moved in AXI4 INCR bursts produced by
:class:`~.dma_common.BurstGen` at up to one per cycle. Up to ``max_bursts`` bursts are
outstanding, so a long row streams one beat per cycle as long as the memory's round trip is
shorter than ``max_bursts * 16`` cycles.

Each unit drives one half of an AXI4 master (LOAD: AR/R, SAVE: AW/W/B; the other half's
outputs stay 0). :class:`~.axi_merge.AXI4Merge` joins the halves into the core's ``m_axi``.
All bursts use ID 0, so responses come back in order.

Every beat carries one 8-byte word (``AxSIZE`` = 3): the buffer ports move one word per
cycle, so a bus wider than 64 bits gains nothing from full-width beats. On such a bus the
beats are narrow transfers on the byte lanes their address selects, as AXI4 defines.

An error response (``SLVERR``/``DECERR``) ends the instruction with fault SEGMENT: no new
burst is issued, the outstanding ones are completed (their W data is still sent, as the
protocol requires), and LOAD does not write the words of error beats. ``cancel`` (held while
the core is aborted) ends the instruction the same way, without a fault: within the
outstanding bursts' round trip, whatever its extent.
"""

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from vdla import isa
from vdla.regs import Fault

from .axi import MAX_BURST, AXI4Signature, Burst, Resp
from .bufport import ADDR_BITS, WORD_BITS, BufferReadSignature, BufferWriteSignature
from .dma_common import BurstGen, DmaCheck

__all__ = ["LoadUnit", "SaveUnit"]

_BEAT_SIZE = exact_log2(isa.WORD_BYTES)     # AxSIZE of an 8-byte beat
#: AxCACHE "normal non-cacheable bufferable", what memory controllers expect of a DMA.
_CACHE = 0b0011
#: Depth of SAVE's prefetch queue of OBUF words: covers the read latency plus one beat.
_PREFETCH = 4


class _DmaUnit(wiring.Component):
    """Instruction intake, extent check and completion, shared by LOAD and SAVE."""

    _load = None    # set by the subclasses

    def __init__(self, config, *, addr_width=None, id_width=1, max_bursts=4):
        # A unit that could not be built is no unused design: keep Amaranth from saying so.
        self._MustUse__silence = True
        if config.bus_bits < WORD_BITS:
            raise ValueError(f"{config.name}: the DMA needs a bus of at least {WORD_BITS} bits "
                             f"(one 8-byte word per beat), not bus_bits={config.bus_bits}")
        if not isinstance(max_bursts, int) or max_bursts < 1:
            raise TypeError(f"Outstanding burst limit must be a positive integer, "
                            f"not {max_bursts!r}")
        self._MustUse__silence = False
        self._config = config
        # The segment ports stay 64 bits wide (what the registers hold); only the address
        # arithmetic is as wide as the bus, and synthesis drops what a narrower core ties off.
        self._addr_width = config.dram_addr_bits if addr_width is None else addr_width
        self._max_bursts = max_bursts
        self._lanes = config.bus_bits // WORD_BITS
        buffer = BufferWriteSignature() if self._load else BufferReadSignature()
        super().__init__({
            "cmd": In(stream.Signature(isa.Insn)),
            "done": Out(1),
            "fault": Out(Fault),
            "idle": Out(1),
            "cancel": In(1),
            "seg_base": In(64),
            "seg_size": In(64),
            "m_axi": Out(AXI4Signature(self._addr_width, config.bus_bits, id_width)),
            "buffer": Out(buffer),
        })

    def elaborate(self, platform):
        m = Module()
        check = DmaCheck(self._config, load=self._load)
        # A cancelled check must not finish later: its verdict would be taken for the next
        # instruction's (found by the formal segment proof, tests/test_formal.py).
        m.submodules.check = ResetInserter(self.cancel)(check)
        m.submodules.gen = gen = BurstGen(self._addr_width)

        fields = Signal(isa.DmaFields)
        seg_size = Signal(64)
        base = Signal(self._addr_width)
        check_start = Signal()
        error = Signal()            # a bus error response was seen
        outstanding = Signal(range(self._max_bursts + 1))
        retire = Signal()           # a burst completed (last R beat / B response)
        start = Signal()            # the transfer begins: buffer pointers load
        m.d.comb += [
            check.start.eq(check_start),
            check.fields.eq(fields),
            check.seg_size.eq(seg_size),
            gen.fields.eq(fields),
            gen.base.eq(base),
            gen.start.eq(start),
            gen.allow.eq(outstanding != self._max_bursts),
            gen.stop.eq(error | self.cancel),
        ]
        m.d.sync += outstanding.eq(outstanding + gen.issue - retire)

        # ``start`` is registered (a cycle in state Start): it loads every register of the
        # transfer, and coming straight from the check's result it was a critical path.
        m.d.sync += [check_start.eq(0), self.done.eq(0), start.eq(0)]
        with m.FSM():
            with m.State("Idle"):
                m.d.comb += [self.idle.eq(1), self.cmd.ready.eq(1)]
                with m.If(self.cmd.valid):
                    dma = self.cmd.payload.body.dma
                    m.d.sync += [
                        fields.eq(dma), seg_size.eq(self.seg_size),
                        base.eq(self.seg_base + dma.dram_addr),
                        check_start.eq(1), error.eq(0),
                    ]
                    m.next = "Check"
            with m.State("Check"):
                with m.If(self.cancel):
                    m.next = "Idle"     # nothing is on the bus yet
                with m.Elif(check.done):
                    with m.If(check.fault == Fault.NONE):
                        m.d.sync += start.eq(1)
                        m.next = "Start"
                    with m.Else():
                        m.d.sync += [self.done.eq(1), self.fault.eq(check.fault)]
                        m.next = "Idle"
            with m.State("Start"):
                m.next = "Move"
            with m.State("Move"):
                with m.If(~gen.busy & (outstanding == 0)):
                    m.d.sync += [self.done.eq(1),
                                 self.fault.eq(Mux(error, Fault.SEGMENT, Fault.NONE))]
                    m.next = "Idle"

        self._datapath(m, gen, fields, check.buf_word, start, retire, error)
        return m

    def _address_channel(self, m, gen, prefix):
        bus = self.m_axi
        m.d.comb += [
            getattr(bus, f"{prefix}valid").eq(gen.burst.valid),
            getattr(bus, f"{prefix}addr").eq(gen.burst.payload.addr),
            getattr(bus, f"{prefix}len").eq(gen.burst.payload.len),
            getattr(bus, f"{prefix}size").eq(_BEAT_SIZE),
            getattr(bus, f"{prefix}burst").eq(Burst.INCR),
            getattr(bus, f"{prefix}cache").eq(_CACHE),
            gen.burst.ready.eq(getattr(bus, f"{prefix}ready")),
        ]

    def _lane_queue(self, m, gen, pop):
        """Byte-lane group (8-byte word within the bus) of each outstanding burst's first
        beat, for buses wider than 64 bits; ``None`` on a 64-bit bus."""
        if self._lanes == 1:
            return None
        bits = exact_log2(self._lanes)
        m.submodules.lanes = lanes = fifo.SyncFIFO(width=bits, depth=self._max_bursts)
        m.d.comb += [
            lanes.w_en.eq(gen.fresh),
            lanes.w_data.eq(gen.burst.payload.addr[_BEAT_SIZE:_BEAT_SIZE + bits]),
            lanes.r_en.eq(pop),
        ]
        return lanes.r_data


class LoadUnit(_DmaUnit):
    """LOAD: DRAM -> IBUF / WBUF / PBUF, through AR/R and ``buffer`` (a write port).

    Read data never waits (``rready`` is 1): the buffer port has no back-pressure, so each R
    beat is written one cycle after it arrives.
    """

    _load = True

    def _datapath(self, m, gen, fields, buf_word, start, retire, error):
        bus = self.m_axi
        self._address_channel(m, gen, "ar")

        beat = Signal()
        m.d.comb += [
            bus.rready.eq(1),
            beat.eq(bus.rvalid),
            retire.eq(beat & bus.rlast),
        ]
        with m.If(beat & (bus.rresp != Resp.OKAY)):
            m.d.sync += error.eq(1)

        word = Signal(WORD_BITS)
        first_lane = self._lane_queue(m, gen, retire)
        if first_lane is None:
            m.d.comb += word.eq(bus.rdata)
        else:
            index = Signal.like(first_lane)     # beat within the burst, modulo the lanes
            with m.If(beat):
                m.d.sync += index.eq(Mux(bus.rlast, 0, index + 1))
            lane = (first_lane + index)[:len(first_lane)]
            m.d.comb += word.eq(bus.rdata.word_select(lane, WORD_BITS))

        # Responses arrive in order, so the buffer side is a plain counter.
        pointer = Signal(ADDR_BITS)
        with m.If(start):
            m.d.sync += pointer.eq(buf_word)
        with m.Elif(beat):
            m.d.sync += pointer.eq(pointer + 1)
        m.d.sync += [
            self.buffer.en.eq(beat & (bus.rresp == Resp.OKAY)),
            self.buffer.addr.eq(pointer),
            self.buffer.data.eq(word),
            self.buffer.buf.eq(fields.buf),
        ]


class SaveUnit(_DmaUnit):
    """SAVE: OBUF -> DRAM, through ``buffer`` (a read port) and AW/W/B.

    In the first cycle a burst is presented on AW its words are released to the OBUF
    prefetcher, so W never waits for AWREADY (AXI forbids that dependency) and trails AW by
    three cycles. ``done`` comes after the last B response.
    """

    _load = False

    def _datapath(self, m, gen, fields, buf_word, start, retire, error):
        bus = self.m_axi
        self._address_channel(m, gen, "aw")

        m.d.comb += [bus.bready.eq(1), retire.eq(bus.bvalid)]
        with m.If(bus.bvalid & (bus.bresp != Resp.OKAY)):
            m.d.sync += error.eq(1)

        w_beat = Signal()
        m.d.comb += w_beat.eq(bus.wvalid & bus.wready)

        # Burst lengths in issue order: where W puts wlast.
        m.submodules.lengths = lengths = fifo.SyncFIFO(width=4, depth=self._max_bursts)
        count = Signal(4)
        m.d.comb += [
            lengths.w_en.eq(gen.fresh),
            lengths.w_data.eq(gen.burst.payload.len),
            lengths.r_en.eq(w_beat & bus.wlast),
            bus.wlast.eq(count == lengths.r_data),
        ]
        with m.If(w_beat):
            m.d.sync += count.eq(Mux(bus.wlast, 0, count + 1))

        # OBUF prefetch: words of issued bursts not yet read, read one per cycle while the
        # queue (counting the read in flight) has room.
        m.submodules.words = words = fifo.SyncFIFO(width=WORD_BITS, depth=_PREFETCH)
        released = Signal(range(self._max_bursts * MAX_BURST + 1))
        in_flight = Signal()
        read = Signal()
        pointer = Signal(ADDR_BITS)
        m.d.comb += read.eq((released != 0) & (words.level + in_flight < _PREFETCH))
        m.d.sync += [
            released.eq(released + Mux(gen.fresh, gen.burst.payload.len + 1, 0) - read),
            in_flight.eq(read),
        ]
        with m.If(start):
            m.d.sync += pointer.eq(buf_word)
        with m.Elif(read):
            m.d.sync += pointer.eq(pointer + 1)
        m.d.comb += [
            self.buffer.en.eq(read),
            self.buffer.addr.eq(pointer),
            words.w_en.eq(in_flight),
            words.w_data.eq(self.buffer.data),
            words.r_en.eq(w_beat),
            bus.wvalid.eq(words.r_rdy & lengths.r_rdy),
        ]

        # Narrow beats on a wide bus: the word goes to every lane, the strobe picks one.
        m.d.comb += bus.wdata.eq(Cat(*([words.r_data] * self._lanes)))
        first_lane = self._lane_queue(m, gen, w_beat & bus.wlast)
        if first_lane is None:
            m.d.comb += bus.wstrb.eq(Const(0xFF, 8))
        else:
            lane = (first_lane + count)[:len(first_lane)]
            m.d.comb += bus.wstrb.eq(Const(0xFF, 8) << (lane * isa.WORD_BYTES))
