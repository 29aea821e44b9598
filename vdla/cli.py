"""The ``vdla`` command line: compile, quantize, link, disassemble, inspect and run models.

``run`` and ``sim`` run on the instruction-set simulator, on the RTL in Verilator, or
(``--port``) on a board's accelerator through its UART host bridge. Every user error is
reported as one line on stderr with exit status 2, and every warning (output channels
compiled as constants, say) as one line ``vdla COMMAND: warning: ...``; ``--help`` works on
every command.
"""

import argparse
import pathlib
import sys
import time
import warnings
import zipfile

__all__ = ["main"]

EXIT_USAGE = 2


class UserError(Exception):
    """A problem with the user's input, reported as one line."""


def _config(name):
    from .config import ConfigError, get_config
    try:
        return get_config(name)
    except ConfigError as error:
        raise UserError(str(error)) from None


def _read_program(path, config_name=None):
    from .compiler.ifp import read_ifp
    program = read_ifp(path)
    config = _config(config_name or program.config)
    if program.core_hash != config.core_hash():
        raise UserError(f"{path}: compiled for configuration {program.config} "
                        f"(core hash {program.core_hash}), not {config.name} "
                        f"({config.core_hash()})")
    return program, config


def _first_line(error):
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _load_npy(path, archive=False):
    """The array of the .npy file ``path``, or with ``archive`` the arrays of an .npz archive
    by name.

    An .npy file is read through a memory map, so a header that claims more data than the
    file holds is refused instead of allocated.
    """
    import numpy as np
    try:
        with np.errstate(over="ignore"):        # numpy sizes an absurd header's claim
            loaded = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        what = ".npz archive" if archive and pathlib.Path(path).suffix.lower() == ".npz" \
            else ".npy array"
        raise UserError(f"{path}: not a readable {what} ({_first_line(error)})") from None
    if not isinstance(loaded, np.ndarray):     # np.load opens an .npz archive as a mapping
        if archive:
            return _npz_arrays(loaded, path)
        loaded.close()
        raise UserError(f"{path}: an .npz archive, not an .npy array (save the one array "
                        f"with numpy.save)")
    return np.array(loaded)


def _npz_arrays(archive, path):
    """``{name: array}`` of the open .npz ``archive`` (closed on return)."""
    import numpy as np
    arrays = {}
    with archive:
        for name in archive.files:
            try:
                # A member is read whole: a header claiming terabytes fails as MemoryError.
                with np.errstate(over="ignore"):
                    arrays[name] = np.array(archive[name])
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, MemoryError) as error:
                raise UserError(f"{path}: array {name!r} is not readable "
                                f"({_first_line(error)})") from None
    return arrays


def _save_npz(file, arrays):
    """Write ``arrays`` (name -> array) to the open binary ``file`` as numpy.savez does.

    numpy.savez takes the names as keywords, so an output named ``file`` or
    ``allow_pickle`` could not be written through it.
    """
    import numpy as np
    with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def _names(names):
    return ", ".join(repr(n) for n in names)


def _output_directory(path):
    """Refuse an output whose directory is missing: no command creates directories."""
    parent = pathlib.Path(path).parent
    if not parent.is_dir():
        raise UserError(f"{path}: no such directory: {parent}")


def _output_file(path, option):
    """Refuse, before any work, an output file that cannot be written where it is named."""
    if pathlib.Path(path).is_dir():
        raise UserError(f"{path}: is a directory ({option} names the file to write)")
    _output_directory(path)


def _input_batch(x, tensor, source):
    """``x`` as a float32 batch (N >= 1) of samples of the model input ``tensor`` (its ONNX
    shape has the batch dimension first); one sample without the batch dimension is accepted."""
    from .compiler.quantize import real_float32
    x = real_float32(x, source)
    shape = tuple(tensor.onnx_shape)
    sample = shape[1:]
    if x.shape == sample:
        x = x[None]
    if x.shape[1:] != sample:
        raise UserError(f"{source}: shape {x.shape} does not match the model input "
                        f"{tensor.name} {shape} (a batch of any size is accepted)")
    if not len(x):
        raise UserError(f"{source}: an empty batch (shape {x.shape}), no sample to run")
    return x


def _run_inputs(path, program):
    """``{input name: float32 batch}`` of ``vdla run --input``, every batch of one size.

    ``path`` is an .npy array (a one-input model) or an .npz archive holding exactly one
    array per model input, by name.
    """
    loaded = _load_npy(path, archive=True)
    names = list(program.inputs)
    if isinstance(loaded, dict):
        missing = [name for name in names if name not in loaded]
        if missing:
            raise UserError(f"{path}: no array for the model input {missing[0]!r} (an .npz "
                            f"holds one array per input: {_names(names)})")
        extra = [name for name in loaded if name not in names]
        if extra:
            raise UserError(f"{path}: array {extra[0]!r} is not a model input (the inputs: "
                            f"{_names(names)})")
        batches = {name: _input_batch(loaded[name], program.tensor(name),
                                      f"{path}, array {name!r}") for name in names}
    elif len(names) != 1:
        raise UserError(f"{path}: the model has {len(names)} inputs ({_names(names)}): give "
                        f"an .npz with one array per input name")
    else:
        batches = {names[0]: _input_batch(loaded, program.tensor(names[0]), path)}
    sizes = {len(batch) for batch in batches.values()}
    if len(sizes) > 1:
        counts = ", ".join(f"{name!r}: {len(batch)}" for name, batch in batches.items())
        raise UserError(f"{path}: the arrays hold different numbers of samples ({counts})")
    return batches


def _output_format(path, program):
    """``"npz"`` when ``vdla run --output`` names an .npz file, else ``"npy"``, which holds
    the one output of a one-output model."""
    if pathlib.Path(path).suffix.lower() == ".npz":
        return "npz"
    if len(program.outputs) != 1:
        raise UserError(f"{path}: the model has {len(program.outputs)} outputs "
                        f"({_names(program.outputs)}): name an .npz file, which holds one "
                        f"array per output name")
    return "npy"


def _write_outputs(path, arrays, form):
    """Write the output batches ``arrays`` (name -> float32) to the file named, as is."""
    import numpy as np
    with open(path, "wb") as f:     # the file named: no ".npy" / ".npz" appended
        if form == "npz":
            _save_npz(f, arrays)
        else:
            (array,) = arrays.values()
            np.save(f, array)


def cmd_compile(args):
    from .compiler.frontend import load_model
    from .compiler.ifp import write_ifp
    from .compiler.static import compile_graph
    config = _config(args.config)
    _output_file(args.output, "-o")
    start = time.perf_counter()
    graph = load_model(args.model)
    print(f"front end: {len(graph.layers)} layers from {args.model}", file=sys.stderr)
    program = compile_graph(graph, config)
    write_ifp(program, args.output)
    elapsed = time.perf_counter() - start
    size = pathlib.Path(args.output).stat().st_size
    print(f"{args.output}: {len(program.layers)} layers, {len(program.frames)} frames, "
          f"{len(program.code)} instructions, {size} bytes, segment {program.segment_size} "
          f"bytes, config {config.name}, {elapsed:.2f} s")
    return 0


def cmd_quantize(args):
    from .compiler.quantize import quantize_model
    _output_file(args.output, "-o")
    calib = _load_npy(args.calib, archive=True)
    quantize_model(args.model, calib, args.output)
    count = len(next(iter(calib.values()))) if isinstance(calib, dict) else len(calib)
    print(f"{args.output}: int8 QDQ model calibrated on {count} samples")
    return 0


def cmd_link(args):
    from .compiler.image import write_image
    from .compiler.link import link
    from .compiler.program import Allocation
    program, config = _read_program(args.ifp, args.config)
    _output_directory(args.output)
    allocation = Allocation(cores=args.cores, core_mask=args.core_mask, prog_base=args.prog_base,
                            seg_base=args.seg_base)
    start = time.perf_counter()
    image = link(program, config, allocation)
    elapsed = (time.perf_counter() - start) * 1e3
    write_image(image, args.output)
    print(f"{args.output}.bin/.hex/.json: {len(image.words)} words for {image.cores} cores, "
          f"linked in {elapsed:.3f} ms")
    return 0


def cmd_disasm(args):
    from .compiler.disasm import disassemble
    program, _ = _read_program(args.ifp, args.config)
    frames = None
    if args.frame is not None:
        if not 0 <= args.frame < len(program.frames):
            raise UserError(f"frame {args.frame} out of range (0..{len(program.frames) - 1})")
        frames = [args.frame]
    for line in disassemble(program, frames):
        print(line)
    return 0


def cmd_info(args):
    program, config = _read_program(args.ifp, args.config)
    cycles = int(program.frames["cycles"].sum())
    print(f"model        {program.model}")
    print(f"config       {program.config} (core hash {program.core_hash})")
    print(f"layers       {len(program.layers)}")
    print(f"frames       {len(program.frames)}")
    print(f"instructions {len(program.code)}")
    print(f"weights      {len(program.weights)} bytes")
    print(f"segment      {program.segment_size} bytes")
    print(f"estimate     {cycles} cycles on one core "
          f"({cycles / config.clock_mhz / 1e3:.3f} ms at {config.clock_mhz:g} MHz)")
    for tensor in program.tensors:
        if tensor.role != "activation":
            print(f"{tensor.role:<12} {tensor.name} {tuple(tensor.onnx_shape)} "
                  f"scale={tensor.scale:.6g} zero_point={tensor.zero_point}")
            if tensor.host:
                print(f"{'':<12} {_host_line(tensor)}")
    return 0


def _host_line(tensor):
    """What the host does between a model input or output and the accelerator's tensor."""
    from .compiler.host_steps import describe
    shape = tuple(tensor.shape)
    if tensor.role == "input":
        return f"host: {describe(tensor.host)}, quantize to {shape}"
    return f"host: dequantize {shape}, {describe(tensor.host)}"


def _board(args, config):
    """The board ``--port`` reaches (``--board``, or the one of ``config``); None without
    ``--port``."""
    if args.port is None:
        for option in ("board", "baud"):
            if getattr(args, option) is not None:
                raise UserError(f"--{option} needs --port")
        return None
    if args.backend == "rtl":
        raise UserError("--port and --backend rtl exclude each other: --port runs on the "
                        "board at the port, --backend rtl on the RTL in Verilator")
    if args.baud is not None and args.baud <= 0:
        raise UserError(f"--baud must be positive, not {args.baud}")
    from .sim.board_host import BoardError, find_board
    try:
        return find_board(config, args.board)
    except BoardError as error:
        raise UserError(str(error)) from None


def _progress(line):
    print(line, file=sys.stderr, flush=True)


def cmd_run(args):
    import numpy as np
    program, config = _read_program(args.ifp, args.config)
    board = _board(args, config)
    if args.backend == "rtl" and args.cores != 1:
        raise UserError(f"--backend rtl simulates one core (the single-core top): use "
                        f"--cores 1, not {args.cores}")
    _output_file(args.output, "--output")
    form = _output_format(args.output, program)
    batches = _run_inputs(args.input, program)
    count = len(next(iter(batches.values())))
    samples = [{name: batch[i][None] for name, batch in batches.items()}
               for i in range(count)]
    # Inputs far beyond the int8 range saturate, as in ONNX QuantizeLinear; the float32
    # overflow of x / scale on the way there is expected, not worth a warning.
    with np.errstate(over="ignore"):
        results, backend, detail = _run_samples(args, program, config, board, samples)
    outputs = {name: np.concatenate([r[name] for r in results], axis=0)
               for name in program.outputs}
    _write_outputs(args.output, outputs, form)
    shapes = ", ".join(f"{name} {y.shape}" for name, y in outputs.items()) if form == "npz" \
        else str(outputs[program.outputs[0]].shape)
    print(f"{args.output}: {shapes} float32 from {count} inference(s) on {args.cores} "
          f"core(s), backend {backend}{detail}")
    return 0


def _run_samples(args, program, config, board, samples):
    """Run every sample on the backend ``args`` asks for -> (results, backend, detail)."""
    import numpy as np
    from .sim.host import HostError, run_program
    detail, backend = "", args.backend
    try:
        if board is not None:
            from .sim.board_host import BoardError, run_program_on_board
            backend = f"board {board.name} on {args.port}"
            try:
                results = run_program_on_board(program, config, samples, args.port, board,
                                               baud=args.baud, cores=args.cores,
                                               log=_progress)
            except BoardError as error:
                raise UserError(str(error)) from None
        elif args.backend == "rtl":
            # Every sample in one simulator launch (the launch dominates a small inference).
            from .sim.rtl_host import run_program_rtl
            runs = []
            results = run_program_rtl(program, config, samples, stats=runs)
            cycles = [run.status["cycles"] for run in runs]
            detail = f", {int(np.mean(cycles))} cycles per inference"
        else:
            results = [run_program(program, config, s, cores=args.cores) for s in samples]
    except HostError as error:
        raise UserError(str(error)) from None
    return results, backend, detail


def cmd_sim(args):
    from .sim.bus import BusError
    from .sim.host import HostError
    from .sim.scenario import (ScenarioError, format_report, load_scenario, run_scenario_iss,
                               write_report)
    if args.report:
        _output_file(args.report, "--report")
    try:
        scenario = load_scenario(args.scenario, args.config)
        board = _board(args, scenario.config)
        if board is not None:
            from .sim.board_host import BoardError, run_scenario_on_board
            try:
                report = run_scenario_on_board(scenario, args.port, board, baud=args.baud,
                                               log=_progress)
            except BoardError as error:
                raise UserError(str(error)) from None
            if args.report:
                write_report(report, args.report)
        elif args.backend == "rtl":
            try:
                from .sim.rtl_scenario import run_scenario_rtl
            except ModuleNotFoundError as error:
                if error.name == "vdla.sim.rtl_scenario":
                    raise UserError("the RTL backend of vdla sim needs "
                                    "vdla.sim.rtl_scenario") from None
                raise UserError(f"the RTL backend of vdla sim needs {error.name}") from None
            try:
                report = run_scenario_rtl(scenario, args.report)
            except RuntimeError as error:       # build, simulator, driver or bus failure
                raise UserError(str(error)) from None
        else:
            report = run_scenario_iss(scenario, log=lambda line: print(line, file=sys.stderr,
                                                                        flush=True))
            if args.report:
                write_report(report, args.report)
    except (ScenarioError, HostError, BusError) as error:
        raise UserError(str(error)) from None
    if not isinstance(report, dict):
        return 0
    print(format_report(report))
    # Faults are results (the report lists them); outputs that differ from the golden model
    # are a failure.
    return 0 if report["exact"] else 1


def build_parser():
    parser = argparse.ArgumentParser(prog="vdla", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("compile", help="static stage: QDQ ONNX model -> instruction frame package")
    p.add_argument("model", help="int8 QDQ ONNX model")
    p.add_argument("-o", "--output", required=True, help="IFP file to write")
    p.add_argument("--config", default="small", help="accelerator configuration (default: small)")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("quantize", help="float ONNX + calibration data -> int8 QDQ ONNX (ORT)")
    p.add_argument("model", help="float ONNX model")
    p.add_argument("--calib", required=True,
                   help=".npy array of calibration inputs (N, ...), or for a model of several "
                        "inputs an .npz holding one such array per input name")
    p.add_argument("-o", "--output", required=True, help="QDQ ONNX model to write")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("link", help="dynamic stage: IFP -> instruction-memory image for N cores")
    p.add_argument("ifp")
    p.add_argument("--cores", type=int, default=1, help="number of cores (default: 1)")
    p.add_argument("--core-mask", type=lambda s: int(s, 0), default=None,
                   help="physical cores as a bit mask (default: the lowest N)")
    p.add_argument("--prog-base", type=int, default=0, help="first instruction-memory word")
    p.add_argument("--seg-base", type=lambda s: int(s, 0), default=0, help="DRAM segment base")
    p.add_argument("--config", help="configuration (default: the one the IFP was compiled for)")
    p.add_argument("-o", "--output", required=True,
                   help="output stem: writes STEM.bin, STEM.hex and STEM.json")
    p.set_defaults(func=cmd_link)

    p = sub.add_parser("disasm", help="list the instructions of an IFP, frame by frame")
    p.add_argument("ifp")
    p.add_argument("--frame", type=int, help="only this frame")
    p.add_argument("--config", help="configuration (default: the IFP's)")
    p.set_defaults(func=cmd_disasm)

    p = sub.add_parser("info", help="summary of an IFP: tensors, layers, frames, sizes")
    p.add_argument("ifp")
    p.add_argument("--config", help="configuration (default: the IFP's)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("run", help="run an IFP on float32 .npy / .npz input(s), write float32 "
                                   "output(s)",
                       description="Run an IFP on float32 input(s) and write the float32 "
                                   "output(s). The host quantizes each input and dequantizes "
                                   "each output; the float work the compiler left to the host "
                                   "(an NHWC input's transpose, a final Softmax, Transpose or "
                                   "reshape: 'vdla info' lists it) is done on the way.")
    p.add_argument("ifp")
    p.add_argument("--input", required=True,
                   help=".npy float32 in the model's input shape (a leading batch of any size "
                        "is allowed), or an .npz holding one such array per input name")
    p.add_argument("--output", required=True,
                   help="file to write: .npz (one array per output name), or .npy for a "
                        "model with one output")
    p.add_argument("--cores", type=int, default=1)
    p.add_argument("--backend", choices=("iss", "rtl"), default="iss",
                   help="iss: instruction-set simulator (golden model); rtl: the gateware "
                        "of one core on Verilator (builds it once, under build/rtl/)")
    p.add_argument("--config", help="configuration (default: the IFP's)")
    _board_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sim", help="run a multi-tenant scenario (TOML) and check it against "
                                   "the golden model")
    p.add_argument("scenario", help="scenario file (format: docs/scenarios.md)")
    p.add_argument("--backend", choices=("iss", "rtl"), default="iss",
                   help="iss: instruction-set simulator (estimated cycles); rtl: the "
                        "multi-tenant gateware on Verilator")
    p.add_argument("--report", help="JSON report to write")
    p.add_argument("--config", help="configuration (default: the scenario's)")
    _board_options(p)
    p.set_defaults(func=cmd_sim)
    return parser


def _board_options(p):
    """``--port``, ``--board`` and ``--baud`` of the commands that run on a board."""
    g = p.add_argument_group("on a board", "run on the accelerator of a board (or of the "
                                           "virtual board, python -m vdla.sim.virtual_board) "
                                           "through its UART host bridge")
    g.add_argument("--port", metavar="DEV", help="its serial port, e.g. /dev/ttyUSB0")
    g.add_argument("--board", metavar="NAME",
                   help="which board (default: the one of the configuration)")
    g.add_argument("--baud", type=int, metavar="N", help="bit rate (default: the board's)")


def _warning_printer(command):
    """A ``warnings.showwarning`` printing each warning as one line on stderr."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"vdla {command}: warning: {_first_line(message)}", file=sys.stderr)
    return show


def main(argv=None):
    from .compiler.errors import CompileError, DeadChannelWarning
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _warning_printer(args.command)
        # Each compile names its dead channels, a second one in the same process too.
        warnings.simplefilter("always", DeadChannelWarning)
        try:
            return args.func(args)
        except (UserError, CompileError) as error:
            print(f"vdla {args.command}: error: {error}", file=sys.stderr)
        except FileNotFoundError as error:
            print(f"vdla {args.command}: error: {error.filename}: no such file",
                  file=sys.stderr)
        except (IsADirectoryError, PermissionError) as error:
            print(f"vdla {args.command}: error: {error.filename}: {error.strerror}",
                  file=sys.stderr)
        except KeyboardInterrupt:
            print(f"vdla {args.command}: interrupted", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
