# The book's commands. Each sets up what it needs (a virtual environment in .venv with
# everything installed) and can be run first, from a fresh clone:
#
#   make book       build the book into _build/html; a chapter executes again whenever its
#                   cells, the library, the packages it imports or the settings changed
#   make test       run the tests (python -m pytest)
#   make lab        open the chapters in JupyterLab (installed into .venv on first use;
#                   LAB_ARGS=--no-browser and the like go to JupyterLab)
#   make lint       ruff (lint and format check, notebooks included) and mypy
#   make test-fast  the quick tests only (not slow, not needing the built book or a browser)
#   make settings   show the remembered settings (below)
#   make clean      remove the built book and its execution cache (_build)
#
# Options, as `make book NAME=value`:
#   TORCH_INDEX=https://download.pytorch.org/whl/cpu   CPU-only PyTorch, for machines without
#                                                      a GPU (a far smaller install)
#   TORCH="torch==2.14.1 torchvision==0.29.1"          the PyTorch to install first (or local
#                                                      wheel files, for an offline install)
#   XCEPTION_DATA=../shared/data                       a local copy of CIFAR-10 (a relative
#                                                      path is relative to this folder)
#   XCEPTION_OFFLINE=1  HF_HUB_OFFLINE=1  XCEPTION_CIFAR_CHECKPOINT=...   (README, "Data")
#   PYTHON=python3.12  VENV=.venv                      the interpreter and the environment
# The options in REMEMBERED, once given (on the command line or in the environment), are
# written to settings.mk (git-ignored) and used by every later command until given again;
# `make book XCEPTION_DATA=` (empty) forgets one. The environment is set up again when
# requirements.txt or pyproject.toml change; to change TORCH or TORCH_INDEX for an existing
# environment, `rm -rf .venv` first.

REMEMBERED := XCEPTION_DATA XCEPTION_OFFLINE HF_HUB_OFFLINE XCEPTION_CIFAR_CHECKPOINT TORCH TORCH_INDEX
SETTINGS_FILE ?= settings.mk
-include $(SETTINGS_FILE)
# What was given (here, in the environment or remembered) before the defaults below apply.
GIVEN := $(strip $(foreach v,$(REMEMBERED),$(if $($(v)),$(v))))

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch torchvision
TORCH_INDEX ?=

BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
ifneq ($(filter-out /% ~%,$(XCEPTION_DATA)),)
override XCEPTION_DATA := $(abspath $(XCEPTION_DATA))
endif
# The chapters' settings reach build_book.py, pytest and JupyterLab (an empty one is not set).
$(foreach v,$(filter XCEPTION_% HF_%,$(GIVEN)),$(eval export $(v)))
# One make at a time: the data check must come before the set-up (tools/build_book.py).
.NOTPARALLEL:

.PHONY: book test lab lint test-fast settings data-check clean

book: settings data-check $(VENV)/.installed
	$(BIN)/python tools/build_book.py

test: settings $(VENV)/.installed
	$(BIN)/python -m pytest

test-fast: settings $(VENV)/.installed
	$(BIN)/python -m pytest -m "not slow and not book and not browser"

# JupyterLab is not part of the book's environment: installed on first use, with every
# installed package held at its version, so that the book's execution cache stays valid.
lab: settings $(VENV)/.installed
	test -x $(BIN)/jupyter-lab || { $(BIN)/python -m pip list --format=freeze --exclude-editable > $(VENV)/constraints.txt \
	  && $(BIN)/python -m pip install jupyterlab -c $(VENV)/constraints.txt \
	  || { echo "make lab: JupyterLab needs other versions of installed packages; installing it anyway"; \
	       $(BIN)/python -m pip install jupyterlab; }; }
	$(BIN)/python tools/build_book.py --lab $(LAB_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Seconds, before the set-up's downloads: the data named by XCEPTION_DATA exists, or else
# CIFAR-10 can be downloaded (standard library only, so the system Python runs it).
data-check:
	$(PYTHON) tools/build_book.py --check-data-only

settings:
	@printf '%s\n' '# Written by make: the settings of `make book`, `make test` and `make lab` (see Makefile).' \
	  $(foreach v,$(GIVEN),'$(v) ?= $($(v))') > $(SETTINGS_FILE)
	@echo "make: settings ($(SETTINGS_FILE)): $(if $(GIVEN),$(foreach v,$(GIVEN),$(v)=$($(v))),none)"

$(VENV)/.installed: requirements.txt pyproject.toml tools/ipython_kernel_config.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -r requirements.txt
	mkdir -p $(VENV)/etc/ipython && cp tools/ipython_kernel_config.py $(VENV)/etc/ipython/
	touch $@

clean:
	rm -rf _build
