"""Data layouts in DRAM and on-chip buffers (see vdla.isa for the addressing rules).

* activations: int8 ``[C/CB][H][W][CB]``, channels zero-padded to a multiple of CB;
* convolution weights: int8 blocks ``[K/CB][kh][kw][C/CB][CB oc][CB ic]`` (one WBUF entry per
  block); depthwise weights as diagonal blocks ``[C/CB][kh][kw][CB][CB]``;
* post-processing parameters: one 16-byte :class:`vdla.isa.PostParams` per output channel.
"""

import numpy as np

from vdla import isa

__all__ = ["pad_to", "blocks", "to_blocked", "from_blocked", "conv_weight_blocks",
           "dw_weight_blocks", "dense_weight_matrix", "post_params", "unpack_post_params"]


def pad_to(n, multiple):
    return -(-n // multiple) * multiple


def blocks(channels, cb):
    """Number of CB-channel blocks holding ``channels``."""
    return -(-channels // cb)


def to_blocked(x, cb):
    """int8 ``(C, H, W)`` -> flat uint8 bytes in ``[C/CB][H][W][CB]`` order (pad lanes 0)."""
    x = np.asarray(x, np.int8)
    c, h, w = x.shape
    nb = blocks(c, cb)
    out = np.zeros((nb * cb, h, w), np.int8)
    out[:c] = x
    return out.reshape(nb, cb, h, w).transpose(0, 2, 3, 1).reshape(-1).view(np.uint8)


def from_blocked(buf, shape, cb):
    """Inverse of :func:`to_blocked`: bytes -> int8 ``(C, H, W)`` (pad lanes dropped)."""
    c, h, w = shape
    nb = blocks(c, cb)
    arr = np.asarray(buf, np.uint8)[: nb * cb * h * w].view(np.int8)
    return arr.reshape(nb, h, w, cb).transpose(0, 3, 1, 2).reshape(nb * cb, h, w)[:c].copy()


def conv_weight_blocks(weight, cb):
    """int8 ``(K, C, kh, kw)`` -> ``(K/CB, kh, kw, C/CB, CB, CB)`` blocks, zero padded."""
    weight = np.asarray(weight, np.int8)
    k, c, kh, kw = weight.shape
    kb, icb = blocks(k, cb), blocks(c, cb)
    padded = np.zeros((kb * cb, icb * cb, kh, kw), np.int8)
    padded[:k, :c] = weight
    # (ob, o, g, i, ky, kx) -> (ob, ky, kx, g, o, i)
    return padded.reshape(kb, cb, icb, cb, kh, kw).transpose(0, 4, 5, 2, 1, 3).copy()


def dw_weight_blocks(weight, cb):
    """Depthwise int8 ``(C, 1, kh, kw)`` -> diagonal blocks ``(C/CB, kh, kw, CB, CB)``."""
    weight = np.asarray(weight, np.int8)
    c, _, kh, kw = weight.shape
    nb = blocks(c, cb)
    padded = np.zeros((nb * cb, kh, kw), np.int8)
    padded[:c] = weight[:, 0]
    per_block = padded.reshape(nb, cb, kh, kw).transpose(0, 2, 3, 1)   # (b, ky, kx, lane)
    out = np.zeros((nb, kh, kw, cb, cb), np.int8)
    lanes = np.arange(cb)
    out[:, :, :, lanes, lanes] = per_block
    return out


def dense_weight_matrix(weight, in_shape, cb):
    """Dense int8 ``(K, C*H*W)`` in ONNX flatten order -> ``(K, Cpad*H*W)`` matching the
    blocked input layout read as one pixel of ``Cpad*H*W`` channels (a 1x1 convolution)."""
    weight = np.asarray(weight, np.int8)
    c, h, w = in_shape
    k = weight.shape[0]
    nb = blocks(c, cb)
    full = np.zeros((k, nb * cb, h, w), np.int8)
    full[:, :c] = weight.reshape(k, c, h, w)
    # blocked byte order is (block, y, x, lane)
    return full.reshape(k, nb, cb, h, w).transpose(0, 1, 3, 4, 2).reshape(k, nb * cb * h * w)


def post_params(requant, channels_padded):
    """PBUF entries for one layer: ``(channels_padded, 16)`` uint8, pad channels zeroed."""
    k = len(requant.bias)
    per_channel = {
        "bias": requant.bias, "mult_a": requant.mult_a, "mult_b": requant.mult_b,
        "shift": requant.shift,
    }
    scalars = {"zp_out": requant.zp_out, "lo": requant.lo, "hi": requant.hi,
               "zp_a": requant.zp_a, "zp_b": requant.zp_b}
    words = np.zeros((channels_padded, 2), np.uint64)
    for name, (off, width, signed) in isa.POST_FIELDS.items():
        if name == "reserved":
            continue
        values = np.zeros(channels_padded, np.int64)
        values[:k] = per_channel[name] if name in per_channel else scalars[name]
        if name in scalars:
            values[k:] = scalars[name]
        lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
        if values.min() < lo or values.max() > hi:
            raise ValueError(f"post-processing field {name} out of its {width}-bit range")
        bits = (values & ((1 << width) - 1)).astype(np.uint64)
        lane, shift = divmod(off, 64)
        words[:, lane] |= bits << np.uint64(shift)
        if shift + width > 64:
            words[:, lane + 1] |= bits >> np.uint64(64 - shift)
    return words.astype("<u8").view(np.uint8).reshape(channels_padded, isa.POST_BYTES)


def unpack_post_params(entries):
    """``(n, 16)`` uint8 PBUF entries -> dict of int64 arrays, one per PostParams field."""
    words = np.ascontiguousarray(entries, np.uint8).reshape(-1, 16).view("<u8").astype(np.uint64)
    out = {}
    for name, (off, width, signed) in isa.POST_FIELDS.items():
        lane, shift = divmod(off, 64)
        bits = words[:, lane] >> np.uint64(shift)
        if shift + width > 64:
            bits |= words[:, lane + 1] << np.uint64(64 - shift)
        bits &= np.uint64((1 << width) - 1)
        value = bits.astype(np.int64)
        if signed:
            value = np.where(value >= 1 << (width - 1), value - (1 << width), value)
        out[name] = value
    return out
