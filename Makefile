# kibble: `make demo` (set up + the main job on built-in data), `make test` (set up + the test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKSPACE ?= workspaces/demo
export HF_HUB_OFFLINE ?= 1

.PHONY: setup weights demo test test-fast clean labelstudio

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

# torch/torchvision first and pinned: pip takes these wheels from the machine's local store
# (a bare `torch` would pull a multi-GB build from the index).
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

weights: setup
	$(BIN)/python scripts/convert_effnet_lite0.py

demo: setup weights
	$(BIN)/kibble import workspace=$(WORKSPACE) overwrite=true inject_noise.rate=0.2
	$(BIN)/kibble loop workspace=$(WORKSPACE) experiment=demo_loop
	$(BIN)/kibble train workspace=$(WORKSPACE) experiment=demo_digits
	@echo "round reports (queue gallery, test metrics vs targets, loop curves): $(WORKSPACE)/rounds/*/report.html"

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# A real Label Studio server for the round-trip test, in its own venv so its dependencies never touch kibble's.
LS_VENV ?= .venv-labelstudio
$(LS_VENV)/bin/label-studio:
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install --upgrade pip
	$(LS_VENV)/bin/pip install "label-studio>=1.13,<2"

labelstudio: $(LS_VENV)/bin/label-studio

clean:
	rm -rf $(VENV) $(LS_VENV) workspaces
