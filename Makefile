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

.PHONY: train test test-other-precision nbtest pytest export clean-nbs venv bench
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

# The whole suite: every notebook (as nbdev_test runs it: tests/test_notebooks.py) and every test of tests/, two at a time with
# one torch thread each (pytest-xdist; a free worker takes the next test file or notebook, longest first: tests/conftest.py);
# and, in a third process beside them, the tests whose result depends on the network's precision once more, under the other
# setting of DDPM_CPU_BF16 (test-other-precision, a target of its own; its report follows the main one). It fills the two
# cores where the main run leaves one idle, instead of running after it. The exit status is 0 only when both pass.
test: $(STAMP)
	@log=$$(mktemp); $(MAKE) --no-print-directory test-other-precision >$$log 2>&1 & other=$$!; \
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadscope --no-loadscope-reorder tests; main=$$?; \
	wait $$other; prec=$$?; echo; echo "make test-other-precision:"; cat $$log; rm -f $$log; \
	test $$main -eq 0 && test $$prec -eq 0

# DDPM_CPU_BF16=1 where this CPU has no bf16 instructions (bf16 emulated: slower), 0 where it has them (fp32); one process,
# with a pytest temporary folder of its own (make test runs it beside the main run)
test-other-precision: $(STAMP)
	DDPM_CPU_BF16=$$(env -u DDPM_CPU_BF16 $(BIN)/python -c 'from ddpm_course.machine import cpu_has_bf16; print(int(not cpu_has_bf16()))') \
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m precision --basetemp=$$(mktemp -d) tests

# the notebooks alone, as a reader runs them
nbtest: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2

pytest: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadscope --no-loadscope-reorder tests

# the package from the notebooks, and the notebooks without their metadata noise
export: $(STAMP)
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean

bench: $(STAMP)
	$(BIN)/python bench/bench.py
