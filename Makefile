# mammo_keras: the Makefile only dispatches; settings live in experiments/ configs and the CLI.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

PAPER   ?= chougrad2018
PROFILE ?= tiny
DATA    ?=
TEST_WORKERS ?= auto

.PHONY: install test test-all reproduce-table2 bench clean help

help:
	@echo "make install   create $(VENV) and install mammo_keras with its test needs"
	@echo "make test      install if needed, then run the test suite on every core (slow tests skipped)"
	@echo "make test-all  also run the tests marked slow"
	@echo "make reproduce-table2 [PAPER=shen2017|jain_levy|coccomini2021] [PROFILE=tiny|cpu|paper] [DATA=DIR]"
	@echo "               run a paper's Table 2 (default: Chougrad 2018 on the phantom data, tiny profile)"
	@echo "make bench     speed benchmarks side by side (ratios printed; figures -> benchmarks/results.json)"
	@echo "make clean     remove build outputs (keeps $(VENV), prepared/ and results/)"

$(STAMP): requirements.txt requirements-nodeps.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal --runslow

reproduce-table2: $(STAMP)
	$(BIN)/mammo-keras reproduce $(PAPER)/table2 --profile $(PROFILE) $(if $(DATA),--data $(DATA),)

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf build dist *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
