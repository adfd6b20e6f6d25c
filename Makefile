# The README's two commands: `make run` and `make test`. Both create .venv
# and install what they need on a machine with only Python 3.11.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PIP    := $(VENV)/bin/pip
CONFIG ?= conf/mailerq.conf

.PHONY: run test check-config bench clean

$(VENV)/.runtime: requirements.txt setup.py
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -e .
	touch $@

$(VENV)/.test: $(VENV)/.runtime requirements-test.txt
	$(PIP) install -q -r requirements-test.txt
	touch $@

run: $(VENV)/.runtime
	$(VENV)/bin/mailerq-gevent --config $(CONFIG)

check-config: $(VENV)/.runtime
	$(VENV)/bin/mailerq-gevent --config $(CONFIG) --check-config

test: $(VENV)/.test
	$(VENV)/bin/python -m pytest

bench: $(VENV)/.test
	$(VENV)/bin/python bench/queue.py
	$(VENV)/bin/python bench/inject.py
	$(VENV)/bin/python bench/relay.py
	$(VENV)/bin/python bench/throttle.py
	$(VENV)/bin/python bench/backlog.py

clean:
	rm -rf $(VENV) build *.egg-info
