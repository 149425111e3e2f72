# Two entry points: `make experiment DATA=...` runs the whole study on the CPU
# preset, `make test` runs the test suite. Both create .venv first if needed.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= data/img_align_celeba
ROOT ?= experiment
MODELS ?= dcgan wgan-gp
PRESET ?= cpu

.PHONY: experiment test venv clean-venv

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

venv: $(VENV)/.installed

experiment: $(VENV)/.installed
	PYTHON=$(abspath $(PY)) bash run_experiment.sh --local --data "$(DATA)" --root "$(ROOT)" \
		--preset $(PRESET) --models "$(MODELS)"

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

clean-venv:
	rm -rf $(VENV)
