# The README's two commands: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt backends/pytorch/bernoulli.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[mindspore,dev,ray]'
	touch $(STAMP)

demo: setup
	$(PY) -m harness compare --recipe demo --quiet

# The tests by file on up to 4 processes (one per core): most of them run one core at a time.
test: setup
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile

bench: setup
	$(PY) -m harness bench

clean:
	rm -rf $(VENV) runs .pytest_cache
