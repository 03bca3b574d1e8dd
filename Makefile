# ktlab: two commands matter -- `make run` (the main job) and `make test` (unit tests + nbval).
# Both create or reuse .venv and install the pinned environment first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ktlab-installed

# Use the offline data mirror beside the repository when there is one (classroom / CI layout).
ifeq ($(KTLAB_DATA_DIR),)
ifneq ($(wildcard ../shared/data/sst2),)
export KTLAB_DATA_DIR := $(abspath ../shared/data)
endif
endif
export TRANSFORMERS_VERBOSITY ?= error
export TOKENIZERS_PARALLELISM ?= false

NBVAL_FLAGS := --nbval-lax --nbval-current-env --nbval-cell-timeout=300 \
               --nbval-sanitize-with tests/nbval_sanitize.cfg

.PHONY: install run test unit nbval lab exercises bench clean

install: $(STAMP)

$(STAMP): requirements/pins.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -r requirements/pins.txt
	$(BIN)/python -m pip install --quiet --no-deps -e . --config-settings editable_mode=compat
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/ktlab env
	$(BIN)/ktlab run sentiment --profile quick

test: $(STAMP)
	$(BIN)/python -m pytest -q tests notebooks solutions $(NBVAL_FLAGS) --junitxml=runs/pytest-report.xml

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests

nbval: $(STAMP)
	$(BIN)/python -m pytest -q notebooks solutions $(NBVAL_FLAGS)

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=.

exercises: $(STAMP)
	$(BIN)/ktlab exercises build

clean:
	rm -rf $(VENV) .pytest_cache
