"""LOAD / SAVE: the 3-D strided DMA between a tenant's DRAM segment and a core's buffers.

Both extents are checked before any byte moves, as the gateware does at issue: the DRAM
extent against the segment (fault SEGMENT) and then the buffer span against the buffer
(fault BUFFER). The copy itself is one numpy strided view of DRAM, so a LOAD of a whole tile
costs one array copy.
"""

import numpy as np

from vdla import isa
from vdla.regs import Fault

from .iss_decode import TenantFault

__all__ = ["Segment", "dram_extent", "dma_cycles", "execute_dma"]

_WORD = isa.WORD_BYTES


class Segment:
    """A tenant's view of DRAM: ``dram`` (the machine's uint8 array), ``base`` and ``size``."""

    __slots__ = ("dram", "base", "size")

    def __init__(self, dram, base, size):
        self.dram, self.base, self.size = dram, base, size


def dram_extent(f):
    """End (exclusive, bytes, segment-relative) of the DRAM words a LOAD/SAVE touches."""
    return f["dram_addr"] + _WORD * ((f["planes"] - 1) * f["plane_stride"]
                                     + (f["rows"] - 1) * f["row_stride"] + f["length"])


def dma_cycles(f, bus_bytes):
    """Estimated busy cycles: the beats on the bus plus a fixed cost per burst (one per row)."""
    words = f["planes"] * f["rows"] * f["length"]
    beats = -(-words * _WORD // bus_bytes)
    return beats + 4 * f["planes"] * f["rows"] + 16


def execute_dma(core, f, segment, is_load):
    """Run one LOAD (``is_load``) or SAVE with fields ``f`` on ``core`` (an ``iss_core.Core``)."""
    end = dram_extent(f)
    if end > segment.size:
        raise TenantFault(Fault.SEGMENT, f"DMA extent ends at segment byte 0x{end:x}, past the "
                                         f"segment size 0x{segment.size:x}")
    absolute = segment.base + f["dram_addr"]
    if segment.base + end > len(segment.dram):
        # Inside the segment but outside the memory the machine models: the host configured a
        # segment larger than DRAM. The bus would answer with an error; fault the same way.
        raise TenantFault(Fault.SEGMENT, f"DMA extent ends at DRAM byte 0x{segment.base + end:x},"
                                         f" past the {len(segment.dram)} bytes of DRAM")
    buffer, entry_bytes = core.dma_buffer(f["buf"])
    nbytes = _WORD * f["planes"] * f["rows"] * f["length"]
    start = f["buf_addr"] * entry_bytes
    if start + nbytes > len(buffer):
        name = isa.Buffer(f["buf"]).name
        raise TenantFault(Fault.BUFFER, f"DMA of {nbytes} bytes at {name} entry {f['buf_addr']} "
                                        f"overruns {name} ({len(buffer) // entry_bytes} entries)")
    view = np.ndarray((f["planes"], f["rows"], _WORD * f["length"]), np.uint8,
                      buffer=segment.dram, offset=absolute,
                      strides=(_WORD * f["plane_stride"], _WORD * f["row_stride"], 1))
    if is_load:
        buffer[start:start + nbytes] = view.reshape(-1)
    else:
        view[...] = buffer[start:start + nbytes].reshape(view.shape)
