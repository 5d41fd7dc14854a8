# NodeWarden: `make run` (agent + embedded collector, live events) and `make test`, as root.
# Both run `setup` first, which installs what a fresh Debian/Ubuntu machine lacks.
SHELL := /bin/bash
VENV  := .venv
NW    := $(VENV)/bin/nodewarden
PY    := $(VENV)/bin/python
ARGS  ?=

.PHONY: setup setup-test install-systemd run test test-unit bench lint clean image

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

# The agent's OCI image, without a registry or a container engine (docs/image.md): build/image/oci/ and
# build/image/nodewarden-agent-<version>.oci.tar; steps cached under build/image/cache/.
image: setup
	@command -v mmdebstrap >/dev/null && command -v umoci >/dev/null || \
	    { apt-get update -q && apt-get install -y -q --no-install-recommends mmdebstrap umoci; }
	$(PY) packaging/image/build.py $(ARGS)

install-systemd: setup
	bash systemd/install.sh

lint: setup
	$(VENV)/bin/ruff check agent collector nwwire tests bench

clean:
	rm -rf $(VENV) build *.egg-info agent/gen nwwire/gen
