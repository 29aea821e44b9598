"""Join a read-only and a write-only AXI4 master into one AXI4 master port.

A core's LOAD unit uses only AR/R and its SAVE unit only AW/W/B (each drives its unused half
to 0), and AXI's read and write channels are independent, so one master port is simply the
read half of one and the write half of the other: no arbitration, no added latency. ::

    m.submodules.merge = merge = AXI4Merge(load.m_axi.signature)
    connect(m, load.m_axi, merge.read)
    connect(m, save.m_axi, merge.write)
    connect(m, merge.bus, flipped(self.m_axi))
"""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .axi import READ_CHANNELS, WRITE_CHANNELS, AXI4Signature

__all__ = ["AXI4Merge"]


class AXI4Merge(wiring.Component):
    """``bus`` takes its AR/R channels from ``read`` and its AW/W/B channels from ``write``.

    Parameters
    ----------
    signature : AXI4Signature
        Of all three ports. The unused half of ``read`` / ``write`` is left unconnected
        (its ready/response inputs read 0).
    """

    def __init__(self, signature):
        if not isinstance(signature, AXI4Signature):
            raise TypeError(f"Signature must be an AXI4Signature, not {signature!r}")
        super().__init__({
            "read": In(signature),
            "write": In(signature),
            "bus": Out(signature),
        })

    def elaborate(self, platform):
        m = Module()
        for source, channels in ((self.read, READ_CHANNELS), (self.write, WRITE_CHANNELS)):
            for name in AXI4Signature.channel_members(channels):
                inner, outer = getattr(source, name), getattr(self.bus, name)
                if self.bus.signature.members[name].flow == wiring.Out:
                    m.d.comb += outer.eq(inner)
                else:
                    m.d.comb += inner.eq(outer)
        return m
