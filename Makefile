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

.PHONY: install apt venv launchers demo test lint unit bench clean-state
install: apt venv launchers

apt:
	@$(ROOT)/scripts/apt-ensure $(APT_RUNTIME) $(APT_TEST)

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(SYSPY) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
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
