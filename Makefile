# Two entry points for a fresh machine (Debian, Python 3.11, root):
#   make demo   set everything up, then verify the embedded default pair (Fashion-MNIST MLP ×16)
#   make test   set everything up, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast figs lint bench setup dataset

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" || $(PY) -m pip install --quiet torch torchvision
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# Debian ships the real Fashion-MNIST; elsewhere lewc falls back to torchvision's download.
dataset:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null || echo "apt-get could not install dataset-fashion-mnist; torchvision will download it"; \
	fi

demo: setup dataset
	$(PY) -m lewc.verify

# Two pytest-xdist workers, whole test files each (module fixtures built once): the subprocess tests
# run one thread and leave a core idle in one process. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: setup dataset
	$(PYTEST)

test-fast: setup dataset
	$(PYTEST) -m "not slow"

figs: setup
	$(PY) -m lewc.commands.figs

lint: setup
	$(VENV)/bin/ruff check .

bench: setup dataset
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_verify.py
	$(PY) benchmarks/bench_bn.py
