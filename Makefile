# The book's two jobs. Each sets up what it needs (a virtual environment in .venv with
# everything installed) and can be run first, from a fresh clone:
#
#   make book    build the book into _build/html; a chapter executes again whenever its
#                cells, the library, its records or the installed packages changed
#   make test    run the tests (python -m pytest)
#
# Options, as `make book NAME=value`:
#   TORCH_INDEX=https://download.pytorch.org/whl/cpu   CPU-only PyTorch, for machines without
#                                                      a GPU (a far smaller install)
#   TORCH="torch==2.14.1 torchvision==0.29.1"          the PyTorch to install first
#   XCEPTION_DATA=../shared/data                       a local copy of CIFAR-10 (a relative
#                                                      path is relative to this folder)
#   PYTHON=python3.12  VENV=.venv                      the interpreter and the environment
# The environment is set up again when requirements.txt or pyproject.toml change; to change
# TORCH or TORCH_INDEX later, `rm -rf .venv` first.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch torchvision
TORCH_INDEX ?=

BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
ifneq ($(filter-out /% ~%,$(XCEPTION_DATA)),)
export XCEPTION_DATA := $(abspath $(XCEPTION_DATA))
endif

.PHONY: book test clean

book: $(VENV)/.installed
	$(BIN)/python tools/build_book.py

test: $(VENV)/.installed
	$(BIN)/python -m pytest

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -r requirements.txt
	touch $@

clean:
	rm -rf _build
