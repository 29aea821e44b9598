"""Data passed between the stages of the COMPUTE unit.

An accepted CONV or MISC becomes a :class:`Job`: the loop bounds and base addresses of one
normalized loop nest (see :mod:`.sequencer`), fixed while it runs. Every beat and result
carries a :class:`Tag` that says where its result goes.
"""

from amaranth.hdl import signed, unsigned
from amaranth.lib import data, enum

from vdla import isa

__all__ = ["Kind", "Job", "Tag"]



def _width(view, field):
    """Width of an instruction field: the job fields hold decoded ISA fields unchanged."""
    return isa.FIELDS[view][field][1]

class Kind(enum.Enum, shape=2):
    """What the datapath behind the sequencer does with the beats."""
    CONV = 0    #: PE array, then ABUF or post-processing
    POOL = 1    #: MISC MAXPOOL / AVGPOOL: window max / sum per lane
    ADD = 2     #: MISC ADD: an entry of A then the same entry of B
    LUT = 3     #: MISC LUT: an entry per beat, its lanes looked up in the PBUF table


class Job(data.Struct):
    """One accepted CONV or MISC, as the loop nest

    ``for blk, oy, ox, p, ky, kx, g`` over ``n_blk x out_h x out_w x passes x kh x kw x ng``.

    Pooling is a depthwise window without weights; ADD is a ``1 x 2`` window over an input of
    the output's size whose second column reads ``src_b`` instead (no padding); LUT a ``1 x 1``
    window over an input of the output's size.
    """
    kind: Kind
    func: isa.MiscFunc
    dw: 1               #: the input block follows the output block (depthwise CONV, pooling, ADD)
    acc_init: 1         #: CONV accumulators start from 0, not from ABUF
    acc_final: 1        #: results are post-processed into OBUF (always for MISC)
    n_blk: unsigned(_width("conv", "n_ob"))
    out_h: unsigned(_width("conv", "out_h"))
    out_w: unsigned(_width("conv", "out_w"))
    in_h: unsigned(_width("conv", "in_h"))
    in_w: unsigned(_width("conv", "in_w"))
    kh: unsigned(_width("setup", "kh"))
    kw: unsigned(_width("setup", "kw"))
    ng: unsigned(_width("setup", "n_icg"))
    stride: unsigned(_width("setup", "stride"))
    pad_top: unsigned(_width("conv", "pad_top"))
    pad_left: unsigned(_width("conv", "pad_left"))
    pad_value: signed(_width("setup", "pad_value"))
    src_a: unsigned(_width("misc", "src_a"))
    src_b: unsigned(_width("misc", "src_b"))
    wbuf_addr: unsigned(_width("conv", "wbuf_addr"))
    pbuf_addr: unsigned(_width("conv", "pbuf_addr"))
    obuf_addr: unsigned(_width("conv", "obuf_addr"))
    # Derived at accept time (addresses are computed modulo 2**16; valid ones are < 2**14).
    plane: unsigned(16)         #: in_h * in_w: entries per input block
    row_step: unsigned(16)      #: stride * in_w
    blk_weights: unsigned(16)   #: kh * kw * ng: weight blocks per output block
    origin: unsigned(16)        #: src_a - pad_top * in_w - pad_left: entry of window (0, 0)


class Tag(data.Struct):
    """Destination of a result: OBUF / ABUF entry ``addr``, lanes of pass ``p``; ``blk_last``
    ends an output block (its post-processing parameters may be replaced), ``final`` ends the
    instruction."""
    addr: unsigned(_width("conv", "obuf_addr"))
    p: unsigned(6)
    blk_last: 1
    final: 1
