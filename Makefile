# make run: the daemon on the built-in simulator.  make test: the whole suite.
# Each target creates the virtual environment it needs: make run only what running needs,
# make test the test toolchain as well (its environment then serves make run too).
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
# The demo's config and state (sessions, the signing key) stay in this checkout, as root too:
# a real install later starts clean in /var/lib/evsed.
DEMO := $(CURDIR)/.demo

CHROMIUM := /usr/bin/chromium
SYSTEMD_ANALYZE := /usr/bin/systemd-analyze

.PHONY: run test bench campaign clean web-screenshot mosquitto

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(STAMP) $(RUN_STAMP)

$(RUN_STAMP): pyproject.toml
	@echo "make run: installing evsed and the packages it runs on into $(VENV) (once; pip shows its progress)"
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -e .
	touch $(RUN_STAMP)

run: $(RUN_STAMP)
	@mkdir -p $(DEMO)
	@{ cat config/simulator.toml; printf '\n[store]\nstate_dir = "%s/state"  # make run: the demo keeps its sessions here\n' '$(DEMO)'; } > $(DEMO)/evsed.toml
	@echo "make run: the daemon on the simulator, its config and sessions in $(DEMO)/; drive it from another terminal: $(VENV)/bin/evsed sim plug"
	$(VENV)/bin/evsed run -c $(DEMO)/evsed.toml

# The web page tests drive Debian's chromium (never a downloaded browser build).
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core; \
	else echo "make test: the web page tests need Debian's chromium: sudo apt-get install chromium" >&2; fi

# tests/test_install.py checks the units with systemd-analyze (verify, security).
$(SYSTEMD_ANALYZE):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd; \
	else echo "make test: the unit checks need systemd-analyze: sudo apt-get install systemd" >&2; fi

test: $(STAMP) $(CHROMIUM) $(SYSTEMD_ANALYZE) mosquitto
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy --strict evsed/core
	$(VENV)/bin/mypy --strict --follow-imports=silent evsed/uplink
	$(VENV)/bin/mypy --strict --follow-imports=silent evsed/wire.py evsed/protocol*.py evsed/control evsed/shell/host.py
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest -q

# The MQTT tests run a real broker on loopback: Debian's mosquitto, installed when missing (as root).
mosquitto:
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || { \
	  export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq mosquitto >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq mosquitto; }; }

# The footprint is a production install's: the project with its ocpp extra, no test extras,
# compiled bytecode (bench/footprint.py says why the dev environment measures more).
BENCH_VENV := .venv-bench

# The benches start `evsed run` with its services as this machine has it: as root here, without the
# service users `evsed install` makes, the services stay root (never so on an installed charger).
bench campaign: export EVSED_UNSAFE_SERVICES_AS_ROOT := 1

bench: $(STAMP) mosquitto
	$(VENV)/bin/python bench/reaction.py --flood 1000 --slow-journal
	$(VENV)/bin/python bench/flood.py
	rm -rf $(BENCH_VENV) && $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet '.[ocpp]'
	$(VENV)/bin/python bench/footprint.py --python $(BENCH_VENV)/bin/python
	$(VENV)/bin/python bench/cli.py --python $(BENCH_VENV)/bin/python
	$(VENV)/bin/python bench/web.py
	$(VENV)/bin/python bench/web_history.py
	$(VENV)/bin/python bench/mqtt.py
	$(VENV)/bin/python bench/records.py
	$(VENV)/bin/python bench/plans.py
	$(VENV)/bin/python bench/failsafe_dropout.py
	$(VENV)/bin/python bench/campaign.py --kills 200
	$(VENV)/bin/python bench/campaign.py --load 3000

# kill -9 at random points of simulated sessions, 1000 times (make test runs 8, make bench 200)
campaign: $(STAMP)
	$(VENV)/bin/python bench/campaign.py --kills 1000

web-screenshot: $(STAMP) $(CHROMIUM)
	EVSED_WEB_SCREENSHOT=docs/web.png EVSED_WEB_SCREENSHOT_PHONE=docs/web-phone.png $(VENV)/bin/python -m pytest -q -p no:randomly tests/test_web_browser.py -k "screenshot or phone"

clean:
	rm -rf $(VENV) $(BENCH_VENV) $(DEMO) build *.egg-info
