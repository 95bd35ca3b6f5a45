# Two commands for a fresh machine: `make reproduce` and `make test` (see README.md).
# The environment is a local virtualenv (.venv) created on first use. torch is pinned to the CPU
# build by constraints.txt so CI and laptops never pull a multi-GB CUDA wheel; GPU users install
# their CUDA torch first (see README) or use environment.yml.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PROFILE ?= demo
ONLY ?=
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

SEEDS ?= 5

.PHONY: env reproduce check retrain test test-fast lab clean-cache help

help:
	@echo "make reproduce   # create .venv if missing, run every notebook on the embedded demo (PROFILE=$(PROFILE))"
	@echo "make test        # create .venv if missing, run the test suite offline"
	@echo "make check       # compare tables/$(PROFILE) and figures/$(PROFILE) with the committed files"
	@echo "make retrain     # retrain the LoRA adapters over SEEDS=$(SEEDS) seeds, check the shipped ones"
	@echo "make lab         # JupyterLab on notebooks/ with the project's kernel"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch
	$(PY) -m pip install -q -c constraints.txt -e ".[test,voxtral]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

env: $(STAMP)

# Regenerate, then compare with the committed tables and figures (fails on any difference).
reproduce: $(STAMP)
	$(VENV)/bin/rlalm reproduce --profile $(PROFILE) $(if $(ONLY),--only $(ONLY),)
	$(VENV)/bin/rlalm reproduce --profile $(PROFILE) --check

check: $(STAMP)
	$(VENV)/bin/rlalm reproduce --profile $(PROFILE) --check

# Retrain the LoRA adapters over SEEDS seeds; checks the shipped adapters' cells (mean ± sd).
retrain: $(STAMP)
	$(VENV)/bin/rlalm retrain --profile $(PROFILE) --seeds $(SEEDS)

test: $(STAMP)
	$(PY) -m pytest -q -ra

test-fast: $(STAMP)
	$(PY) -m pytest -q -ra -m "not slow and not notebooks"

# JupyterLab refuses to start as root without --allow-root (containers, CI machines).
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root,)

clean-cache:
	rm -rf cache runs
