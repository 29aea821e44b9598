"""Parts shared by the LOAD and SAVE units: the extent check and the burst generator.

:class:`DmaCheck` decides, before any address leaves the core, whether a LOAD/SAVE may run:
ILLEGAL (field values), then SEGMENT (DRAM extent past the segment), then BUFFER (buffer span
past the buffer), the order of the golden model (``sim/iss_dma.py``). Its products are
computed by shift-and-add over a few cycles rather than by multipliers, because the DSP
blocks of the target FPGAs all go to the PE array; a multiplier stops as soon as the rest of
its multiplier operand is zero, so 1-D and 2-D transfers are checked in a few cycles.

:class:`BurstGen` walks the 3-D pattern and emits one AXI INCR burst per cycle: at most
:data:`~.axi.MAX_BURST` beats of 8 bytes, aligned to 128 bytes (so never across a 4 KiB
boundary), never across a row.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from vdla import isa
from vdla.regs import Fault

from .axi import BOUNDARY, MAX_BURST
from .bufport import ADDR_BITS, buffer_words, words_per_entry

__all__ = ["DmaCheck", "BurstGen", "burst_layout"]

#: Bits of the multiplier operand consumed per cycle by the sequential multipliers.
_MUL_STEP = 2
_WORD_SHIFT = exact_log2(isa.WORD_BYTES)
#: Bursts are aligned to blocks of MAX_BURST words; a 4 KiB boundary is a block boundary.
_BLOCK = MAX_BURST * isa.WORD_BYTES
_BLOCK_SHIFT = exact_log2(_BLOCK)
assert BOUNDARY % _BLOCK == 0


def _const_mul(value, constant):
    """``value * constant`` as a sum of shifts, so synthesis never spends a DSP on it."""
    terms = [value << bit for bit in range(constant.bit_length()) if constant >> bit & 1]
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _seq_mul(m, name, load, a, b, width):
    """``a * b`` into a ``width``-bit register; ``load`` starts it (and does the first step).

    Returns ``(product, finished)``; ``finished`` holds from the cycle after the last step
    until the next ``load``.
    """
    acc = Signal(width, name=f"{name}_acc")
    a_sh = Signal(width, name=f"{name}_a")
    b_sh = Signal(len(b), name=f"{name}_b")

    def partial(x, y):
        total = Mux(y[0], x, 0)
        for bit in range(1, min(_MUL_STEP, len(y))):
            total = total + Mux(y[bit], x << bit, 0)
        return total

    with m.If(load):
        m.d.sync += [acc.eq(partial(a, b)), a_sh.eq(a << _MUL_STEP), b_sh.eq(b >> _MUL_STEP)]
    with m.Elif(b_sh != 0):
        m.d.sync += [acc.eq(acc + partial(a_sh, b_sh)), a_sh.eq(a_sh << _MUL_STEP),
                     b_sh.eq(b_sh >> _MUL_STEP)]
    return acc, b_sh == 0


class DmaCheck(wiring.Component):
    """Legality, segment and buffer check of one LOAD (``load=True``) or SAVE.

    ``fields``, ``seg_size`` must hold steady from ``start`` until ``done``. ``done`` pulses
    3 cycles after ``start`` when ``rows`` and ``planes`` are below 4, and at most 11 cycles
    after it, with ``fault`` (NONE when the transfer may run).
    ``buf_word`` is the first buffer word of the transfer.
    """

    def __init__(self, config, *, load):
        self._config = config
        self._load = bool(load)
        super().__init__({
            "start": In(1),
            "fields": In(isa.DmaFields),
            "seg_size": In(64),
            "done": Out(1),
            "fault": Out(Fault),
            "buf_word": Out(ADDR_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        f = self.fields
        B = isa.Buffer

        # Phase A: the two stride products and rows*length; phase B: planes*(rows*length).
        phase_b = Signal()
        load_b = Signal()
        plane_off, plane_fin = _seq_mul(m, "plane_off", self.start, f.plane_stride,
                                        f.planes - 1, 33)
        row_off, row_fin = _seq_mul(m, "row_off", self.start, f.row_stride, f.rows - 1, 26)
        # One multiplier for both: rows*length, then that product times planes.
        row_words = Signal(20)
        words, words_fin = _seq_mul(m, "words", self.start | load_b,
                                    Mux(load_b, row_words, f.length),
                                    Mux(load_b, f.planes, f.rows), 29)
        m.d.comb += row_words.eq(words)

        busy = Signal()
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [busy.eq(1), phase_b.eq(0)]
        with m.Elif(busy & ~phase_b & plane_fin & row_fin & words_fin):
            m.d.comb += load_b.eq(1)
            m.d.sync += phase_b.eq(1)
        with m.Elif(busy & phase_b & words_fin):
            m.d.sync += [busy.eq(0), self.done.eq(1)]

        # Both ends are exclusive: the transfer fits when end <= size. The sums are registered
        # (their inputs are final a cycle before ``done``), so the decision is one compare.
        dram_end = Signal(40)
        m.d.sync += dram_end.eq(f.dram_addr + ((plane_off + row_off + f.length) << _WORD_SHIFT))
        buf_start = Signal(ADDR_BITS + 14)
        buf_size = Signal(ADDR_BITS + 1)
        with m.Switch(f.buf):
            for buf in (B.OBUF,) if not self._load else (B.IBUF, B.WBUF, B.PBUF):
                with m.Case(buf):
                    m.d.comb += [
                        buf_start.eq(_const_mul(f.buf_addr, words_per_entry(self._config, buf))),
                        buf_size.eq(buffer_words(self._config, buf)),
                    ]
        m.d.comb += self.buf_word.eq(buf_start)
        buf_room = Signal(signed(ADDR_BITS + 16))    # words that fit after buf_start
        m.d.sync += buf_room.eq(buf_size - buf_start)

        illegal = ((f.length == 0) | (f.rows == 0) | (f.planes == 0) |
                   (f.dram_addr[:_WORD_SHIFT] != 0) |
                   ((f.buf == B.OBUF) if self._load else (f.buf != B.OBUF)))
        # Registered with ``done``: the verdict fans out to the whole burst generator.
        with m.If(illegal):
            m.d.sync += self.fault.eq(Fault.ILLEGAL)
        with m.Elif(dram_end > self.seg_size):
            m.d.sync += self.fault.eq(Fault.SEGMENT)
        with m.Elif(words > buf_room):
            m.d.sync += self.fault.eq(Fault.BUFFER)
        with m.Else():
            m.d.sync += self.fault.eq(Fault.NONE)
        return m


def burst_layout(addr_width):
    """One burst: start byte address and AXI ``len`` (beats - 1)."""
    return data.StructLayout({"addr": unsigned(addr_width), "len": unsigned(4)})


class BurstGen(wiring.Component):
    """Address generator of a 3-D strided transfer, one burst per cycle.

    Bursts end on :data:`_BLOCK`-byte boundaries (16 words), except the last of a row: a row
    starting mid-block begins with a shorter burst. Aligned bursts cannot cross 4 KiB (a
    multiple of the block), and the next address inside a row is an increment of the block
    number, which keeps the per-cycle recurrence short enough for 100+ MHz on ECP5.

    ``start`` loads the pattern (``base`` = absolute byte address of word 0, a multiple of 8,
    and ``fields``); bursts appear on ``burst`` in transfer order. A new burst is produced only
    while ``allow`` is high (the unit's credit for outstanding bursts); ``issue`` pulses when
    one is, and ``fresh`` in the next cycle, the first one it is presented on ``burst`` (the
    units book-keep from ``fresh`` and the registered payload, off the recurrence's critical
    path). ``stop`` ends the transfer early (after a bus
    error); a burst already presented stays valid until taken, as AXI requires. ``busy`` is
    high while bursts remain, including the one presented.
    """

    def __init__(self, addr_width):
        if addr_width <= _BLOCK_SHIFT:
            raise ValueError(f"Address width must be more than {_BLOCK_SHIFT} bits, "
                             f"not {addr_width!r}")
        self._addr_width = addr_width
        layout = burst_layout(addr_width)
        super().__init__({
            "start": In(1),
            "base": In(addr_width),
            "fields": In(isa.DmaFields),
            "allow": In(1),
            "stop": In(1),
            "burst": Out(stream.Signature(layout)),
            "issue": Out(1),
            "fresh": Out(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        aw = self._addr_width
        f = self.fields

        active = Signal()
        block = Signal(aw - _BLOCK_SHIFT)       # next burst: block number ...
        offset = Signal(_BLOCK_SHIFT - _WORD_SHIFT)     # ... and word within the block
        row_addr = Signal(aw)       # first word of the current row
        plane_addr = Signal(aw)     # first word of the current plane
        left = Signal.like(f.length)    # words of the current row not yet in a burst
        rows_left = Signal.like(f.rows)
        planes_left = Signal.like(f.planes)
        row_step = Signal(aw)
        plane_step = Signal(aw)

        # Registered with the state they derive from, so that the decisions of the next cycle
        # start at flip-flops: words to the end of the block, and whether the burst ends the
        # row (left <= room).
        room = Signal(range(MAX_BURST + 1))
        row_end = Signal()
        beats = Signal(range(MAX_BURST + 1))
        m.d.comb += [
            beats.eq(Mux(row_end, left, room)),
            self.busy.eq(active | self.burst.valid),
            self.issue.eq(active & self.allow & ~self.stop &
                          (~self.burst.valid | self.burst.ready)),
        ]
        m.d.sync += self.fresh.eq(self.issue)

        def row_start(addr, length):
            offset_next = addr[_WORD_SHIFT:_BLOCK_SHIFT]
            return [block.eq(addr[_BLOCK_SHIFT:]), offset.eq(offset_next),
                    room.eq(MAX_BURST - offset_next), left.eq(length),
                    row_end.eq(length <= MAX_BURST - offset_next)]

        with m.If(self.burst.ready):
            m.d.sync += self.burst.valid.eq(0)
        with m.If(self.start):
            m.d.sync += [
                active.eq(1), *row_start(self.base, f.length),
                row_addr.eq(self.base), plane_addr.eq(self.base),
                rows_left.eq(f.rows), planes_left.eq(f.planes),
                row_step.eq(f.row_stride << _WORD_SHIFT),
                plane_step.eq(f.plane_stride << _WORD_SHIFT),
            ]
        with m.Elif(self.issue):
            m.d.sync += [
                self.burst.valid.eq(1),
                self.burst.payload.addr.eq(Cat(Const(0, _WORD_SHIFT), offset, block)),
                self.burst.payload.len.eq(beats - 1),
            ]
            with m.If(~row_end):
                m.d.sync += [block.eq(block + 1), offset.eq(0), room.eq(MAX_BURST),
                             left.eq(left - room), row_end.eq(left - room <= MAX_BURST)]
            with m.Elif(rows_left != 1):
                m.d.sync += [
                    *row_start(row_addr + row_step, f.length), row_addr.eq(row_addr + row_step),
                    rows_left.eq(rows_left - 1),
                ]
            with m.Elif(planes_left != 1):
                m.d.sync += [
                    *row_start(plane_addr + plane_step, f.length),
                    row_addr.eq(plane_addr + plane_step), plane_addr.eq(plane_addr + plane_step),
                    rows_left.eq(f.rows), planes_left.eq(planes_left - 1),
                ]
            with m.Else():
                m.d.sync += active.eq(0)
        with m.If(self.stop):
            m.d.sync += active.eq(0)
        return m
