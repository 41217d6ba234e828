# Every target sets up its own virtualenv; every pip install goes through constraints.txt (torch==2.13.0).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PIPC := $(PIP) install -q -c constraints.txt
NATIVE_SRC := $(shell find csrc -name '*.cpp' -o -name '*.h') CMakeLists.txt setup.py

.PHONY: demo test lint format native bench bench-gpu clean help

help:
	@echo "make demo    set up, then run the main job: FP-VEC end to end on a small LM built here (fpcore-demo/report.md),"
	@echo "             then a proof-of-training story (honest record accepted for its model; a substituted model, two forgeries rejected)"
	@echo "make test    set up, lint, then run the test suite"
	@echo "make bench   full CPU benchmark suite (>= 256 MB operands); regenerates the CPU table of docs/performance.md"
	@echo "make bench-gpu   Triton benchmarks + gpu_check on a CUDA machine; regenerates the GPU table of docs/performance.md"

$(VENV)/.deps: requirements-dev.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIPC) --upgrade pip setuptools wheel
	$(PIPC) -r requirements-dev.txt
	FPCORE_SKIP_NATIVE_BUILD=1 $(PIPC) --no-build-isolation -e '.[fleet]'
	touch $@

# The native extension, rebuilt (incrementally, by CMake) when a C++ file changes.
$(VENV)/.native: $(VENV)/.deps $(NATIVE_SRC)
	$(PY) setup.py -q build_ext --inplace
	touch $@

native: $(VENV)/.native

lint: $(VENV)/.deps
	$(VENV)/bin/ruff format --check fpcore tests benchmarks
	$(VENV)/bin/ruff check fpcore tests benchmarks
	$(VENV)/bin/clang-format --dry-run --Werror $$(find csrc -name '*.cpp' -o -name '*.h')

format: $(VENV)/.deps
	$(VENV)/bin/ruff format fpcore tests benchmarks
	$(VENV)/bin/ruff check --fix fpcore tests benchmarks
	$(VENV)/bin/clang-format -i $$(find csrc -name '*.cpp' -o -name '*.h')

test: native lint
	$(PY) -m pytest -q tests

# The CPU suite (operands >= 256 MB); its JSON and plot are kept in docs/perf and the CPU table of
# docs/performance.md is regenerated from them.
bench: native
	mkdir -p docs/perf
	$(PY) -m pytest benchmarks -q -p no:cacheprovider --benchmark-json=docs/perf/cpu_bench.json
	$(PY) -m fpcore.cli bench report docs/perf/cpu_bench.json --update docs/performance.md --section cpu

# On a machine with a CUDA GPU and its own torch + triton (no virtualenv needed there).
bench-gpu:
	mkdir -p docs/perf
	python3 -m pytest benchmarks/bench_triton.py -q -p no:cacheprovider --benchmark-json=docs/perf/gpu_bench.json
	python3 -m fpcore.cli bench report docs/perf/gpu_bench.json --update docs/performance.md --section gpu
	python3 benchmarks/gpu_check.py

# The main job: FP-VEC end to end on a small LM built and trained here (no downloads); writes
# fpcore-demo/report.md, report.json and fsr_vs_drift.png. The benchmark tables are `make bench`.
demo: native
	$(PY) -m fpcore.cli demo --out fpcore-demo --overwrite
	rm -rf pot-demo
	$(PY) -m fpcore.cli pot demo --out pot-demo

clean:
	rm -rf build $(VENV) fpcore/_C*.so *.egg-info
