"""The vdla instruction set: the one definition used by compiler, golden model and gateware.

Every instruction is one 128-bit word: a 4-bit :class:`Opcode`, 4 dependency flags
(:class:`Deps`) and a 120-bit body whose layout depends on the opcode (:class:`Body`).
The compiler encodes with :func:`encode` (bit-identical to ``Insn.const(...).as_bits()``), the disassembler and
the golden model decode with :func:`decode` / :data:`FIELDS`, and the gateware switches on
``insn.opcode`` of a ``Signal(Insn)``.

Units of measure used throughout:

* a *word* is :data:`WORD_BYTES` (8) bytes: the DMA transfer unit; DRAM byte addresses of
  LOAD/SAVE are multiples of it;
* the *channel block* ``CB`` (``Config.cb``, equal to the PE array's input parallelism ICP) is
  the number of int8 channels stored together; activations in DRAM and on chip are laid out as
  ``[C/CB][H][W][CB]`` (channels padded up to a multiple of CB);
* on-chip buffers are addressed in their own native entries: IBUF and OBUF hold one CB-channel
  pixel (CB bytes) per entry, WBUF one CB x CB weight block (row-major ``[oc][ic]``), PBUF one
  :class:`PostParams` (16 bytes) per output channel. OBUF entries have an int32 twin, the
  accumulator ABUF, at the same index.

Faults (:class:`vdla.regs.Fault`) stop only the tenant that caused them. An instruction that
faults has no effect (a DMA's whole extent is checked before its first beat); the other
instructions of its frame that do not wait for it through tokens, before or after it, may or
may not have executed (the units run in parallel). When a tenant starts, the buffers of its
cores are zeroed, so nothing of a core's previous owner can be read.

Only this module and :mod:`vdla.config` are imported by every part of the project.
"""

from amaranth.hdl import signed, unsigned
from amaranth.lib import data, enum

__all__ = [
    "ISA_VERSION", "WORD_BYTES", "INSN_BITS", "INSN_BYTES", "POST_BYTES", "LUT_ENTRIES",
    "Opcode", "Buffer", "MiscFunc", "Unit", "Deps",
    "DmaFields", "SetupFields", "ConvFields", "MiscFields", "FrameFields", "SyncFields",
    "StreamFields", "Body", "Insn", "PostParams", "BODY_OF", "UNIT_OF",
    "encode", "encode_const", "decode", "reserved_mask", "flat_fields", "FIELDS", "POST_FIELDS", "pack_fields", "unpack_fields",
]

#: Bumped whenever an encoding or a semantic rule below changes; part of every config hash.
ISA_VERSION = 3
#: Bytes per DMA word (unit of LOAD/SAVE lengths and strides).
WORD_BYTES = 8
INSN_BITS = 128
INSN_BYTES = INSN_BITS // 8
POST_BYTES = 16
#: Entries of one int8 lookup table of MISC LUT: 256 bytes in 16-byte PBUF entries.
LUT_ENTRIES = 256 // POST_BYTES


class Opcode(enum.Enum, shape=4):
    """Instruction class. Encodings not listed (and 0, so that zeroed memory traps) are illegal."""
    INVALID = 0
    LOAD = 1
    SAVE = 2
    SETUP = 3
    CONV = 4
    MISC = 5
    FRAME = 8
    SYNC = 9
    END = 10
    STREAM = 11


class Buffer(enum.Enum, shape=2):
    """On-chip buffer selected by a LOAD (IBUF, WBUF, PBUF) or a SAVE (OBUF only)."""
    IBUF = 0
    WBUF = 1
    PBUF = 2
    OBUF = 3


class MiscFunc(enum.Enum, shape=2):
    """Operation of a MISC instruction."""
    MAXPOOL = 0
    AVGPOOL = 1
    ADD = 2
    LUT = 3


class Unit(enum.Enum, shape=2):
    """Execution unit of a core that an opcode is issued to by the second-level dispatch."""
    LOAD = 0
    COMPUTE = 1
    SAVE = 2
    CONTROL = 3


class Deps(data.Struct):
    """Dependency-token flags (one FIFO token queue per direction between adjacent units).

    The units form a chain LOAD -> COMPUTE -> SAVE. ``prev``/``next`` name the neighbour unit
    upstream/downstream of the instruction's own unit. ``pop_*`` waits for (and consumes) a token
    pushed by that neighbour before the instruction starts; ``push_*`` gives one to it when the
    instruction has finished (for SAVE: when every write is acknowledged). LOAD has no ``prev``
    and SAVE no ``next``: those flags are illegal there, as is any flag on SETUP and on control
    instructions. Token queues are empty at every FRAME; a frame must leave them empty.
    """
    pop_prev: 1
    pop_next: 1
    push_prev: 1
    push_next: 1


class DmaFields(data.Struct):
    """LOAD (DRAM -> IBUF/WBUF/PBUF) and SAVE (OBUF -> DRAM): a 3-D strided copy.

    For ``p < planes``, ``r < rows``, ``i < length``, word ``k = (p*rows + r)*length + i`` of the
    buffer side (counted in 8-byte words from entry ``buf_addr`` of ``buf``; entries of WBUF span
    CB*CB/8 words and of PBUF 2 words) is copied to/from the DRAM word at byte offset
    ``dram_addr + 8*(p*plane_stride + r*row_stride + i)`` of the tenant's segment.
    The whole extent is checked against the segment size before the first beat is issued: an
    access past the segment faults the tenant (SEGMENT) and moves no data. ``length``, ``rows``
    and ``planes`` are >= 1, ``dram_addr`` is a multiple of 8, and the buffer span must lie
    inside the buffer (else BUFFER fault).
    """
    buf: Buffer
    buf_addr: unsigned(14)
    dram_addr: unsigned(32)
    length: unsigned(10)
    rows: unsigned(10)
    planes: unsigned(9)
    row_stride: unsigned(16)
    plane_stride: unsigned(24)


class SetupFields(data.Struct):
    """SETUP: window geometry used by the following CONV and MISC instructions of the frame.

    ``kh`` x ``kw`` kernel (both >= 1), ``stride`` >= 1 (both directions), ``n_icg`` input channel
    blocks summed by each CONV (>= 1; must be 1 when ``dw``), ``pad_value``: the int8 value read
    for window positions outside the stored input tile (the input zero point for convolution and
    average pooling, -128 for max pooling). ``dw`` selects depthwise convolution: output block
    ``ob`` reads input block ``ob`` only, with a diagonal weight block. The state is cleared at
    each FRAME; a CONV or pooling MISC before a SETUP in its frame is illegal.
    """
    kh: unsigned(8)
    kw: unsigned(8)
    stride: unsigned(4)
    n_icg: unsigned(12)
    pad_value: signed(8)
    dw: 1


class ConvFields(data.Struct):
    """CONV: convolution of one tile on the PE array (also fully-connected, as a 1x1 kernel).

    Input tile in IBUF at ``ibuf_addr``, layout ``[n_icg][in_h][in_w]`` (``[n_ob][in_h][in_w]``
    when depthwise). Weights in WBUF at ``wbuf_addr``, block ``((ob*kh + ky)*kw + kx)*n_icg + g``.
    Output tile ``[n_ob][out_h][out_w]`` at ``obuf_addr`` of OBUF (int8) / ABUF (int32).
    For each output block ``ob``, pixel ``(oy, ox)`` and lane ``o``::

        acc = 0 if acc_init else ABUF[...][o]
        acc += sum over ky, kx, g, i of X[g][oy*stride + ky - pad_top][ox*stride + kx - pad_left][i]
                                       * W[ob, ky, kx, g][o][i]        (int32, wrapping)

    where X reads ``pad_value`` outside ``0 <= y < in_h``, ``0 <= x < in_w``. Without
    ``acc_final`` the sum goes back to ABUF; with it, OBUF receives
    ``post(acc, PBUF[pbuf_addr + ob*CB + o])`` (see :class:`PostParams`) and ABUF is left
unchanged.
    ``out_h``, ``out_w``, ``n_ob`` >= 1.
    """
    ibuf_addr: unsigned(14)
    wbuf_addr: unsigned(12)
    pbuf_addr: unsigned(12)
    obuf_addr: unsigned(14)
    out_h: unsigned(8)
    out_w: unsigned(8)
    n_ob: unsigned(10)
    in_h: unsigned(8)
    in_w: unsigned(8)
    pad_top: unsigned(4)
    pad_left: unsigned(4)
    acc_init: 1
    acc_final: 1


class MiscFields(data.Struct):
    """MISC: pooling, element-wise addition and table lookup on IBUF tiles, results to OBUF.

    MAXPOOL / AVGPOOL: input ``[n_cb][in_h][in_w]`` at ``src_a``, output ``[n_cb][out_h][out_w]``
    at ``obuf_addr``; the window (kernel, stride, ``pad_value``) comes from SETUP; ``acc`` is the
    maximum (MAXPOOL) or the int32 sum (AVGPOOL) of the window's int8 values; OBUF receives
    ``post(acc, PBUF[pbuf_addr + cb*CB + lane])``.
    ADD: for every entry ``e < n_cb*out_h*out_w`` of the tiles at ``src_a`` and ``src_b``
    (same layout as the output), OBUF receives ``post_add(A[e], B[e], PBUF[pbuf_addr + cb*CB +
    lane])`` with ``cb = e // (out_h*out_w)``.
    LUT: for every entry ``e < n_cb*out_h*out_w`` of the tile at ``src_a`` (same layout as the
    output) and every lane, OBUF entry ``obuf_addr + e`` receives ``table[A[e][lane] + 128]``,
    where the 256-byte int8 ``table`` (one for the whole tile, every channel) fills the
    :data:`LUT_ENTRIES` (16) PBUF entries from ``pbuf_addr``: ``table[i]`` is byte ``i % 16``
    (byte 0 holding bits 7:0) of PBUF entry ``pbuf_addr + i // 16``. Those entries must lie
    inside PBUF (else BUFFER fault), whatever ``n_cb``. It takes ``CB`` cycles per entry.
    ``src_b``, ``in_h``, ``in_w``, ``pad_top`` and ``pad_left`` are ignored by ADD and LUT,
    which need no SETUP.
    """
    func: MiscFunc
    src_a: unsigned(14)
    src_b: unsigned(14)
    obuf_addr: unsigned(14)
    pbuf_addr: unsigned(12)
    out_h: unsigned(8)
    out_w: unsigned(8)
    n_cb: unsigned(10)
    in_h: unsigned(8)
    in_w: unsigned(8)
    pad_top: unsigned(4)
    pad_left: unsigned(4)


class FrameFields(data.Struct):
    """FRAME: starts an instruction frame (the unit of work a core takes on).

    The core waits until every unit is idle and every DRAM write of the previous frame is
    acknowledged, then clears the token queues and the SETUP state. ``frame`` is the index in the
    IFP's frame table and ``layer`` its layer (for status and tracing). Tokens a frame left
    behind are discarded. LOAD, SAVE, SETUP, CONV and MISC are legal only inside a frame (after
    a FRAME and before the next SYNC or END). A tenant's stop request takes effect at a frame
    boundary.
    """
    frame: unsigned(32)
    layer: unsigned(16)


class SyncFields(data.Struct):
    """SYNC: barrier of the tenant's virtual cores (handled by the first-level dispatch).

    A core's stream proceeds past SYNC ``barrier`` only when every virtual core of the tenant has
    reached its own SYNC with the same number and has retired all earlier work.
    """
    barrier: unsigned(16)


class StreamFields(data.Struct):
    """STREAM: header word ``vcore`` of a linked program (words 0..count-1 of the region).

    The stream of virtual core ``vcore`` starts ``offset`` words into the program region.
    ``count`` is the number of virtual cores the program was linked for; a tenant whose core
    mask has another number of cores faults (CORES) at start. END closes each stream; when all
    of a tenant's streams have ended, one inference is complete.
    """
    vcore: unsigned(8)
    count: unsigned(8)
    offset: unsigned(24)


class Body(data.Union):
    """Per-opcode fields (120 bits)."""
    dma: DmaFields
    setup: SetupFields
    conv: ConvFields
    misc: MiscFields
    frame: FrameFields
    sync: SyncFields
    stream: StreamFields
    raw: unsigned(120)


class Insn(data.Struct):
    """One 128-bit instruction word. The body bits an opcode's view does not define are
    reserved and must be zero: a word with any set is ILLEGAL (a STREAM header, CORES)."""
    opcode: Opcode
    deps: Deps
    body: Body


class PostParams(data.Struct):
    """One PBUF entry (16 bytes, one per output channel): requantization of an accumulator.

    ``post(acc)`` for CONV / pooling, and ``post_add(a, b)`` for ADD::

        v = wrap32(acc + bias) * mult_a                            (CONV, MAXPOOL, AVGPOOL)
        v = (a - zp_a) * mult_a + (b - zp_b) * mult_b + bias       (ADD)
        y = clamp(zp_out + ((v + ((1 << shift) >> 1)) >> shift), lo, hi)

    with exact integer arithmetic and an arithmetic (flooring) shift, so a tie rounds up.
    ``lo`` / ``hi`` encode ReLU and ReLU6 as well as the int8 range.
    """
    bias: signed(32)
    mult_a: unsigned(16)
    mult_b: unsigned(16)
    shift: unsigned(6)
    zp_out: signed(8)
    lo: signed(8)
    hi: signed(8)
    zp_a: signed(8)
    zp_b: signed(8)
    reserved: unsigned(18)


#: Which body view an opcode uses.
BODY_OF = {
    Opcode.LOAD: "dma", Opcode.SAVE: "dma", Opcode.SETUP: "setup", Opcode.CONV: "conv",
    Opcode.MISC: "misc", Opcode.FRAME: "frame", Opcode.SYNC: "sync", Opcode.END: None,
    Opcode.STREAM: "stream",
}

#: Which unit executes an opcode.
UNIT_OF = {
    Opcode.LOAD: Unit.LOAD, Opcode.SAVE: Unit.SAVE, Opcode.SETUP: Unit.COMPUTE,
    Opcode.CONV: Unit.COMPUTE, Opcode.MISC: Unit.COMPUTE, Opcode.FRAME: Unit.CONTROL,
    Opcode.SYNC: Unit.CONTROL, Opcode.END: Unit.CONTROL, Opcode.STREAM: Unit.CONTROL,
}


def reserved_mask(opcode):
    """Bits of an ``opcode`` word that its body does not define (all of END's body): they must
    be zero, and a word with any of them set is ILLEGAL (a STREAM header with any set does
    not check out: CORES). Zero, not "ignored", so that no encoding space is ever taken by a
    program that happens to run, and both models refuse the same words."""
    insn = data.Layout.cast(Insn)
    body = insn["body"]
    view = BODY_OF[Opcode(opcode)]
    used = data.Layout.cast(body.shape)[view].width if view else 0
    return ((1 << INSN_BITS) - 1) & ~((1 << (body.offset + used)) - 1)


def encode(opcode, deps=None, **fields):
    """Encode one instruction as an int; ``deps`` is a dict of :class:`Deps` flags.

    Bit-identical to ``Insn.const(...).as_bits()`` (checked by the tests) but packs through
    :data:`FIELDS`, which is ~100x faster: the compiler emits tens of thousands of words.
    """
    opcode = Opcode(opcode)
    view = BODY_OF[opcode]
    if view is None and fields:
        raise ValueError(f"{opcode.name} takes no fields, not {sorted(fields)!r}")
    head = {"opcode": opcode.value}
    head.update({f"deps.{flag}": int(bool(on)) for flag, on in (deps or {}).items()})
    word = pack_fields(FIELDS["head"], head)
    return word | pack_fields(FIELDS[view], fields) if view else word


def encode_const(opcode, deps=None, **fields):
    """Reference encoder through ``Insn.const`` (slow; used to check :func:`encode`)."""
    opcode = Opcode(opcode)
    view = BODY_OF[opcode]
    init = {"opcode": opcode, "deps": deps or {}}
    if view is not None:
        init["body"] = {view: fields}
    return Insn.const(init).as_bits()


def decode(word):
    """Decode an int into an ``Insn`` constant view (``.opcode``, ``.deps``, ``.body.conv``...)."""
    return Insn.from_bits(word)


def flat_fields(layout, prefix="", offset=0):
    """Flatten a layout into ``{dotted name: (offset, width, signed)}`` for fast bit access."""
    table = {}
    for name, field in data.Layout.cast(layout):
        shape = field.shape
        path = f"{prefix}{name}"
        if isinstance(shape, type) and issubclass(shape, (data.Struct, data.Union)):
            table.update(flat_fields(shape, f"{path}.", offset + field.offset))
        else:
            cast = data.Layout.cast(shape) if isinstance(shape, data.Layout) else None
            if cast is not None:
                table.update(flat_fields(cast, f"{path}.", offset + field.offset))
                continue
            sig = shape.as_shape() if hasattr(shape, "as_shape") else shape
            sig = unsigned(sig) if isinstance(sig, int) else sig
            table[path] = (offset + field.offset, field.width, bool(getattr(sig, "signed", False)))
    return table


def _per_view(table, prefix):
    return {name[len(prefix):]: spec for name, spec in table.items() if name.startswith(prefix)}


_INSN_TABLE = flat_fields(Insn)
#: ``{view: {field: (offset, width, signed)}}`` for the body views, plus ``"head"`` for the
#: opcode and dependency flags: derived from :class:`Insn`, used where speed matters.
FIELDS = {view: _per_view(_INSN_TABLE, f"body.{view}.") for view, _ in data.Layout.cast(Body)
          if view != "raw"}
FIELDS["head"] = {name: spec for name, spec in _INSN_TABLE.items() if not name.startswith("body.")}
#: Bit positions of the :class:`PostParams` fields.
POST_FIELDS = flat_fields(PostParams)


def pack_fields(table, values):
    """Pack ``values`` (dict of ints) into an int using a table from :data:`FIELDS`."""
    word = 0
    for name, value in values.items():
        off, width, is_signed = table[name]
        value = int(value.value if isinstance(value, enum.Enum) else value)
        lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if is_signed else (0, (1 << width) - 1)
        if not lo <= value <= hi:
            raise ValueError(f"field {name}={value} does not fit {width} bits")
        word |= (value & ((1 << width) - 1)) << off
    return word


def unpack_fields(table, word):
    """Unpack every field of ``table`` from the int ``word`` into a dict of ints."""
    out = {}
    for name, (off, width, is_signed) in table.items():
        value = (word >> off) & ((1 << width) - 1)
        if is_signed and value >> (width - 1):
            value -= 1 << width
        out[name] = value
    return out
