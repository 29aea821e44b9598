"""Per-layer tiling: how a layer's output is cut into tiles, chunks and frames.

Two schemes cover Conv, depthwise Conv, Dense (a 1x1 convolution over one pixel) and Pool:

* **weight-stationary** (``mode "A"``): a frame owns ``F`` output channel blocks, whose
  weights and post-processing parameters are loaded once, and ``m`` spatial tiles. Per tile
  the input (all input channel blocks; for depthwise/pooling the blocks of each output chunk)
  goes to alternating IBUF halves; each output chunk of ``n_ob`` blocks is computed in one
  CONV / MISC into alternating OBUF halves and saved.
* **output-stationary** (``mode "B"``): a frame owns one spatial tile and ``F`` output blocks,
  whose outputs stay in OBUF (ABUF) while input channel chunks of ``n_icg`` blocks stream
  through IBUF halves and weight chunks ``n_ob`` x ``n_icg`` through WBUF halves, summed with
  ``acc_init`` / ``acc_final``. Used when the weights do not fit WBUF (big convolutions,
  fully connected layers). A kernel whose weights exceed a WBUF half on their own is also
  cut into row bands (:mod:`.bands`), each a chunk with its own input rows.

Candidates of both schemes are ranked by :func:`vdla.compiler.cost.layer_cost` of the
estimated frame cycles, which trades DMA traffic (a row split reloads weights, a channel split
reloads input), frame overhead and the spread of a layer's frames over up to 16 cores.
Element-wise Add and lookups are planned by :func:`plan_add`.
"""

import dataclasses

from vdla import isa

from .bands import band_tile, kernel_bands
from .cost import estimate_cycles, layer_cost
from .errors import CompileError
from .dma import MAX_LENGTH
from .layout import blocks

__all__ = ["Geometry", "Tile", "Plan", "AddPlan", "geometry", "tile_at", "plan_layer",
           "conv_frames", "plan_add", "phase_geometry", "MAX_HW"]

_CONV = isa.FIELDS["conv"]
MAX_HW = (1 << _CONV["out_h"][1]) - 1           # out_h/out_w/in_h/in_w field limit
MAX_PAD = (1 << _CONV["pad_top"][1]) - 1
MAX_NOB = (1 << _CONV["n_ob"][1]) - 1
MAX_ICG = (1 << isa.FIELDS["setup"]["n_icg"][1]) - 1
MAX_STRIDE = (1 << isa.FIELDS["setup"]["stride"][1]) - 1
MAX_KERNEL = (1 << isa.FIELDS["setup"]["kh"][1]) - 1


@dataclasses.dataclass
class Geometry:
    """A layer as the tiler sees it (channel counts in CB blocks)."""
    kind: str               # "conv", "dw", "pool" or "dense" (a 1x1 conv over one pixel)
    icb: int                # input channel blocks (dense: blocks of the flattened input)
    kb: int                 # output channel blocks
    H: int
    W: int
    OH: int
    OW: int
    kh: int
    kw: int
    stride: int
    pad_top: int
    pad_left: int
    pad_value: int
    #: ``(a, b, OH, OW, sy, sx)`` of a ConvTranspose phase: output pixel ``(y, x)`` goes to
    #: pixel ``(sy * y + a, sx * x + b)`` of the ``OH`` x ``OW`` layer output; None: ``(y, x)``.
    place: tuple = None

    @property
    def reduces(self):
        """True when each output block sums over all input blocks (Conv, Dense)."""
        return self.kind in ("conv", "dense")

    def span_h(self, th):
        return min(self.H, (th - 1) * self.stride + self.kh)

    def span_w(self, tw):
        return min(self.W, (tw - 1) * self.stride + self.kw)


@dataclasses.dataclass
class Tile:
    """An output tile and the stored input rows/columns it reads."""
    oy0: int
    th: int
    ox0: int
    tw: int
    y0: int
    in_h: int
    x0: int
    in_w: int
    pad_top: int
    pad_left: int


@dataclasses.dataclass
class Plan:
    mode: str               # "A" (weight-stationary) or "B" (output-stationary)
    F: int                  # output blocks per frame
    th: int
    tw: int
    n_ob: int               # output blocks per chunk
    n_icg: int              # input blocks per chunk (mode B)
    m: int                  # tiles per frame (mode A)
    cost: float = 0.0
    kr: int = 0             # kernel rows per band (mode B; 0: the whole kernel)


@dataclasses.dataclass
class AddPlan:
    """Element-wise add: each plane of ``H*W`` entries is viewed as ``ph`` x ``pw``."""
    ph: int
    pw: int
    chunks: list            # [(block, n_blocks, row, n_rows)], rows of the ph x pw view
    frames: list            # [[chunk index, ...]]


def _fail(layer, what):
    raise CompileError(f"layer {layer}: {what}")


def geometry(layer, graph, cb):
    """:class:`Geometry` of an IR Conv / Dense / Pool; raises CompileError if unsupported."""
    kind = layer.kind
    c, h, w = graph.tensors[layer.input].shape
    k, oh, ow = graph.tensors[layer.output].shape
    if kind == "dense":
        if (oh, ow) != (1, 1) or layer.weight.shape != (k, c * h * w):
            _fail(layer.name, f"dense weight {layer.weight.shape} does not match "
                              f"input {(c, h, w)} and output {(k, oh, ow)}")
        return Geometry("dense", blocks(c, cb) * h * w, blocks(k, cb), 1, 1, 1, 1, 1, 1, 1,
                        0, 0, 0)
    if kind == "conv":
        kh, kw = layer.kernel
        if layer.depthwise:
            if not (layer.groups == c == k and layer.weight.shape[1] == 1):
                _fail(layer.name, f"grouped convolution with groups={layer.groups} is only "
                                  f"supported as depthwise (groups = channels = {c})")
            kind = "dw"
        elif layer.weight.shape[:2] != (k, c):
            _fail(layer.name, f"weight {layer.weight.shape} does not match {c} -> {k} channels")
    else:
        kh, kw = layer.kernel
        if k != c:
            _fail(layer.name, f"pooling changes channels {c} -> {k}")
    top, left, bottom, right = layer.pads
    s = layer.stride
    if not (1 <= s <= MAX_STRIDE and 1 <= kh <= MAX_KERNEL and 1 <= kw <= MAX_KERNEL):
        _fail(layer.name, f"kernel {kh}x{kw} / stride {s} outside the ISA's range")
    if max(top, left) > MAX_PAD or min(layer.pads) < 0:
        _fail(layer.name, f"pads {tuple(layer.pads)} outside 0..{MAX_PAD}")
    if bottom >= kh or right >= kw:
        _fail(layer.name, f"bottom/right padding {bottom}/{right} must be smaller than the "
                          f"kernel {kh}x{kw}")
    if (oh, ow) != ((h + top + bottom - kh) // s + 1, (w + left + right - kw) // s + 1):
        _fail(layer.name, f"output {(oh, ow)} does not match input {(h, w)}, kernel "
                          f"{(kh, kw)}, stride {s}, pads {tuple(layer.pads)}")
    return Geometry(kind, blocks(c, cb), blocks(k, cb), h, w, oh, ow, kh, kw, s, top, left,
                    layer.pad_value)


def phase_geometry(layer, phase, graph, cb):
    """:class:`Geometry` of one phase of a ConvTranspose ``layer`` (its output pixels placed
    interleaved); bottom / right pads are implicit, as in :func:`tile_at`."""
    conv = phase.conv
    c, h, w = graph.tensors[layer.input].shape
    k, oh, ow = graph.tensors[layer.output].shape
    kh, kw = conv.kernel
    top, left = conv.pads[:2]
    shape = (k, 1) if conv.depthwise and conv.groups == c == k else (k, c)
    if not (1 <= kh <= MAX_KERNEL and 1 <= kw <= MAX_KERNEL and 0 <= min(top, left)
            and max(top, left) <= MAX_PAD and conv.weight.shape[:2] == shape
            and 1 <= conv.stride <= MAX_STRIDE):
        _fail(layer.name, f"phase {(phase.a, phase.b)}: kernel {kh}x{kw}, pads "
                          f"{tuple(conv.pads)} or weight {conv.weight.shape} not supported")
    return Geometry("dw" if conv.depthwise else "conv", blocks(c, cb), blocks(k, cb), h, w,
                    phase.rows, phase.cols, kh, kw, conv.stride, top, left, conv.pad_value,
                    (phase.a, phase.b, oh, ow, *phase.step))


def tile_at(g, oy0, th, ox0, tw):
    """The tile of output rows ``oy0..oy0+th`` and columns ``ox0..ox0+tw``."""
    def axis(o0, t, k, pad, n):
        lo = o0 * g.stride - pad
        hi = (o0 + t - 1) * g.stride - pad + k
        start = max(lo, 0)
        return start, min(hi, n) - start, start - lo
    y0, in_h, pt = axis(oy0, th, g.kh, g.pad_top, g.H)
    x0, in_w, pl = axis(ox0, tw, g.kw, g.pad_left, g.W)
    return Tile(oy0, th, ox0, tw, y0, in_h, x0, in_w, pt, pl)


def _grid(n, t):
    return [(o, min(t, n - o)) for o in range(0, n, t)]


def conv_frames(g, plan):
    """Frames of a plan: ``[(first output block, blocks, [Tile, ...])]``."""
    tiles = [tile_at(g, oy, th, ox, tw) for oy, th in _grid(g.OH, plan.th)
             for ox, tw in _grid(g.OW, plan.tw)]
    per = plan.m if plan.mode == "A" else 1
    return [(ob, nob, tiles[t:t + per]) for ob, nob in _grid(g.kb, plan.F)
            for t in range(0, len(tiles), per)]


def _balanced(n, limit):
    """Largest balanced chunk size <= limit: ``ceil(n / ceil(n / limit))``."""
    if limit < 1:
        return 0
    return -(-n // -(-n // limit))


def _splits(n, limit, extra=(1, 2, 4, 8, 16)):
    """Chunk sizes to try for ``n`` items with at most ``limit`` per chunk."""
    if limit < 1:
        return []
    base = -(-n // min(limit, n))
    # The fewest chunks, a few more, and counts that spread evenly over 4/8/16 cores.
    counts = {base, base + 1} | {base * e for e in extra} | {c for c in (4, 8, 16, 32, 64)
                                                               if c >= base}
    return sorted({-(-n // c) for c in counts if c <= n}, reverse=True)


def _max_fit(hi, fits):
    """Largest ``v`` in ``1..hi`` with ``fits(v)`` (monotone), or 0."""
    lo = 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _tile_limits(g):
    th_lim = min(g.OH, MAX_HW, (MAX_HW - g.kh) // g.stride + 1 if g.H > MAX_HW else MAX_HW)
    tw_lim = min(g.OW, MAX_HW, (MAX_HW - g.kw) // g.stride + 1 if g.W > MAX_HW else MAX_HW)
    return max(th_lim, 1), max(tw_lim, 1)


def _frame_cycles(cfg, compute, words, n_dma, n_compute, rows=0):
    return estimate_cycles(cfg, compute, words, 2 + n_dma + n_compute, n_dma, rows)


def _bursts(nblk, h, w, full_width, ew):
    """DMA bursts (rows) moving ``nblk`` planes of ``h`` x ``w`` entries."""
    return nblk * (1 if full_width and h * w * ew <= MAX_LENGTH else h)


def _candidates_a(g, cfg):
    cb, ew, bw = cfg.cb, cfg.cb // 8, cfg.cb * cfg.cb // 8
    kk = g.kh * g.kw
    wper = kk * g.icb if g.reduces else kk if g.kind == "dw" else 0
    f_lim = min(g.kb, cfg.pbuf_depth // cb, MAX_NOB, cfg.wbuf_depth // wper if wper else g.kb)
    if g.reduces and g.icb > MAX_ICG:
        return
    # PE cycles per output pixel and block.
    mac = kk if g.kind == "pool" else (cfg.cb // cfg.ocp) * (wper if g.reduces else kk)
    th_lim, tw_lim = _tile_limits(g)
    ib, ob = cfg.ibuf_depth, cfg.obuf_depth
    # Widest tile that fits at all (one output row, whole buffers).
    in_blocks = g.icb if g.reduces else 1
    tw_lim = _max_fit(tw_lim, lambda tw: in_blocks * g.span_h(1) * g.span_w(tw) <= ib
                      and tw <= ob)
    for F in _splits(g.kb, f_lim):
        for tw in _splits(g.OW, tw_lim, (1, 2, 4)):
            iw = g.span_w(tw)
            for single in (True, False):
                icap = ib if single else ib // 2
                ocap = ob if single else ob // 2
                if g.reduces:
                    fits = lambda th: g.icb * g.span_h(th) * iw <= icap and th * tw <= ocap
                else:
                    fits = lambda th: g.span_h(th) * iw <= icap and th * tw <= ocap
                th_max = _max_fit(th_lim, fits)
                for th in _splits(g.OH, th_max):
                    ih = g.span_h(th)
                    n_ob = min(F, ocap // (th * tw))
                    if not g.reduces:
                        n_ob = min(n_ob, icap // (ih * iw))
                    if single and n_ob < F:
                        continue
                    n_ob = _balanced(F, n_ob)
                    nj = -(-F // n_ob)
                    ntiles = -(-g.OH // th) * -(-g.OW // tw)
                    in_words = (g.icb if g.reduces else F) * ih * iw * ew
                    bursts = (_bursts(g.icb if g.reduces else F, ih, iw, iw == g.W, ew)
                              + _bursts(F, th, tw, tw == g.OW, ew))
                    per_tile = (th * tw * F * mac, in_words + F * th * tw * ew,
                                (1 if g.reduces else nj) + nj, nj, bursts)
                    fixed_words = F * wper * bw + F * cb * 2
                    for m in ([1] if single else _splits(ntiles, ntiles, (1, 2, 4, 8, 16, 32))):
                        fc = _frame_cycles(cfg, m * per_tile[0], fixed_words + m * per_tile[1],
                                           2 + m * per_tile[2], m * per_tile[3],
                                           F + 1 + m * per_tile[4])
                        n_frames = -(-g.kb // F) * -(-ntiles // m)
                        yield Plan("A", F, th, tw, n_ob, g.icb, m, layer_cost(n_frames, fc))


def _bands_encodable(g, th, kr):
    """Every band of every tile row keeps its top padding within the CONV field."""
    if kr == g.kh:
        return True
    probe = Tile(0, 0, 0, 1, 0, 0, 0, 0, 0, 0)
    return all(band_tile(g, dataclasses.replace(probe, oy0=oy, th=n), ky0, r).pad_top
               <= MAX_PAD for oy, n in _grid(g.OH, th) for ky0, r in kernel_bands(g.kh, kr))


def _candidates_b(g, cfg):
    cb, ew, bw = cfg.cb, cfg.cb // 8, cfg.cb * cfg.cb // 8
    kk = g.kh * g.kw
    f_lim = min(g.kb, cfg.pbuf_depth // cb, MAX_NOB)
    th_lim, tw_lim = _tile_limits(g)
    ib, wb = cfg.ibuf_depth, cfg.wbuf_depth
    # Kernel rows per band: the whole kernel when one input block's weights fit a WBUF half.
    kr = g.kh if kk <= wb // 2 else _balanced(g.kh, (wb // 2) // g.kw)
    if kr < 1:
        return
    nb, kkb = -(-g.kh // kr), kr * g.kw
    span_h = lambda th: min(g.H, (th - 1) * g.stride + kr)
    for F in _splits(g.kb, f_lim):
        tw_max = _max_fit(tw_lim, lambda tw: span_h(1) * g.span_w(tw) <= ib // 2
                          and tw * F <= cfg.obuf_depth)
        for tw in _splits(g.OW, tw_max, (1, 2, 4)):
            iw = g.span_w(tw)
            fits = lambda th: th * tw * F <= cfg.obuf_depth and span_h(th) * iw <= ib // 2
            for th in _splits(g.OH, _max_fit(th_lim, fits)):
                if not _bands_encodable(g, th, kr):
                    continue
                ih = span_h(th)
                single = (nb == 1 and g.icb * ih * iw <= ib and F * kk * g.icb <= wb
                          and g.icb <= MAX_ICG)
                if single:
                    n_icg, n_ob = g.icb, F
                else:
                    # Weight chunks go to WBUF halves; input chunks to IBUF halves unless
                    # the whole input tile fits and stays (bands: each reads its own rows).
                    n_icg = min(g.icb, (wb // 2) // kkb, MAX_ICG)
                    if nb > 1 or n_icg < g.icb or g.icb * ih * iw > ib:
                        n_icg = min(n_icg, (ib // 2) // (ih * iw))
                    n_icg = _balanced(g.icb, n_icg)
                    n_ob = _balanced(F, min(F, (wb // 2) // (kkb * n_icg)))
                ni = nb * -(-g.icb // n_icg)        # input chunks, over all bands
                nj = -(-F // n_ob)
                words = ((nb * g.icb * ih * iw + F * th * tw) * ew + F * kk * g.icb * bw
                         + F * cb * 2)
                bursts = (nb * _bursts(g.icb, ih, iw, iw == g.W, ew) + F * kkb * ni
                          + _bursts(F, th, tw, tw == g.OW, ew))
                fc = _frame_cycles(cfg, th * tw * F * kk * g.icb * (cb // cfg.ocp), words,
                                   1 + ni + ni * nj + nj, ni * nj + 1, bursts)
                n_frames = -(-g.kb // F) * -(-g.OH // th) * -(-g.OW // tw)
                yield Plan("B", F, th, tw, n_ob, n_icg, 1, layer_cost(n_frames, fc),
                           0 if nb == 1 else kr)


def plan_layer(name, g, cfg):
    """Best :class:`Plan` for a Conv / Dense / Pool geometry; CompileError if none fits."""
    cands = list(_candidates_a(g, cfg))
    if g.reduces:
        cands += list(_candidates_b(g, cfg))
    if not cands:
        _fail(name, f"cannot be tiled for configuration {cfg.name!r} (kernel {g.kh}x{g.kw}, "
                    f"{g.icb} input / {g.kb} output channel blocks, input {g.H}x{g.W}: "
                    f"IBUF {cfg.ibuf_depth}, WBUF {cfg.wbuf_depth}, OBUF {cfg.obuf_depth} "
                    f"entries are too small)")
    return min(cands, key=lambda p: p.cost)


def _plane_view(n, limit):
    """``(ph, pw)`` with ``ph * pw == n`` and the widest ``pw <= limit``."""
    for pw in range(min(n, limit), 0, -1):
        if n % pw == 0:
            return n // pw, pw
    return n, 1


def plan_add(name, shape, cfg, lut=False):
    """Chunks and frames of an element-wise Add over a ``(C, H, W)`` tensor, or with ``lut``
    of a lookup (one operand, one table in PBUF for the whole frame, CB cycles an entry)."""
    cb, ew = cfg.cb, cfg.cb // 8
    nb = blocks(shape[0], cb)
    operands = 1 if lut else 2
    single_cap = min(cfg.ibuf_depth // operands, cfg.obuf_depth)     # one step
    multi_cap = min(cfg.ibuf_depth // (2 * operands), cfg.obuf_depth // 2)  # ... in halves
    ph, pw = _plane_view(shape[1] * shape[2], min(MAX_HW, multi_cap))
    pb = MAX_NOB if lut else min(cfg.pbuf_depth // cb, MAX_NOB)
    param_words = isa.LUT_ENTRIES * 2 if lut else pb * cb * 2
    lanes = cb if lut else 1

    def chunkings():
        # Whole planes (several blocks a chunk) when a plane fits, else bands of view rows;
        # a single-chunk layer may use whole buffers.
        for cap in (single_cap, multi_cap):
            if ph <= MAX_HW and ph * pw <= cap:
                for per in _splits(nb, min(pb, cap // (ph * pw))):
                    yield cap, [(b, min(per, nb - b), 0, ph) for b in range(0, nb, per)]
            for rows in _splits(ph, min(MAX_HW, cap // pw), (1, 2, 4)):
                yield cap, [(b, 1, r, min(rows, ph - r)) for b in range(nb)
                            for r in range(0, ph, rows)]

    best = None
    for cap, chunks in chunkings():
        # Chunks sized for whole buffers need a frame each.
        ks = [1] if cap != multi_cap else _splits(len(chunks), len(chunks),
                                                  (1, 2, 4, 8, 16, 32, 64))
        for k in ks:
            entries = sum(n * r for _, n, _, r in chunks[:k]) * pw
            dma = (operands + 1) * k + 1
            fc = _frame_cycles(cfg, lanes * entries,
                               (operands + 1) * entries * ew + param_words, dma, k, dma)
            cost = layer_cost(-(-len(chunks) // k), fc)
            if best is None or cost < best[0]:
                best = (cost, k, chunks)
    if best is None:
        _fail(name, f"cannot be tiled for configuration {cfg.name!r}")
    _, k, chunks = best
    frames, cur = [], []
    for i, (b, n, _, _) in enumerate(chunks):
        if cur and (len(cur) == k or b + n - chunks[cur[0]][0] > pb):
            frames.append(cur)
            cur = []
        cur.append(i)
    frames.append(cur)
    return AddPlan(ph, pw, chunks, frames)
