"""Instruction frames of one layer, from its tiling plan (see :mod:`.tiling`, :mod:`.frames`).

Buffer use inside a frame (entries of each buffer, halves alternate by the parity noted):

* mode A (weight-stationary): WBUF and PBUF from 0 hold the frame's weights / parameters for
  the whole frame; IBUF halves by tile (Conv: all input blocks of the tile) or by step
  (depthwise, pooling: the blocks of the step's output chunk); OBUF halves by chunk.
* mode B (output-stationary): PBUF from 0 for the frame; IBUF halves by input chunk (of a
  kernel row band, :mod:`.bands`), WBUF halves by step, OBUF holds every output chunk of the
  frame at its own place.
* Add: IBUF halves by chunk (operand A then B), OBUF halves by chunk, PBUF for the frame;
  a lookup the same with one operand, its table at PBUF 0; an upsampling likewise
  (:mod:`.upsample`).

A ConvTranspose's (or unequal-stride Conv's) frames are those of its phase convolutions, whose
SAVEs interleave.
A buffer whose frame uses only one unit of it is used whole.
"""

import dataclasses

from vdla import isa

from . import tiling
from .bands import band_tile, kernel_bands
from .errors import CompileError
from .dma import dma_fields
from .frames import Step
from .memplan import phase_offsets
from .upsample import resize_frames

__all__ = ["LayerAddrs", "layer_frames"]

_OP = isa.Opcode
_IB, _WB, _PB, _OB = isa.Buffer.IBUF, isa.Buffer.WBUF, isa.Buffer.PBUF, isa.Buffer.OBUF


@dataclasses.dataclass
class LayerAddrs:
    """DRAM byte offsets a layer's frames use."""
    inputs: list            # offsets of the input tensors (one; two for Add)
    output: int
    weights: int
    post: int


def _half(depth, index, halves):
    return (index % 2) * (depth // 2) if halves else 0


def _setup(g, n_icg=None, dw=False, kh=None):
    return {"kh": kh or g.kh, "kw": g.kw, "stride": g.stride, "n_icg": n_icg or 1,
            "pad_value": g.pad_value, "dw": int(dw)}


def _act_load(g, cfg, base, addr, block, nblk, t):
    """Input tile ``t`` of blocks ``block..block+nblk`` to IBUF entry ``base``."""
    ew = cfg.cb // 8
    dram = addr + ((block * g.H + t.y0) * g.W + t.x0) * cfg.cb
    return dma_fields(_IB, base, dram, t.in_w * ew, t.in_h, nblk, g.W * ew, g.H * g.W * ew,
                      cfg.cb)


def _act_save(g, cfg, base, addr, block, nblk, t):
    """Output tile ``t`` of blocks ``block..block+nblk`` from OBUF entry ``base``."""
    ew = cfg.cb // 8
    if g.place:
        return _phase_save(g, cfg, base, addr, block, nblk, t)
    dram = addr + ((block * g.OH + t.oy0) * g.OW + t.ox0) * cfg.cb
    return dma_fields(_OB, base, dram, t.tw * ew, t.th, nblk, g.OW * ew, g.OH * g.OW * ew,
                      cfg.cb)


def _phase_save(g, cfg, base, addr, block, nblk, t):
    """A phase tile: one SAVE per block, each pixel to every ``sx``-th pixel of every
    ``sy``-th row of the layer output (DRAM strides ``sx`` pixels / ``sy`` rows)."""
    a, b, oh, ow, sy, sx = g.place
    ew, out = cfg.cb // 8, []
    for j in range(nblk):
        dram = addr + (((block + j) * oh + a + sy * t.oy0) * ow + b + sx * t.ox0) * cfg.cb
        out += dma_fields(_OB, base + j * t.th * t.tw, dram, ew, t.tw, t.th, sx * ew,
                          sy * ow * ew, cfg.cb)
    return out


def _window(t):
    return {"out_h": t.th, "out_w": t.tw, "in_h": t.in_h, "in_w": t.in_w,
            "pad_top": t.pad_top, "pad_left": t.pad_left}


def _frame_a(g, cfg, plan, addrs, ob0, nob, tiles, pool_mode=None):
    cb, bw, kk = cfg.cb, cfg.cb * cfg.cb // 8, g.kh * g.kw
    chunks = [(j, min(plan.n_ob, nob - j)) for j in range(0, nob, plan.n_ob)]
    n_steps = len(tiles) * len(chunks)
    head = dma_fields(_PB, 0, addrs.post + ob0 * cb * isa.POST_BYTES, nob * cb * 2, cb=cb)
    if g.reduces:
        per = kk * g.icb * bw
        head = dma_fields(_WB, 0, addrs.weights + ob0 * per * 8, g.icb * bw, kk, nob,
                          g.icb * bw, per, cb) + head
        setup = _setup(g, g.icb)
    elif g.kind == "dw":
        head = dma_fields(_WB, 0, addrs.weights + ob0 * kk * bw * 8, nob * kk * bw, cb=cb) + head
        setup = _setup(g, 1, dw=True)
    else:
        setup = _setup(g)
    steps = []
    for ti, t in enumerate(tiles):
        if g.reduces:
            ibase = _half(cfg.ibuf_depth, ti, len(tiles) > 1)
            tile_loads = _act_load(g, cfg, ibase, addrs.inputs[0], 0, g.icb, t)
        for j, n in chunks:
            s = len(steps)
            step = Step(loads=head if s == 0 else [], wait_chunk=s - 2 if s >= 2 else None)
            obase = _half(cfg.obuf_depth, s, n_steps > 1)
            win = _window(t)
            if g.reduces:
                if j == 0:
                    # The IBUF half was last read by the previous tile but one.
                    step.loads = step.loads + tile_loads
                    step.wait_step = s - len(chunks) - 1
                op = (_OP.CONV, dict(win, ibuf_addr=ibase, wbuf_addr=j * kk * g.icb,
                                     pbuf_addr=j * cb, obuf_addr=obase, n_ob=n,
                                     acc_init=1, acc_final=1))
            else:
                ibase = _half(cfg.ibuf_depth, s, n_steps > 1)
                step.loads = step.loads + _act_load(g, cfg, ibase, addrs.inputs[0], ob0 + j, n, t)
                if g.kind == "dw":
                    op = (_OP.CONV, dict(win, ibuf_addr=ibase, wbuf_addr=j * kk, pbuf_addr=j * cb,
                                         obuf_addr=obase, n_ob=n, acc_init=1, acc_final=1))
                else:
                    func = isa.MiscFunc.MAXPOOL if pool_mode == "max" else isa.MiscFunc.AVGPOOL
                    op = (_OP.MISC, dict(win, func=func.value, src_a=ibase, src_b=0,
                                         obuf_addr=obase, pbuf_addr=j * cb, n_cb=n))
            step.computes = [op]
            step.saves = _act_save(g, cfg, obase, addrs.output, ob0 + j, n, t)
            steps.append(step)
    return setup, steps


def _frame_b(g, cfg, plan, addrs, ob0, nob, t):
    cb, bw, kk = cfg.cb, cfg.cb * cfg.cb // 8, g.kh * g.kw
    ichunks = [(i, min(plan.n_icg, g.icb - i)) for i in range(0, g.icb, plan.n_icg)]
    ochunks = [(j, min(plan.n_ob, nob - j)) for j in range(0, nob, plan.n_ob)]
    # Input chunks of each kernel row band (one band, the whole kernel, unless its weights
    # exceed a WBUF half); every chunk adds into the same ABUF entries.
    parts = [(ky0, r, band_tile(g, t, ky0, r) if plan.kr else t, i, ni)
             for ky0, r in kernel_bands(g.kh, plan.kr or g.kh) for i, ni in ichunks]
    n_steps = len(parts) * len(ochunks)
    row, per = g.icb * bw, kk * g.icb * bw
    setup = _setup(g, parts[0][4], kh=parts[0][1])
    steps = []
    for ii, (ky0, r, bt, i, ni) in enumerate(parts):
        ibase = _half(cfg.ibuf_depth, ii, len(parts) > 1)
        for j, n in ochunks:
            s = len(steps)
            wbase = _half(cfg.wbuf_depth, s, n_steps > 1)
            loads = []
            if s == 0:
                loads += dma_fields(_PB, 0, addrs.post + ob0 * cb * isa.POST_BYTES,
                                    nob * cb * 2, cb=cb)
            if j == 0:
                loads += _act_load(g, cfg, ibase, addrs.inputs[0], i, ni, bt)
            # Weights are [ob][ky][kx][icb] blocks: the band's rows are r * kw DMA rows.
            wdram = addrs.weights + ((ob0 + j) * per + ky0 * g.kw * row + i * bw) * 8
            loads += dma_fields(_WB, wbase, wdram, ni * bw, r * g.kw, n, row, per, cb)
            last = ii == len(parts) - 1
            obase = j * t.th * t.tw
            computes = []
            if j == 0 and ii and (ni, r) != (parts[ii - 1][4], parts[ii - 1][1]):
                computes.append((_OP.SETUP, _setup(g, ni, kh=r)))
            computes.append((_OP.CONV, dict(_window(bt), ibuf_addr=ibase, wbuf_addr=wbase,
                                            pbuf_addr=j * cb, obuf_addr=obase, n_ob=n,
                                            acc_init=int(ii == 0), acc_final=int(last))))
            saves = _act_save(g, cfg, obase, addrs.output, ob0 + j, n, t) if last else []
            steps.append(Step(loads, computes, saves))
    return setup, steps


def _frames_add(cfg, plan, addrs, lut=False):
    """Frames of an Add, or with ``lut`` of a lookup (its table loaded once per frame)."""
    cb, ew = cfg.cb, cfg.cb // 8
    plane = plan.ph * plan.pw
    out = []
    for frame in plan.frames:
        fb0 = plan.chunks[frame[0]][0]
        fb1 = max(plan.chunks[c][0] + plan.chunks[c][1] for c in frame)
        if lut:
            head = dma_fields(_PB, 0, addrs.post, isa.LUT_ENTRIES * 2, cb=cb)
        else:
            head = dma_fields(_PB, 0, addrs.post + fb0 * cb * isa.POST_BYTES,
                              (fb1 - fb0) * cb * 2, cb=cb)
        steps = []
        for s, c in enumerate(frame):
            b, nb, r, nr = plan.chunks[c]
            n = nb * nr * plan.pw
            first = (b * plane + r * plan.pw) * cb
            abase = _half(cfg.ibuf_depth, s, len(frame) > 1)
            obase = _half(cfg.obuf_depth, s, len(frame) > 1)
            loads = (head if s == 0 else []) + dma_fields(_IB, abase, addrs.inputs[0] + first,
                                                          n * ew, cb=cb)
            shape = {"obuf_addr": obase, "out_h": nr, "out_w": plan.pw, "n_cb": nb,
                     "in_h": 0, "in_w": 0, "pad_top": 0, "pad_left": 0}
            if lut:
                op = (_OP.MISC, dict(shape, func=isa.MiscFunc.LUT.value, src_a=abase, src_b=0,
                                     pbuf_addr=0))
            else:
                loads += dma_fields(_IB, abase + n, addrs.inputs[1] + first, n * ew, cb=cb)
                op = (_OP.MISC, dict(shape, func=isa.MiscFunc.ADD.value, src_a=abase,
                                     src_b=abase + n, pbuf_addr=(b - fb0) * cb))
            saves = dma_fields(_OB, obase, addrs.output + first, n * ew, cb=cb)
            steps.append(Step(loads, [op], saves, s - 2 if s >= 2 else None))
        setup = {"kh": 1, "kw": 1, "stride": 1, "n_icg": 1, "pad_value": 0, "dw": 0}
        out.append((setup, steps))
    return out


def layer_frames(layer, graph, cfg, addrs):
    """``(plan, [(setup fields, [Step])])`` of one IR layer (a ConvTranspose: a plan per
    phase); CompileError if it can't be tiled."""
    if layer.kind == "add":
        shape = graph.tensors[layer.output].shape
        for name in (layer.a, layer.b):
            if tuple(graph.tensors[name].shape) != tuple(shape):
                raise CompileError(f"layer {layer.name}: add of {name} "
                                          f"{graph.tensors[name].shape} to shape {shape}")
        plan = tiling.plan_add(layer.name, shape, cfg)
        return plan, _frames_add(cfg, plan, addrs)
    if layer.kind == "resize":
        return resize_frames(layer, graph, cfg, addrs)
    if layer.kind == "lut":
        plan = tiling.plan_add(layer.name, graph.tensors[layer.output].shape, cfg, lut=True)
        return plan, _frames_add(cfg, plan, addrs, lut=True)
    if layer.kind == "convt":
        return _convt_frames(layer, graph, cfg, addrs)
    g = tiling.geometry(layer, graph, cfg.cb)
    return _conv_frames(layer, g, cfg, addrs)


def _convt_frames(layer, graph, cfg, addrs):
    """A ConvTranspose: the frames of each phase's convolution, saved interleaved."""
    plans, frames = [], []
    offsets = phase_offsets(layer, graph, cfg.cb)
    for p, (w_off, p_off) in zip(layer.phases, offsets):
        g = tiling.phase_geometry(layer, p, graph, cfg.cb)
        plan, fr = _conv_frames(p.conv, g, cfg, LayerAddrs(addrs.inputs, addrs.output,
                                                           addrs.weights + w_off,
                                                           addrs.post + p_off))
        plans.append(plan)
        frames += fr
    return plans, frames


def _conv_frames(layer, g, cfg, addrs):
    plan = tiling.plan_layer(layer.name, g, cfg)
    frames = []
    for ob0, nob, tiles in tiling.conv_frames(g, plan):
        if plan.mode == "A":
            frames.append(_frame_a(g, cfg, plan, addrs, ob0, nob, tiles,
                                   getattr(layer, "mode", None)))
        else:
            frames.append(_frame_b(g, cfg, plan, addrs, ob0, nob, tiles[0]))
    return plan, frames
