# The two commands a newcomer needs: `make demo` (search, retrain, compile, verify on QEMU) and
# `make test`. Both set up the machine first (Debian packages + .venv) when needed.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tvmnas-setup
OUT ?= out/demo
# int8 (quantization-aware training) matches float32's accuracy on the demo's data: see README.
PRECISION ?= int8

.PHONY: setup demo test test-fast test-all clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	./scripts/setup.sh

demo: $(STAMP)
	$(PY) scripts/search_and_compile.py --out $(OUT) --precision $(PRECISION)

# Unit tests plus the representative end-to-end (QEMU) tests marked `ci`.
test: $(STAMP)
	$(PY) -m pytest -m "not slow or ci" -q

# The tests that need neither a C compiler nor QEMU nor worker processes (tests/conftest.py marks
# the others `toolchain` and `workers`).
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not toolchain and not workers" -q

# Everything, including every slow end-to-end test.
test-all: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf out build .pytest_cache
