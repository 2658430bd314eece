# Two entry points for a newcomer: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo_out

.PHONY: demo test bench clean chromium

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned first so a CPU machine gets the CPU build; the rest comes from setup.cfg.
$(VENV)/.installed: $(BIN)/activate setup.cfg pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/wtal demo --out $(DEMO_OUT)

# lint and types first (seconds), then the tests; settings in pyproject.toml
test: $(VENV)/.test-installed chromium
	$(BIN)/ruff check wtal tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

# The HTML report's browser test renders in Debian's chromium: installed here when missing and
# make runs as root with apt-get; otherwise the test says why it is skipped (and fails under CI=true).
chromium:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium (Debian package) for tests/test_report_browser.py"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "warning: chromium could not be installed; the browser test will say so"; \
	fi

bench: $(VENV)/.test-installed
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info
