# One entry point for people and CI. Every target sets up what it needs first:
# a virtual environment in .venv from pyproject.toml, and the pinned CDK CLI from package-lock.json.
#
#   make demo    set everything up, synthesize the whole app, then run the whole pipeline locally
#   make test    set everything up and run every check: ruff, pytest (templates, cdk-nag, cfn-lint)

PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
EXTRAS ?= ml,local,dev
CDK := PATH="$(BIN):$$PATH" npx --no-install cdk
OUTDIR ?= cdk.out

.DEFAULT_GOAL := help
.PHONY: help setup demo synth test lint diff accept format clean

help:
	@echo "make demo   set up, synthesize the whole app (templates in $(OUTDIR)/), then train, package, serve and"
	@echo "            call the model locally, no AWS account (DEMO_ARGS=--help lists the options)"
	@echo "make test   set up, then run ruff and the whole test suite"
	@echo "make synth  synthesize only (set-up assumed)"
	@echo "make diff   diff every stack against reviewed-templates/ (fails on an unreviewed change)"
	@echo "make accept make the current templates the reviewed ones (then commit reviewed-templates/)"
	@echo "make clean  remove .venv, node_modules, build and $(OUTDIR)"

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed; set PYTHON=python3.x")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

demo: setup synth
	$(BIN)/python -m dogbreeds.local.demo --templates $(OUTDIR) $(DEMO_ARGS)

synth: setup
	@rm -rf $(OUTDIR)
	$(CDK) synth --quiet --no-notices --output $(OUTDIR)
	@echo
	@echo "Synthesized (cdk-nag AwsSolutions: no unacknowledged finding). Templates:"
	@ls -1 $(OUTDIR)/*.template.json

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# One pytest worker per core; tests sharing the session's SageMaker job run on one worker (xdist_group).
test: setup lint
	$(BIN)/pytest -n auto --dist loadgroup
	$(MAKE) --no-print-directory diff

diff: setup
	$(BIN)/python -m dogbreeds.review diff

accept: setup
	$(BIN)/python -m dogbreeds.review accept

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) node_modules $(OUTDIR) build
