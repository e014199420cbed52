# make run: the daemon on the built-in simulator.  make test: the whole suite.
# Each target creates the virtual environment it needs.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed

CHROMIUM := /usr/bin/chromium

.PHONY: run test bench clean web-screenshot mosquitto

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/evsed run -c config/simulator.toml

# The web page tests drive Debian's chromium (never a downloaded browser build).
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core; \
	else echo "make test: the web page tests need Debian's chromium: sudo apt-get install chromium" >&2; fi

test: $(STAMP) $(CHROMIUM) mosquitto
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy --strict evsed/core
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest -q

# The MQTT tests run a real broker on loopback: Debian's mosquitto, installed when missing (as root).
mosquitto:
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || { \
	  export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq mosquitto >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq mosquitto; }; }

bench: $(STAMP) mosquitto
	$(VENV)/bin/python bench/reaction.py
	$(VENV)/bin/python bench/footprint.py
	$(VENV)/bin/python bench/web.py
	$(VENV)/bin/python bench/mqtt.py
	$(VENV)/bin/python bench/records.py
	$(VENV)/bin/python bench/failsafe_dropout.py

web-screenshot: $(STAMP) $(CHROMIUM)
	EVSED_WEB_SCREENSHOT=docs/web.png $(VENV)/bin/python -m pytest -q -p no:randomly tests/test_web_browser.py -k screenshot

clean:
	rm -rf $(VENV) build *.egg-info
