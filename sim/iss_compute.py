"""COMPUTE unit: CONV on the PE array and MISC (pooling, element-wise add, lookup), in numpy.

Each instruction gathers its tile (padding with ``pad_value``) into an im2col-like array and
reduces it with one float64 matmul: every sum of int8 x int8 products a CONV can encode
(< 2**45 in magnitude) is exact in float64, and the int32 wrap is applied afterwards, which
equals wrapping at every addition. The requantization is :mod:`vdla.sim.numerics`, the one
implementation shared with the layer reference.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from vdla import isa
from vdla.compiler.layout import unpack_post_params
from vdla.regs import Fault

from .iss_decode import TenantFault
from .numerics import post, post_add, wrap32

__all__ = ["execute_conv", "execute_misc", "conv_cycles", "misc_cycles", "lut_table"]

#: Pipeline fill/drain of the PE array and post-processing per instruction (cycle estimate).
_PIPELINE = 8
#: Cycles of a MISC LUT besides its CB lookups per entry, exactly as the RTL takes them
#: (acceptance, sequencer, buffer read, MISC lanes, result queue, lookup stages, done).
LUT_OVERHEAD = 24


def _check(name, start, entries, depth):
    if start + entries > depth:
        raise TenantFault(Fault.BUFFER, f"{name} entries {start}..{start + entries - 1} "
                                        f"outside {name} of {depth} entries")


def _windows(tile, kh, kw, stride, out_h, out_w, pad_top, pad_left, pad_value):
    """``(n, in_h, in_w, cb)`` tile -> ``(n, out_h, out_w, cb, kh, kw)`` windows, reading
    ``pad_value`` outside the stored tile."""
    n, in_h, in_w, cb = tile.shape
    rows = max(pad_top + in_h, (out_h - 1) * stride + kh)
    cols = max(pad_left + in_w, (out_w - 1) * stride + kw)
    padded = np.full((n, rows, cols, cb), pad_value, np.int8)
    padded[:, pad_top:pad_top + in_h, pad_left:pad_left + in_w] = tile
    view = sliding_window_view(padded, (kh, kw), axis=(1, 2))
    return view[:, :(out_h - 1) * stride + 1:stride, :(out_w - 1) * stride + 1:stride]


def _post_params(core, pbuf_addr, blocks):
    """Per-channel PostParams of ``blocks`` CB-channel blocks, shaped ``(blocks, 1, cb)``."""
    cb = core.cb
    raw = core.pbuf[pbuf_addr * isa.POST_BYTES:(pbuf_addr + blocks * cb) * isa.POST_BYTES]
    return {name: value.reshape(blocks, 1, cb) for name, value in unpack_post_params(raw).items()}


def _ibuf_tile(core, addr, blocks, h, w):
    cb = core.cb
    return core.ibuf[addr * cb:(addr + blocks * h * w) * cb].view(np.int8).reshape(blocks, h, w, cb)


def _write_obuf(core, addr, y):
    cb = core.cb
    core.obuf[addr * cb:addr * cb + y.size] = np.ascontiguousarray(y, np.int8).reshape(-1).view(np.uint8)


def execute_conv(core, setup, f):
    """One CONV with the frame's current SETUP state ``setup`` (a field dict)."""
    cb = core.cb
    kh, kw, stride, dw = setup["kh"], setup["kw"], setup["stride"], setup["dw"]
    n_icg = setup["n_icg"]
    n_ob, out_h, out_w = f["n_ob"], f["out_h"], f["out_w"]
    groups = n_ob if dw else n_icg
    pixels = out_h * out_w
    _check("IBUF", f["ibuf_addr"], groups * f["in_h"] * f["in_w"], core.config.ibuf_depth)
    _check("WBUF", f["wbuf_addr"], n_ob * kh * kw * n_icg, core.config.wbuf_depth)
    _check("OBUF", f["obuf_addr"], n_ob * pixels, core.config.obuf_depth)
    if f["acc_final"]:
        _check("PBUF", f["pbuf_addr"], n_ob * cb, core.config.pbuf_depth)

    tile = _ibuf_tile(core, f["ibuf_addr"], groups, f["in_h"], f["in_w"])
    win = _windows(tile, kh, kw, stride, out_h, out_w, f["pad_top"], f["pad_left"],
                   setup["pad_value"])                       # (g, oy, ox, i, ky, kx)
    wstart = f["wbuf_addr"] * cb * cb
    weights = core.wbuf[wstart:wstart + n_ob * kh * kw * n_icg * cb * cb].view(np.int8)
    weights = weights.reshape(n_ob, kh, kw, n_icg, cb, cb)   # (ob, ky, kx, g, o, i)
    if dw:
        # Output block ob reads input block ob only: a batched matmul over the blocks.
        cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(n_ob, pixels, kh * kw * cb)
        mat = weights[:, :, :, 0].transpose(0, 1, 2, 4, 3).reshape(n_ob, kh * kw * cb, cb)
        acc = np.matmul(cols.astype(np.float64), mat.astype(np.float64))
    else:
        cols = win.transpose(1, 2, 4, 5, 0, 3).reshape(pixels, kh * kw * n_icg * cb)
        mat = weights.transpose(1, 2, 3, 5, 0, 4).reshape(kh * kw * n_icg * cb, n_ob * cb)
        acc = (cols.astype(np.float64) @ mat.astype(np.float64))
        acc = acc.reshape(pixels, n_ob, cb).transpose(1, 0, 2)
    acc = np.rint(acc).astype(np.int64)                      # (ob, pixel, o), exact
    a0 = f["obuf_addr"]
    abuf = core.abuf[a0:a0 + n_ob * pixels].reshape(n_ob, pixels, cb)
    if not f["acc_init"]:
        acc += abuf
    acc = wrap32(acc)
    if f["acc_final"]:
        p = _post_params(core, f["pbuf_addr"], n_ob)
        _write_obuf(core, a0, post(acc, p["bias"], p["mult_a"], p["shift"], p["zp_out"],
                                   p["lo"], p["hi"]))
    else:
        abuf[...] = acc


def lut_table(core, pbuf_addr):
    """The int8 table of a MISC LUT: the :data:`isa.LUT_ENTRIES` PBUF entries from
    ``pbuf_addr`` read as 256 bytes, ``table[i]`` byte ``i % 16`` of entry ``i // 16``."""
    start = pbuf_addr * isa.POST_BYTES
    return core.pbuf[start:start + isa.LUT_ENTRIES * isa.POST_BYTES].view(np.int8)


def execute_misc(core, setup, f):
    """One MISC (MAXPOOL / AVGPOOL with the frame's SETUP state, ADD or LUT)."""
    cb = core.cb
    n_cb, out_h, out_w = f["n_cb"], f["out_h"], f["out_w"]
    entries = n_cb * out_h * out_w
    _check("OBUF", f["obuf_addr"], entries, core.config.obuf_depth)
    if f["func"] == isa.MiscFunc.LUT.value:
        _check("PBUF", f["pbuf_addr"], isa.LUT_ENTRIES, core.config.pbuf_depth)
        _check("IBUF", f["src_a"], entries, core.config.ibuf_depth)
        a = _ibuf_tile(core, f["src_a"], n_cb, out_h, out_w)
        table = lut_table(core, f["pbuf_addr"])
        _write_obuf(core, f["obuf_addr"], table[a.astype(np.int64) + 128])
        return
    _check("PBUF", f["pbuf_addr"], n_cb * cb, core.config.pbuf_depth)
    if f["func"] == isa.MiscFunc.ADD.value:
        _check("IBUF", f["src_a"], entries, core.config.ibuf_depth)
        _check("IBUF", f["src_b"], entries, core.config.ibuf_depth)
        shape = (n_cb, out_h * out_w, cb)
        a = _ibuf_tile(core, f["src_a"], n_cb, out_h, out_w).reshape(shape)
        b = _ibuf_tile(core, f["src_b"], n_cb, out_h, out_w).reshape(shape)
        p = _post_params(core, f["pbuf_addr"], n_cb)
        y = post_add(a, b, p["bias"], p["mult_a"], p["mult_b"], p["zp_a"], p["zp_b"],
                     p["shift"], p["zp_out"], p["lo"], p["hi"])
    else:
        _check("IBUF", f["src_a"], n_cb * f["in_h"] * f["in_w"], core.config.ibuf_depth)
        tile = _ibuf_tile(core, f["src_a"], n_cb, f["in_h"], f["in_w"])
        win = _windows(tile, setup["kh"], setup["kw"], setup["stride"], out_h, out_w,
                       f["pad_top"], f["pad_left"], setup["pad_value"])
        if f["func"] == isa.MiscFunc.MAXPOOL.value:
            acc = win.max(axis=(4, 5)).astype(np.int64)
        else:
            acc = win.astype(np.int64).sum(axis=(4, 5))
        p = _post_params(core, f["pbuf_addr"], n_cb)
        acc = acc.reshape(n_cb, out_h * out_w, cb)
        y = post(acc, p["bias"], p["mult_a"], p["shift"], p["zp_out"], p["lo"], p["hi"])
    _write_obuf(core, f["obuf_addr"], y)


def conv_cycles(setup, f, config):
    """PE-array cycles of a CONV: one input pixel-block per cycle, CB/OCP passes per block."""
    per_pixel = setup["kh"] * setup["kw"] * setup["n_icg"] * (config.icp // config.ocp)
    return f["n_ob"] * f["out_h"] * f["out_w"] * per_pixel + _PIPELINE


def misc_cycles(setup, f, config):
    """One IBUF entry (CB lanes) per cycle: a window per output entry, two entries for ADD;
    LUT looks up one lane per cycle (``CB`` cycles an entry)."""
    entries = f["n_cb"] * f["out_h"] * f["out_w"]
    if f["func"] == isa.MiscFunc.ADD.value:
        return 2 * entries + _PIPELINE
    if f["func"] == isa.MiscFunc.LUT.value:
        return config.cb * entries + LUT_OVERHEAD
    return entries * setup["kh"] * setup["kw"] + _PIPELINE
