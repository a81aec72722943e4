# `make train` and `make test` each set up the virtual environment they need (.venv) first.
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
PYTEST_ARGS ?=

.PHONY: train test install clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	# a fresh venv's pip (23.2) cannot build antlr4-python3-runtime, which hydra-core needs
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

train: $(VENV)/.installed
	$(VENV)/bin/odex-train $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
