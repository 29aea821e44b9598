"""Short encoders for the hand-written instruction sequences of the tests."""

from vdla import isa

#: ``E(opcode, deps, **fields)``: one instruction word.
E = isa.encode


def dma(op, buf, buf_addr, dram_addr, length, rows=1, planes=1, row_stride=0, plane_stride=0,
        deps=None):
    """A LOAD or SAVE word (``buf`` an :class:`isa.Buffer` or its value)."""
    return isa.encode(op, deps, buf=buf, buf_addr=buf_addr, dram_addr=dram_addr, length=length,
                      rows=rows, planes=planes, row_stride=row_stride, plane_stride=plane_stride)
