# NodeWarden: `make run` (agent + embedded collector, live events) and `make test`, as root.
# Both run `setup` first, which installs what a fresh Debian/Ubuntu machine lacks.
SHELL := /bin/bash
VENV  := .venv
NW    := $(VENV)/bin/nodewarden
PY    := $(VENV)/bin/python
ARGS  ?=

.PHONY: setup setup-test install-systemd run test test-unit bench lint clean

setup:
	@bash scripts/setup.sh

setup-test:
	@bash scripts/setup.sh test

run: setup
	$(NW) run --collector embedded $(ARGS)

test: setup-test
	$(PY) -m pytest -q tests $(ARGS)

test-unit: setup
	$(PY) -m pytest -q tests/unit $(ARGS)

bench: setup
	$(PY) -m bench $(ARGS)

install-systemd: setup
	bash systemd/install.sh

lint: setup
	$(VENV)/bin/ruff check agent collector nwwire tests bench

clean:
	rm -rf $(VENV) build *.egg-info agent/gen nwwire/gen
