# The two commands of the README: `make train` (the main job) and `make test` (the whole suite).
# Each creates .venv and installs the pinned stack on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
OUT     ?= runs/default
# torch is pinned exactly: a looser pin makes pip download several GB of CUDA wheels.
TORCH   := torch==2.14.1 torchvision==0.29.1
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true
export MPLBACKEND ?= Agg

.PHONY: train test nbtest pytest export clean-nbs venv bench
venv: $(STAMP)

$(STAMP): settings.ini setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]' $(TORCH)
	touch $(STAMP)

# train the default job (a class-conditional UNet on the built-in digits; --resume continues an interrupted run),
# then sample a grid with one row per class and the same images as a uint8 array
train: $(STAMP)
	$(BIN)/ddpm_course train --resume --out $(OUT)
	$(BIN)/ddpm_course sample --run $(OUT) --per-class 10 --out $(OUT)/samples.png --npz $(OUT)/samples.npz

test: nbtest pytest

# two notebooks at a time, one thread each: on 2 cores, more threads than cores makes PyTorch's thread pools spin
nbtest: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2

pytest: $(STAMP)
	$(BIN)/python -m pytest -q tests

# the package from the notebooks, the notebooks without their metadata noise, and the saved --help texts (chapter 14)
export: $(STAMP)
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean && $(BIN)/python -c 'from ddpm_course.launcher import write_help_cache; write_help_cache()'

bench: $(STAMP)
	$(BIN)/python bench/bench.py
