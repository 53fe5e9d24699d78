# Baton: the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
KB     ?= nlu_data
RASA_VENV  := .venv-rasa
RASA_STAMP := $(RASA_VENV)/.installed
# Rasa 3.6 needs Python 3.10: PYTHON310, else python3.10 if it runs, else pyenv's newest 3.10.
PYTHON310 ?= $(shell (python3.10 -c '' 2>/dev/null && command -v python3.10) || \
	ls -d $$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)/versions/3.10.*/bin/python 2>/dev/null | tail -n 1)

.DEFAULT_GOAL := help
.PHONY: help install browser run chat train rasa rasa-venv test lint format bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; Baton needs Python 3.11 (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first: the CPU build on this machine's disk, so nothing pulls a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install Baton with everything it needs

# The browser tests drive Debian's Chromium (Playwright must never download one).
browser: ## Install Debian's Chromium for the browser tests (apt; needs root or sudo)
	@if [ ! -x /usr/bin/chromium ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi
	@/usr/bin/chromium --version

run: install ## Train the default knowledge base if needed, then serve the chat page on 127.0.0.1:8000
	$(VENV)/bin/baton serve --kb $(KB)

chat: install ## Chat with the bot in the terminal instead
	$(VENV)/bin/baton chat --kb $(KB)

train: install ## Train the NLU model and index for KB (default nlu_data)
	$(VENV)/bin/baton train --kb $(KB)

$(RASA_STAMP): bot/rasa/constraints-py310.txt
	@[ -n "$(PYTHON310)" ] && "$(PYTHON310)" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null || { \
		echo "error: Rasa 3.6 needs Python 3.10, and none was found (looked for python3.10 and pyenv's 3.10.x)."; \
		echo "       Install it (e.g. pyenv install 3.10) or point to one: make rasa PYTHON310=/path/to/python3.10"; exit 1; }
	"$(PYTHON310)" -m venv $(RASA_VENV)
	$(RASA_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(RASA_VENV)/bin/python -m pip install --quiet rasa==3.6.21 jieba -c bot/rasa/constraints-py310.txt
	touch $(RASA_STAMP)

rasa-venv: $(RASA_STAMP) ## Build the Rasa venv (.venv-rasa, Python 3.10, ~3 minutes, 2.7 GB)

rasa: install rasa-venv ## Train Rasa on KB and run it on 127.0.0.1:5005 with Baton's actions (see README)
	RASA_TELEMETRY_ENABLED=false BATON_RASA_VENV=$(RASA_VENV) $(VENV)/bin/baton rasa serve --kb $(KB)

# The three installs are independent: run them side by side (most of their time is unpacking).
test: ## Install what the tests need, lint, then run every test (unit, integration, real browser, real Rasa)
	@$(MAKE) --no-print-directory -j3 install browser rasa-venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest

lint: install ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install ## Reformat the code with ruff
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install ## Run the benchmarks of bench/ (minutes; see bench/RESULTS.md)
	bash bench/run_all.sh

clean: ## Remove the venvs and trained models
	rm -rf $(VENV) $(RASA_VENV) var
