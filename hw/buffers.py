"""The on-chip buffers of one core: IBUF, WBUF, PBUF, OBUF and its int32 twin ABUF.

Each buffer is one :class:`amaranth.lib.memory.Memory`. The DMA side sees 8-byte words
(:mod:`.bufport`): a word address is split here into an entry and a 64-bit lane, and a write
enables that lane only. The compute side sees whole entries through plain ``lib.memory`` port
signatures, in the shapes the PE array wants (:func:`compute_port_signatures`).

Buffers are zeroed whenever a tenant starts on the core (so nothing of the previous owner can
be read): ``clear`` walks every entry, one per cycle, through the existing write ports, which
is why the core only clears while its units are idle.
"""

from amaranth.hdl import Cat, Module, Shape, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from vdla import isa

from .bufport import BufferReadSignature, BufferWriteSignature, words_per_entry

__all__ = ["CoreBuffers", "compute_port_signatures", "entry_layouts"]

_WORD_BITS = isa.WORD_BYTES * 8


def entry_layouts(config):
    """``{name: shape}`` of one entry of each buffer as the compute side sees it."""
    cb = config.cb
    pixel = data.ArrayLayout(signed(8), cb)
    return {
        "ibuf": pixel,
        "wbuf": data.ArrayLayout(pixel, cb),          # [o][i]: row o holds output channel o
        "pbuf": isa.PostParams,
        "obuf": pixel,
        "abuf": data.ArrayLayout(signed(32), cb),
    }


def _depths(config):
    return {"ibuf": config.ibuf_depth, "wbuf": config.wbuf_depth, "pbuf": config.pbuf_depth,
            "obuf": config.obuf_depth, "abuf": config.obuf_depth}


def compute_port_signatures(config):
    """Memory-side signatures of the compute unit's buffer ports, by member name.

    The compute unit declares each as ``In(signature)`` (it drives ``addr``/``en``/``data``
    of writes and receives read ``data``); :class:`CoreBuffers` exposes them as ``Out``.
    Read data is valid the cycle after ``en``; OBUF writes enable single int8 lanes, ABUF
    writes single int32 lanes.
    """
    shapes, depths = entry_layouts(config), _depths(config)
    def rd(name):
        return ReadPort.Signature(addr_width=ceil_log2(depths[name]), shape=shapes[name])
    def wr(name):
        return WritePort.Signature(addr_width=ceil_log2(depths[name]), shape=shapes[name],
                                   granularity=1)
    return {"ibuf_read": rd("ibuf"), "wbuf_read": rd("wbuf"), "pbuf_read": rd("pbuf"),
            "obuf_write": wr("obuf"), "abuf_read": rd("abuf"), "abuf_write": wr("abuf")}


class CoreBuffers(wiring.Component):
    """The five buffers of a core with their DMA-side and compute-side ports.

    Parameters
    ----------
    config : :class:`vdla.config.Config`

    Members
    -------
    dma_write : ``In(BufferWriteSignature())``
        LOAD unit: one word per cycle into IBUF, WBUF or PBUF (``buf``); a word address past
        the buffer is ignored (the LOAD unit faults such instructions before they start).
    dma_read : ``In(BufferReadSignature())``
        SAVE unit: OBUF word ``addr``, on ``data`` the cycle after ``en``.
    ibuf_read, wbuf_read, pbuf_read, obuf_write, abuf_read, abuf_write : ``Out(...)``
        Compute side, see :func:`compute_port_signatures`.
    clear : ``In(1)``
        Pulse: zero every entry of every buffer (takes the largest depth in cycles).
    clear_busy : ``Out(1)``
        A clear is in progress; the ports must stay unused until it drops.
    """

    def __init__(self, config):
        self._config = config
        for buf in (isa.Buffer.IBUF, isa.Buffer.WBUF, isa.Buffer.PBUF, isa.Buffer.OBUF):
            words = words_per_entry(config, buf)
            if words & (words - 1):
                raise ValueError(f"{buf.name} entries of {words} words: the channel block "
                                 f"must make a power-of-two number of 8-byte words, not "
                                 f"cb={config.cb}")
        members = {"dma_write": In(BufferWriteSignature()),
                   "dma_read": In(BufferReadSignature()),
                   "clear": In(1), "clear_busy": Out(1)}
        members.update({name: Out(sig) for name, sig in compute_port_signatures(config).items()})
        super().__init__(members)
        shapes, depths = entry_layouts(config), _depths(config)
        # IBUF, OBUF and ABUF keep the entry shapes: their lanes are whole 64-bit words or
        # single elements. WBUF and PBUF are stored flat, because lib.memory granularity
        # applies only to unsigned and one-level array shapes and the DMA writes 64-bit
        # words into them; their read ports re-view the bits in the compute shapes.
        self.ibuf = Memory(shape=shapes["ibuf"], depth=depths["ibuf"], init=[])
        self.wbuf = Memory(shape=unsigned(Shape.cast(shapes["wbuf"]).width),
                           depth=depths["wbuf"], init=[])
        self.pbuf = Memory(shape=unsigned(Shape.cast(shapes["pbuf"]).width),
                           depth=depths["pbuf"], init=[])
        self.obuf = Memory(shape=shapes["obuf"], depth=depths["obuf"], init=[])
        self.abuf = Memory(shape=shapes["abuf"], depth=depths["abuf"], init=[])

    def elaborate(self, platform):
        config = self._config
        m = Module()
        mems = {"ibuf": self.ibuf, "wbuf": self.wbuf, "pbuf": self.pbuf, "obuf": self.obuf,
                "abuf": self.abuf}
        for name, mem in mems.items():
            m.submodules[name] = mem
        words = {buf: words_per_entry(config, buf) for buf in isa.Buffer}

        # Clear sequencer: one entry of every buffer per cycle.
        max_depth = max(mem.depth for mem in mems.values())
        clear_addr = Signal(range(max_depth + 1))
        clearing = Signal()
        m.d.comb += self.clear_busy.eq(clearing)
        with m.If(self.clear):
            m.d.sync += [clearing.eq(1), clear_addr.eq(0)]
        with m.Elif(clearing):
            m.d.sync += clear_addr.eq(clear_addr + 1)
            with m.If(clear_addr == max_depth - 1):
                m.d.sync += clearing.eq(0)

        def clear_port(port, mem):
            m.d.comb += [port.addr.eq(clear_addr), port.data.eq(0),
                         port.en.eq((clear_addr < mem.depth).replicate(len(port.en)))]

        # DMA writes into IBUF / WBUF / PBUF: entry = word >> log2(words per entry).
        dma = self.dma_write
        for name, buf in (("ibuf", isa.Buffer.IBUF), ("wbuf", isa.Buffer.WBUF),
                          ("pbuf", isa.Buffer.PBUF)):
            mem = mems[name]
            # Granularity counts bits for the flat buffers and int8 elements for IBUF.
            port = mem.write_port(granularity=isa.WORD_BYTES if name == "ibuf"
                                  else _WORD_BITS)
            shift = exact_log2(words[buf])
            entry = dma.addr >> shift
            lane = dma.addr[:shift]
            hit = dma.en & (dma.buf == buf) & (entry < mem.depth)
            with m.If(clearing):
                clear_port(port, mem)
            with m.Else():
                m.d.comb += [
                    port.addr.eq(entry),
                    port.data.eq(Cat(*[dma.data] * words[buf])),
                    port.en.eq(Cat(hit & (lane == k) for k in range(words[buf]))),
                ]
            if name != "ibuf":
                self._connect_read(m, mem, getattr(self, f"{name}_read"))
        self._connect_read(m, self.ibuf, self.ibuf_read)

        # Compute writes into OBUF / ABUF, overridden by the clear.
        for name in ("obuf", "abuf"):
            mem = mems[name]
            port = mem.write_port(granularity=1)
            ext = getattr(self, f"{name}_write")
            with m.If(clearing):
                clear_port(port, mem)
            with m.Else():
                m.d.comb += [port.addr.eq(ext.addr), port.data.eq(ext.data),
                             port.en.eq(ext.en)]
        self._connect_read(m, self.abuf, self.abuf_read)

        # SAVE reads OBUF words; the lane is registered to line up with the read data.
        rd = self.obuf.read_port()
        shift = exact_log2(words[isa.Buffer.OBUF])
        m.d.comb += [rd.addr.eq(self.dma_read.addr >> shift), rd.en.eq(self.dma_read.en)]
        if shift:
            lane = Signal(shift)
            with m.If(self.dma_read.en):
                m.d.sync += lane.eq(self.dma_read.addr[:shift])
            m.d.comb += self.dma_read.data.eq(rd.data.as_value().word_select(lane, _WORD_BITS))
        else:
            m.d.comb += self.dma_read.data.eq(rd.data)
        return m

    @staticmethod
    def _connect_read(m, mem, ext):
        port = mem.read_port()
        m.d.comb += [port.addr.eq(ext.addr), port.en.eq(ext.en), ext.data.eq(port.data)]
