# Two entry points on a fresh machine with Python 3.11: `make demo` and `make test`.
# Each creates the virtual environment when it is missing (pinned by constraints.txt).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: venv warm demo lint test bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt "setuptools>=70" wheel
	$(PIP) install -c constraints.txt -e ".[test]"
	$(BIN)/python -c "import ssmdefense, torch, torchaudio, torchvision, art" 
	touch $@

# Compile the Numba kernels (float32, float64) and librosa's Numba functions into their on-disk
# caches, in two processes; seconds when already compiled. CI runs it before `make test`.
warm: venv
	$(BIN)/python -m ssmdefense.kernels.warm --part 1/2 & pid=$$!; \
	$(BIN)/python -m ssmdefense.kernels.warm --part 2/2 && wait $$pid

demo: venv
	$(BIN)/ssmdefense defend --defense ads --out runs/demo-ads --overwrite

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q -n auto --dist loadscope

bench: venv
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) runs build src/*.egg-info
