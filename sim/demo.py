"""``make demo``: two tenants, two models, sharing the simulated accelerator.

Tenant 0 runs the digits CNN (models/digits) on cores 0-1 over the held-out images; tenant 1
runs a ResNet-18-shaped network (32x32 input, seeded weights, quantized here through ONNX
Runtime) on cores 2-3 at the same time. Both are compiled once, linked for two cores each and
executed by the instruction-set simulator; their outputs are compared with ONNX Runtime running
the same QDQ models.
"""

import argparse
import pathlib
import sys
import time

import numpy as np

from vdla.compiler import ifp, zoo
from vdla.compiler.frontend import load_model
from vdla.compiler.program import Allocation
from vdla.compiler.quantize import quantize_model
from vdla.compiler.static import compile_graph
from vdla.config import get_config

from .host import Host, dequantize, quantize
from .reference import run_graph

ROOT = pathlib.Path(__file__).resolve().parent.parent
DIGITS = ROOT / "models" / "digits" / "digits_qdq.onnx"


def log(message=""):
    print(message, flush=True)


def _held_out_digits():
    sys.path.insert(0, str(ROOT))
    from models.digits.data import held_out
    return held_out()


def _ort_session(path):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _compile(path, config, out_dir):
    start = time.perf_counter()
    graph = load_model(path)
    program = compile_graph(graph, config)
    ifp_path = out_dir / (pathlib.Path(path).stem + ".ifp")
    ifp.write_ifp(program, ifp_path)
    program = ifp.read_ifp(ifp_path, config)
    log(f"  {pathlib.Path(path).name}: {len(program.layers)} layers, {len(program.frames)} "
        f"frames, {len(program.code)} instructions -> {ifp_path} "
        f"({time.perf_counter() - start:.2f} s)")
    return graph, program


def _second_model(out_dir, samples):
    float_path = out_dir / "resnet18_32.onnx"
    qdq_path = out_dir / "resnet18_32_qdq.onnx"
    if not qdq_path.exists():
        import onnx
        onnx.save(zoo.resnet18(size=32, classes=10), float_path)
        calib = np.random.default_rng(1).standard_normal((8, 3, 32, 32)).astype(np.float32)
        quantize_model(float_path, calib, qdq_path)
    inputs = np.random.default_rng(2).standard_normal((samples, 1, 3, 32, 32)).astype(np.float32)
    return qdq_path, inputs


class Tenant:
    """One tenant of the demo: its handle, program and I/O conversions."""

    def __init__(self, host, index, graph, program, cores_mask, prog_base, seg_base):
        self.graph, self.program = graph, program
        self.exact = 0
        self.handle = host.tenant(index, Allocation(cores=bin(cores_mask).count("1"),
                                                    core_mask=cores_mask, prog_base=prog_base,
                                                    seg_base=seg_base))
        self.image = self.handle.load(program)
        self.input = program.tensor(program.inputs[0])
        self.output = program.tensor(program.outputs[0])
        self.cycles = []

    def feed(self, x):
        q = quantize(np.asarray(x).reshape(self.input.shape), self.input.scale,
                     self.input.zero_point)
        self.handle.write_input(self.input.name, q)
        self.golden = run_graph(self.graph, {self.input.name: q})[self.output.name]
        self.before = self.handle.read_reg("CYCLES_LO")
        self.handle.start()

    def result(self):
        self.handle.check()
        self.cycles.append(self.handle.read_reg("CYCLES_LO") - self.before)
        q = self.handle.read_output(self.output.name)
        self.exact += bool(np.array_equal(q, self.golden))
        return dequantize(q, self.output.scale, self.output.zero_point).reshape(-1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--out", default=str(ROOT / "build" / "demo"))
    parser.add_argument("--limit", type=int, default=None, help="held-out digits to run")
    parser.add_argument("--second", type=int, default=4, help="inferences of the second model")
    args = parser.parse_args(argv)
    config = get_config(args.config)
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    log(f"vdla demo: configuration {config.name} ({config.cores} cores of "
        f"{config.icp}x{config.ocp} int8 MACs), instruction-set simulator")
    log("static stage:")
    digits_graph, digits = _compile(DIGITS, config, out_dir)
    second_path, second_inputs = _second_model(out_dir, args.second)
    second_graph, second = _compile(second_path, config, out_dir)

    host = Host(config, dram_bytes=digits.segment_size + second.segment_size + (1 << 16))
    t0 = Tenant(host, 0, digits_graph, digits, 0b0011, prog_base=0, seg_base=0)
    seg1 = -(-digits.segment_size // 4096) * 4096
    t1 = Tenant(host, 1, second_graph, second, 0b1100, prog_base=len(t0.image.words), seg_base=seg1)
    log("dynamic stage (link):")
    for t, name in ((t0, "digits"), (t1, second_path.stem)):
        log(f"  tenant {t.handle.index} {name}: cores 0b{t.handle.allocation.core_mask:04b}, "
            f"{len(t.image.words)} words at imem {t.handle.allocation.prog_base}, segment "
            f"0x{t.handle.allocation.seg_base:x}+{t.handle.allocation.seg_size}")

    images, labels = _held_out_digits()
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    ort_digits = _ort_session(DIGITS)
    ort_second = _ort_session(second_path)

    log(f"running {len(images)} digits inferences on tenant 0 and {len(second_inputs)} on "
        f"tenant 1 concurrently ...")
    start = time.perf_counter()
    ours, second_errors = [], []
    for i, image in enumerate(images):
        t0.feed(image[None])
        busy = i < len(second_inputs)
        if busy:
            t1.feed(second_inputs[i])
        host.run()
        ours.append(t0.result())
        if busy:
            y = t1.result()
            ref = ort_second.run(None, {"input": second_inputs[i]})[0].reshape(-1)
            second_errors.append(np.abs(y - ref).max() / t1.output.scale)
    elapsed = time.perf_counter() - start
    ours = np.array(ours)
    ref = np.concatenate([ort_digits.run(None, {"input": im[None]})[0] for im in images])
    pred, ref_pred = ours.argmax(1), ref.argmax(1)
    steps = np.abs(ours - ref).max() / t0.output.scale

    log("tenant 0 (digits CNN), first predictions:")
    log("  label " + " ".join(str(v) for v in labels[:16]))
    log("  vdla  " + " ".join(str(v) for v in pred[:16]))
    log(f"  accuracy: vdla {100 * (pred == labels).mean():.2f} %, ONNX Runtime "
        f"{100 * (ref_pred == labels).mean():.2f} % on {len(labels)} held-out images; "
        f"same class on {100 * (pred == ref_pred).mean():.2f} %, max |diff| "
        f"{steps:.2f} output steps")
    log(f"tenant 1 ({second_path.stem}): max |diff| vs ONNX Runtime "
        f"{max(second_errors):.2f} output steps over {len(second_errors)} inferences "
        f"(rounding differences accumulated over {len(second.layers)} layers)")
    for t, count in ((t0, len(images)), (t1, len(second_inputs))):
        log(f"tenant {t.handle.index}: {t.exact}/{count} outputs bit-identical to the layer "
            f"reference running the model alone")
    for t, name in ((t0, "digits"), (t1, second_path.stem)):
        per = int(np.median(t.cycles))
        log(f"cycle estimate, {name}: {per} cycles per inference on 2 cores "
            f"({per / config.clock_mhz:.1f} us at {config.clock_mhz:g} MHz); one core, "
            f"sum of frames: {int(t.program.frames['cycles'].sum())}")
    log(f"simulated in {elapsed:.1f} s")
    ok = t0.exact == len(images) and t1.exact == len(second_inputs) and steps <= 1.0001
    log("demo: OK" if ok else "demo: MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
