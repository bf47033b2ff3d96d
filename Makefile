# matou: `make demo` and `make test` work on a fresh Debian 12 machine as root; each installs what is missing.
SHELL := /bin/bash
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
SYSPY := /usr/bin/python3
BINDIR ?= /usr/local/bin
PYTEST_ARGS ?=

# Debian packages: what matou needs at run time, what its tests drive as peers, and the benchmarks' baselines.
APT_RUNTIME := python3 python3-venv python3-dev gcc make git ca-certificates iproute2 nftables iptables kmod \
	procps psmisc util-linux busybox-static debootstrap tini
APT_TEST := tmux crun runc podman skopeo buildah docker-registry uidmap conmon containernetworking-plugins \
	golang-github-containers-common apache2-utils curl
APT_BENCH := hyperfine docker.io containerd

.PHONY: install apt venv compose launchers demo test lint unit bench clean-state
install: apt venv compose launchers

apt:
	@$(ROOT)/scripts/apt-ensure $(APT_RUNTIME) $(APT_TEST)

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(SYSPY) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

# docker-compose 1.29 for tests/compat, in a venv of its own: it pins PyYAML<6 (built with Cython<3) and docker-py<7
COMPOSE_VENV := $(ROOT)/.venv-compose
compose: $(COMPOSE_VENV)/.installed

$(COMPOSE_VENV)/.installed:
	@test -x $(COMPOSE_VENV)/bin/python || $(SYSPY) -m venv $(COMPOSE_VENV)
	$(COMPOSE_VENV)/bin/pip install -q "cython<3" wheel setuptools
	$(COMPOSE_VENV)/bin/pip install -q --no-build-isolation "PyYAML==5.4.1"
	$(COMPOSE_VENV)/bin/pip install -q "docker-compose==1.29.2" "docker==6.1.3" "requests<2.32" "urllib3<2"
	@touch $@

launchers: venv
	@$(ROOT)/scripts/mklaunchers $(ROOT) $(VENV) $(BINDIR)

demo: install
	@$(ROOT)/scripts/demo

lint: install
	$(VENV)/bin/ruff check src tests bench
	cd $(ROOT) && PYTHONPATH=$(ROOT)/src $(VENV)/bin/lint-imports

unit: install
	$(PY) -m pytest -q -x $(PYTEST_ARGS)

test: lint unit

bench: install
	@$(ROOT)/scripts/apt-ensure $(APT_BENCH)
	@for b in $(ROOT)/bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done
