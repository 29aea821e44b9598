"""Synchronous host driver over the instruction-set simulator.

A :class:`Host` owns a :class:`~vdla.sim.iss.Machine`; :meth:`Host.tenant` hands out
:class:`TenantHandle` objects, each confined to its own tenant registers, instruction-memory
region and DRAM segment (the handle refuses anything outside them, and the host refuses
handles whose regions, segments or core masks overlap). :class:`TenantView` holds those checks
and the tensor I/O once, for this driver and for the async driver of :mod:`.driver`, which
drives any :mod:`.bus` backend (the ISS or the RTL) through the same register map.

Conveniences: :func:`run_program_int` (int8 tensors in, int8 tensors out) and
:func:`run_program` (float tensors in ONNX shapes, quantized and dequantized like ONNX
QuantizeLinear / DequantizeLinear). :func:`quantize_input` and :func:`dequantize_output` are
the one place float model I/O meets the accelerator's tensors, for every driver and backend:
they also apply the host steps the compiler recorded (:mod:`vdla.compiler.host_steps`: an
NHWC input's transpose, a final Softmax).
"""

import dataclasses
import time

import numpy as np

from vdla.compiler import host_steps, layout
from vdla.compiler.link import link
from vdla.compiler.program import Allocation
from .iss import Machine

__all__ = ["Host", "TenantHandle", "TenantView", "HostError", "check_disjoint",
           "check_new_tenant", "fault_message", "run_program_int", "run_program",
           "quantize", "dequantize", "quantize_input", "dequantize_output", "quantize_inputs",
           "dequantize_outputs"]


class HostError(RuntimeError):
    """Misuse of the driver, or a run that ended in a fault (one-line message)."""


def _overlap(a0, a1, b0, b1):
    return a0 < b1 and b0 < a1


def _mask(allocation):
    return (1 << allocation.cores) - 1 if allocation.core_mask is None else allocation.core_mask


def check_disjoint(handle, handles):
    """Refuse ``handle`` if its program region, DRAM segment or cores overlap those of another
    tenant's of ``handles`` (those whose region and segment are sized)."""
    a = handle.allocation
    for other in handles:
        b = other.allocation
        if other.index == handle.index or b.prog_size is None or b.seg_size is None:
            continue
        if _overlap(a.prog_base, a.prog_base + a.prog_size, b.prog_base,
                    b.prog_base + b.prog_size):
            raise HostError(f"tenant {handle.index}'s program region overlaps tenant "
                            f"{other.index}'s")
        if _overlap(a.seg_base, a.seg_base + a.seg_size, b.seg_base, b.seg_base + b.seg_size):
            raise HostError(f"tenant {handle.index}'s DRAM segment overlaps tenant "
                            f"{other.index}'s")
        if _mask(a) & _mask(b):
            raise HostError(f"tenant {handle.index}'s cores overlap tenant {other.index}'s")


class TenantView:
    """What confines one tenant, whatever drives it: its allocation (core mask, region,
    segment), the checks every access goes through, and its program's tensor I/O.

    Shared by :class:`TenantHandle` (synchronous, over a :class:`Machine`) and
    :class:`vdla.sim.driver.Tenant` (async, over any bus). ``owner`` has ``config``,
    ``dram_bytes`` and ``handles`` (index -> view).
    """

    def __init__(self, owner, index, allocation):
        self.owner, self.index = owner, index
        self.config = owner.config
        self._allocation = dataclasses.replace(allocation)
        self.program = None
        self.image = None

    @property
    def allocation(self):
        """A copy of the allocation: the one every access is checked against changes only
        through the view's own methods (load sizes it, reallocate moves its cores)."""
        return dataclasses.replace(self._allocation)

    def _segment_range(self, offset, nbytes):
        """Absolute DRAM byte range of segment bytes ``offset..offset+nbytes``."""
        size = self._allocation.seg_size
        if offset < 0 or size is None or offset + nbytes > size:
            raise HostError(f"tenant {self.index}: bytes {offset}..{offset + nbytes} are "
                            f"outside its DRAM segment of {size} bytes")
        base = self._allocation.seg_base + offset
        return base, base + nbytes

    def _link(self, program, allocation=None):
        """Link ``program`` for ``allocation`` (default: the view's own) and fill in its unset
        core mask, region and segment sizes; check the confinement; -> (image, link ms)."""
        # The view's own allocation changes only once every check has passed.
        alloc = dataclasses.replace(self._allocation) if allocation is None else allocation
        if alloc.seg_size is None:
            alloc.seg_size = program.segment_size
        start = time.perf_counter()
        image = link(program, self.config, alloc)
        elapsed = (time.perf_counter() - start) * 1e3
        if alloc.prog_size is None:
            alloc.prog_size = image.registers["PROG_SIZE"]
        if alloc.core_mask is None:
            alloc.core_mask = image.registers["CORE_MASK"]
        check_disjoint(_Probe(self.index, alloc), self.owner.handles.values())
        if alloc.seg_base + alloc.seg_size > self.owner.dram_bytes:
            raise HostError(f"tenant {self.index}: segment 0x{alloc.seg_base:x}+"
                            f"0x{alloc.seg_size:x} exceeds the {self.owner.dram_bytes} bytes "
                            f"of DRAM")
        if allocation is None:
            self._allocation = alloc
        return image, elapsed

    def _tensor(self, name):
        if self.program is None:
            raise HostError(f"tenant {self.index}: no program loaded")
        try:
            return self.program.tensor(name)
        except KeyError:
            raise HostError(f"tenant {self.index}: program {self.program.model!r} has no "
                            f"tensor {name!r}") from None

    def _input_bytes(self, name, x):
        """Absolute DRAM address and blocked bytes of an int8 ``(C, H, W)`` input."""
        entry = self._tensor(name)
        x = np.asarray(x)
        if x.dtype != np.int8 or x.shape != tuple(entry.shape):
            raise HostError(f"input {name}: expected int8 {tuple(entry.shape)}, "
                            f"got {x.dtype} {x.shape}")
        data = layout.to_blocked(x, self.config.cb)
        if len(data) > entry.size:
            raise HostError(f"input {name}: {len(data)} bytes do not fit its {entry.size}")
        return self._segment_range(entry.offset, len(data))[0], data

    def _output_range(self, name):
        entry = self._tensor(name)
        return self._segment_range(entry.offset, entry.size)

    def _output(self, name, raw):
        """int8 ``(C, H, W)`` from the blocked bytes of tensor ``name``."""
        return layout.from_blocked(raw, self._tensor(name).shape, self.config.cb)


class _Probe:
    """A would-be allocation of a view, checked against the others before it is taken."""

    def __init__(self, index, allocation):
        self.index, self.allocation = index, allocation


def _as_bytes(data):
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return np.frombuffer(bytes(data), np.uint8)


class TenantHandle(TenantView):
    """One tenant's view of the machine: its registers, region and segment only.

    Created by :meth:`Host.tenant`; ``allocation`` fixes the core mask, region and segment
    (``prog_size`` / ``seg_size`` left as None are sized by the first :meth:`load`).
    """

    def __init__(self, host, index, allocation):
        super().__init__(host, index, allocation)
        self.host = host

    def write_segment(self, offset, data):
        """Write bytes at a segment-relative offset."""
        data = _as_bytes(data)
        lo, hi = self._segment_range(offset, len(data))
        self.host.machine.dram[lo:hi] = data

    def read_segment(self, offset, nbytes):
        lo, hi = self._segment_range(offset, nbytes)
        return self.host.machine.dram[lo:hi].copy()

    def load(self, program):
        """Link ``program`` for this tenant and write its region, registers and weights."""
        image, _ = self._link(program)
        machine = self.host.machine
        machine.write_imem(self.allocation.prog_base, image.words)
        for name, value in image.registers.items():
            machine.write_reg(self.index, name, value)
        self.write_segment(0, np.frombuffer(program.weights, np.uint8))
        self.program, self.image = program, image
        return image

    def write_input(self, name, x):
        """Write an int8 ``(C, H, W)`` tensor in the blocked layout at its segment offset."""
        address, data = self._input_bytes(name, x)
        self.host.machine.dram[address:address + len(data)] = data

    def read_output(self, name):
        """Read a tensor back as int8 ``(C, H, W)``."""
        lo, hi = self._output_range(name)
        return self._output(name, self.host.machine.dram[lo:hi].copy())

    def start(self):
        self.host.machine.start(self.index)

    def stop(self):
        self.host.machine.stop(self.index)

    def status(self):
        return self.host.machine.status(self.index)

    def read_reg(self, name):
        return self.host.machine.read_reg(self.index, name)

    def check(self):
        """Raise :class:`HostError` if the tenant faulted or did not finish."""
        st = self.status()
        if st["faulted"]:
            raise HostError(fault_message(self.index, st))
        if not st["done"]:
            raise HostError(f"tenant {self.index} did not finish (status {st})")
        return st


def fault_message(index, status):
    """One line describing the fault in ``status`` (a status dict)."""
    reason = f": {status['fault_reason']}" if status.get("fault_reason") else ""
    return (f"tenant {index} faulted {status['fault'].name} at word {status['fault_pc']} on "
            f"core {status['fault_core']}{reason}")


class Host:
    """A synchronous driver: one :class:`Machine` and its tenant handles."""

    def __init__(self, config, dram_bytes, policy="load-first"):
        self.config = config
        self.machine = Machine(config, dram_bytes, policy)
        self.dram_bytes = len(self.machine.dram)
        self.handles = {}

    def tenant(self, index, allocation):
        """The handle of tenant ``index`` with ``allocation`` (an :class:`Allocation`)."""
        check_new_tenant(self, index)
        handle = TenantHandle(self, index, allocation)
        self.handles[index] = handle
        return handle

    def run(self, policy=None, max_phases=None):
        return self.machine.run(policy, max_phases)


def check_new_tenant(owner, index):
    """Refuse a second handle for tenant ``index``, or a tenant the configuration lacks."""
    if index in owner.handles:
        raise HostError(f"tenant {index} already has a handle")
    if not 0 <= index < owner.config.tenants:
        raise HostError(f"tenant {index} does not exist (0..{owner.config.tenants - 1})")


def _segment_bytes(program):
    return -(-program.segment_size // 8) * 8


def run_program_int(program, config, inputs, cores=1, policy="load-first"):
    """Run one inference of ``program`` on the ISS; int8 ``(C, H, W)`` in and out.

    ``inputs`` maps input tensor names to int8 arrays; returns ``{output name: int8 (C,H,W)}``.
    Raises :class:`HostError` if the run faults.
    """
    host = Host(config, _segment_bytes(program), policy)
    handle = host.tenant(0, Allocation(cores=cores))
    handle.load(program)
    missing = set(program.inputs) - set(inputs)
    if missing:
        raise HostError(f"missing input(s): {', '.join(sorted(missing))}")
    for name in program.inputs:
        handle.write_input(name, inputs[name])
    handle.start()
    host.run()
    handle.check()
    return {name: handle.read_output(name) for name in program.outputs}


def quantize(x, scale, zero_point):
    """ONNX QuantizeLinear to int8: ``saturate(round_half_even(x / scale) + zero_point)``."""
    q = np.rint(np.asarray(x, np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize(q, scale, zero_point):
    """ONNX DequantizeLinear: ``(q - zero_point) * scale`` in float32."""
    return ((np.asarray(q, np.int32) - zero_point).astype(np.float32) * np.float32(scale))


def quantize_input(entry, x):
    """A float32 model input -> the int8 ``(C, H, W)`` tensor the accelerator reads.

    Parameters
    ----------
    entry : TensorEntry
        The program's input tensor.
    x : array_like
        The input in its ONNX shape ``entry.onnx_shape`` (any shape of as many elements is
        read in C order as that shape).

    Returns
    -------
    np.ndarray
        int8 ``entry.shape``: ``entry.host`` applied (e.g. NHWC -> NCHW), then quantized.
    """
    x = np.asarray(x, np.float32)
    if x.size != int(np.prod(entry.shape)):
        raise HostError(f"input {entry.name}: expected shape {tuple(entry.onnx_shape)}, "
                        f"got {x.shape}")
    if entry.host:
        x = host_steps.apply(entry.host, x.reshape(entry.onnx_shape))
    return quantize(x.reshape(entry.shape), entry.scale, entry.zero_point)


def dequantize_output(entry, q):
    """The int8 ``(C, H, W)`` output tensor ``q`` -> float32 in the model output's ONNX shape:
    dequantized, ``entry.host`` applied (e.g. the model's final Softmax), reshaped (C order)."""
    y = dequantize(q, entry.scale, entry.zero_point)
    if entry.host:
        y = host_steps.apply(entry.host, y.reshape(entry.shape))
    shape = tuple(entry.onnx_shape) if entry.onnx_shape else tuple(entry.shape)
    return y.reshape(shape)


def quantize_inputs(program, inputs):
    """Float32 inputs in their ONNX shapes -> int8 ``(C, H, W)`` (:func:`quantize_input`)."""
    int_inputs = {}
    for name in program.inputs:
        if name not in inputs:
            raise HostError(f"missing input {name!r}")
        int_inputs[name] = quantize_input(program.tensor(name), inputs[name])
    return int_inputs


def dequantize_outputs(program, outputs):
    """int8 ``(C, H, W)`` outputs -> float32 in their ONNX shapes (:func:`dequantize_output`)."""
    return {name: dequantize_output(program.tensor(name), q) for name, q in outputs.items()}


def run_program(program, config, inputs, cores=1):
    """Run one inference with float32 inputs and outputs in their ONNX shapes.

    Inputs are quantized with each tensor's scale and zero point; outputs are dequantized and
    reshaped from ``(C, H, W)`` (flattened in C, H, W order) to their ONNX shape; the host steps
    of each (:func:`quantize_input`, :func:`dequantize_output`) are applied on the way.
    """
    outputs = run_program_int(program, config, quantize_inputs(program, inputs), cores)
    return dequantize_outputs(program, outputs)
