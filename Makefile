# The two commands of the README:  `make study`  and  `make test`.
# Both create .venv on first use (torch==2.13.0 first, so pip keeps the local CPU build).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup study study-extra study-real test lint test-slow bench clean

# pip would compile every file of every package (13,000 files, 40 s); robustlab imports about 2,700 of them. So
# install without, then write the bytecode of what `robustlab list` imports (every registry), also where
# PYTHONDONTWRITEBYTECODE is set, as on our machines (a module without it is compiled again by every process).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile torch==2.13.0
	$(BIN)/python -m pip install -q --no-compile -e ".[test,semantic]"
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/robustlab list > /dev/null
	touch $(STAMP)

setup: $(STAMP)

study: $(STAMP)             ## train, evaluate and report the default digits study
	$(BIN)/robustlab study configs/digits.yaml

study-extra: $(STAMP)       ## the digits blocks of Zhu et al., Shi et al.'s capacity study and AALP (outside the default's 10 minutes)
	$(BIN)/robustlab study configs/zhu_digits.yaml
	$(BIN)/robustlab study configs/shi_digits.yaml
	$(BIN)/robustlab study configs/aalp_digits.yaml

study-real: $(STAMP)        ## the real-data studies of docs/real_data.md (needs: apt-get install dataset-fashion-mnist)
	$(BIN)/python -m pip install -q -e ".[data]"
	$(BIN)/robustlab study configs/fashion_mnist.yaml
	$(BIN)/robustlab study configs/mnist5k.yaml

test: lint                  ## lint and types, then the default test suite (slow studies excluded)
	$(BIN)/python -m pytest

lint: $(STAMP)              ## ruff (lint and format) and mypy over src/
	$(BIN)/ruff check src
	$(BIN)/ruff format --check src
	$(BIN)/mypy

test-slow: $(STAMP)         ## the slow studies and end-to-end reproductions
	$(BIN)/python -m pytest -m slow

bench: $(STAMP)             ## speed benchmarks (ratios, printed); peers: pip install --no-deps pyautoattack torchattacks adversarial-robustness-toolbox six tqdm multiprocess dill
	for f in benchmarks/*.py; do [ $$f = benchmarks/common.py ] && continue; echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
