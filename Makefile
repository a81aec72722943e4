# `make train` and `make test` each set up the virtual environment they need (.venv) first:
# `make train` installs what the default run needs, `make test` adds the dev extras (pytest, the
# sweep launchers and sweeper, matplotlib for odex-report).
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
PYTEST_ARGS ?=
# pip's own output goes to a log (its notices, e.g. setuptools' note on editable installs, are many
# screens long); a failed install prints the log's end.
PIP := $(PY) -m pip install --progress-bar off
LOG := $(VENV)/install.log
define pip_logged
	@echo "make: pip install $(1) into $(VENV) (output in $(LOG))"
	@$(PIP) $(1) >>$(LOG) 2>&1 || { tail -n 40 $(LOG); echo "make: pip install $(1) failed; the whole log: $(LOG)"; exit 1; }
endef

.PHONY: train test install install-dev clean

$(VENV)/.base: pyproject.toml
	@test -x $(PY) || { echo "make: python3 -m venv $(VENV)"; python3 -m venv $(VENV); }
	@: > $(LOG)
	@# a fresh venv's pip (23.2) cannot build antlr4-python3-runtime, which hydra-core needs
	$(call pip_logged,-U pip)
	$(call pip_logged,-e .)
	@touch $@

$(VENV)/.installed: $(VENV)/.base
	$(call pip_logged,-e ".[dev]")
	@# the tests' reference for eval=autoattack/square (odex's own attacks): torchattacks pins
	@# requests~=2.25, which would downgrade wandb's stack, and imports without it
	$(call pip_logged,--no-deps torchattacks==3.5.1)
	@touch $@

install: $(VENV)/.base

install-dev: $(VENV)/.installed

train: $(VENV)/.base
	$(VENV)/bin/odex-train $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
