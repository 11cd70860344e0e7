# `make test` and `make demo` work on a fresh clone: they create .venv and install from this
# repo's own files, with torch pinned by constraints.txt (the CPU wheel; never a CUDA download).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo parity docs docs-serve lint typecheck pytest golden-default test-portable golden-report bench clean

$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip -c constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e ".[dev,demo,docs]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools examples
	$(BIN)/ruff format --check src tests benchmarks tools examples

# mypy reads a module's .pyi stub in place of its .py (tools/make_optim_stubs.py writes stubs for
# kerasopt.optim and kerasopt.keras3.optim): the second run checks those .py files themselves.
STUBBED := $(patsubst %.pyi,%.py,$(shell find src/kerasopt -name '*.pyi'))

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy $(STUBBED)

pytest: $(STAMP)
	$(BIN)/pytest -n 2

# The TF golden comparison once more under torch's portable (non-vectorised) CPU kernels: its
# ulp bounds must hold whatever kernels the CPU gets (docs/tolerances.md). About 10 s.
golden-default: $(STAMP)
	ATEN_CPU_CAPABILITY=default $(BIN)/pytest -q -p no:cacheprovider tests/test_tf_golden.py

test: lint typecheck pytest golden-default docs

# The whole suite under the portable kernels, with a cold inductor cache of its own (inductor's
# on-disk cache is shared across capabilities and would reuse kernels built for another ISA).
test-portable: $(STAMP)
	cache=$$(mktemp -d) && \
	ATEN_CPU_CAPABILITY=default TORCHINDUCTOR_CACHE_DIR=$$cache $(BIN)/pytest -n 2 -p no:cacheprovider; \
	rc=$$?; rm -rf $$cache; exit $$rc

# Which golden cases differ from TF to the last bit on this machine (informational, exits 0).
golden-report: $(STAMP)
	$(BIN)/python -m tests.test_tf_golden

demo: $(STAMP)
	$(BIN)/python -m kerasopt demo
	$(BIN)/python -m kerasopt parity

# The TensorFlow run recorded in the package, replayed with kerasopt and torch.optim (no network).
parity: $(STAMP)
	$(BIN)/python -m kerasopt parity

# The documentation site, from this repository's files only (no network at build time); --strict
# turns every warning (a broken link, a missing docstring target) into a failure.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_step.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
