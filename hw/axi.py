"""AMBA AXI4 and AXI4-Lite port signatures (definitions only, no logic).

Members carry the standard AXI signal names (``awaddr``, ``rlast``, ...) in the master's view,
so a component with ``m_axi: Out(AXI4Signature(...))`` gets Verilog ports ``m_axi__awaddr``
... that bus models (cocotbext-axi's ``AxiBus.from_prefix(dut, "m_axi", bus_separator="__")``)
and vendor shells recognise. A slave takes ``In(AXI4Signature(...))``.

The optional AXI4 members ``awlock``/``awcache``/``awprot``/``awqos`` (and the ``ar*`` twins)
are present because shells and interconnects expect them; ``*region`` and ``*user`` are left
out.
"""

from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Burst", "Resp", "AXI4Signature", "AXI4LiteSignature",
           "WRITE_CHANNELS", "READ_CHANNELS", "channel_of", "BOUNDARY", "MAX_BURST"]

#: AXI4 bursts must not cross a 4 KiB address boundary.
BOUNDARY = 4096
#: Longest INCR burst (beats) the DMA issues; AXI4 allows 256, but short bursts keep the
#: arbiter's per-burst round robin fair between cores.
MAX_BURST = 16


class Burst(enum.Enum, shape=2):
    """``AxBURST``."""
    FIXED = 0
    INCR = 1
    WRAP = 2


class Resp(enum.Enum, shape=2):
    """``BRESP`` / ``RRESP``."""
    OKAY = 0
    EXOKAY = 1
    SLVERR = 2
    DECERR = 3


#: Members of each channel, by channel prefix: the write half is AW/W/B, the read half AR/R.
WRITE_CHANNELS = ("aw", "w", "b")
READ_CHANNELS = ("ar", "r")


def channel_of(name):
    """Channel (``"aw"``, ``"w"``, ``"b"``, ``"ar"``, ``"r"``) of an AXI member name."""
    return name[:2] if name[:2] in ("aw", "ar") else name[:1]


def _check_width(what, value, minimum=1):
    if not isinstance(value, int) or value < minimum:
        raise TypeError(f"{what} must be an integer greater than or equal to {minimum}, "
                        f"not {value!r}")


def _address_members(prefix, addr_width, id_width):
    return {
        f"{prefix}id": Out(id_width),
        f"{prefix}addr": Out(addr_width),
        f"{prefix}len": Out(8),
        f"{prefix}size": Out(3),
        f"{prefix}burst": Out(Burst),
        f"{prefix}lock": Out(1),
        f"{prefix}cache": Out(4),
        f"{prefix}prot": Out(3),
        f"{prefix}qos": Out(4),
        f"{prefix}valid": Out(1),
        f"{prefix}ready": In(1),
    }


class AXI4Signature(wiring.Signature):
    """AXI4 (full) interface, master view.

    Parameters
    ----------
    addr_width : int
        Width of ``awaddr`` / ``araddr`` (byte addresses).
    data_width : int
        Width of ``wdata`` / ``rdata``: 8, 16, ... 1024 bits; ``wstrb`` has one bit per byte.
    id_width : int
        Width of the transaction IDs (at least 1: zero-width ports do not survive Verilog).
    """

    def __init__(self, addr_width, data_width, id_width=1):
        _check_width("Address width", addr_width)
        _check_width("ID width", id_width)
        if data_width not in (8, 16, 32, 64, 128, 256, 512, 1024):
            raise TypeError(f"Data width must be a power of two from 8 to 1024, "
                            f"not {data_width!r}")
        self._addr_width = addr_width
        self._data_width = data_width
        self._id_width = id_width
        members = {}
        members.update(_address_members("aw", addr_width, id_width))
        members.update({
            "wdata": Out(data_width),
            "wstrb": Out(data_width // 8),
            "wlast": Out(1),
            "wvalid": Out(1),
            "wready": In(1),
            "bid": In(id_width),
            "bresp": In(Resp),
            "bvalid": In(1),
            "bready": Out(1),
        })
        members.update(_address_members("ar", addr_width, id_width))
        members.update({
            "rid": In(id_width),
            "rdata": In(data_width),
            "rresp": In(Resp),
            "rlast": In(1),
            "rvalid": In(1),
            "rready": Out(1),
        })
        super().__init__(members)

    @property
    def addr_width(self):
        return self._addr_width

    @property
    def data_width(self):
        return self._data_width

    @property
    def id_width(self):
        return self._id_width

    @staticmethod
    def channel_members(channels):
        """Member names of the given channels (e.g. :data:`READ_CHANNELS`), in order."""
        return tuple(name for name in AXI4Signature(1, 8).members
                     if channel_of(name) in channels)

    def __eq__(self, other):
        return (type(other) is type(self) and
                (self.addr_width, self.data_width, self.id_width) ==
                (other.addr_width, other.data_width, other.id_width))

    def __hash__(self):
        return hash((type(self), self.addr_width, self.data_width, self.id_width))

    def __repr__(self):
        return f"AXI4Signature({self.addr_width}, {self.data_width}, {self.id_width})"


class AXI4LiteSignature(wiring.Signature):
    """AXI4-Lite interface, master view (the control port takes ``In(...)`` of it).

    Parameters
    ----------
    addr_width : int
        Width of ``awaddr`` / ``araddr`` (byte addresses).
    data_width : int
        32 or 64.
    """

    def __init__(self, addr_width, data_width=32):
        _check_width("Address width", addr_width)
        if data_width not in (32, 64):
            raise TypeError(f"Data width must be 32 or 64, not {data_width!r}")
        self._addr_width = addr_width
        self._data_width = data_width
        super().__init__({
            "awaddr": Out(addr_width),
            "awprot": Out(3),
            "awvalid": Out(1),
            "awready": In(1),
            "wdata": Out(data_width),
            "wstrb": Out(data_width // 8),
            "wvalid": Out(1),
            "wready": In(1),
            "bresp": In(Resp),
            "bvalid": In(1),
            "bready": Out(1),
            "araddr": Out(addr_width),
            "arprot": Out(3),
            "arvalid": Out(1),
            "arready": In(1),
            "rdata": In(data_width),
            "rresp": In(Resp),
            "rvalid": In(1),
            "rready": Out(1),
        })

    @property
    def addr_width(self):
        return self._addr_width

    @property
    def data_width(self):
        return self._data_width

    def __eq__(self, other):
        return (type(other) is type(self) and
                (self.addr_width, self.data_width) == (other.addr_width, other.data_width))

    def __hash__(self):
        return hash((type(self), self.addr_width, self.data_width))

    def __repr__(self):
        return f"AXI4LiteSignature({self.addr_width}, {self.data_width})"
