# The README's two commands are `make run` and `make test`; the rest are helpers.
PY := .venv/bin/python

.PHONY: install run up down restart test lint types fuzz bench reliability soak clean

install:
	@scripts/bootstrap.sh

run: install
	@$(PY) -m devstack run

up: install
	@$(PY) -m devstack up

down:
	@if [ -x $(PY) ]; then $(PY) -m devstack down; fi

# Rolling restart of one service's instances on the running stack: make restart SERVICE=private_chat
restart:
	@test -n "$(SERVICE)" || { echo "usage: make restart SERVICE=<name> (gateway, auth, users, private_chat, qr_ws, events)"; exit 2; }
	@$(PY) -m devstack restart $(SERVICE)

lint: install
	.venv/bin/ruff check .

types: install
	.venv/bin/mypy common/src gateway/src auth_service/src users_service/src private_chat_service/src qr_ws_service/src events_service/src devstack/src reliability

test: lint types
	.venv/bin/pytest

# Schemathesis against every service through nginx, long (make test runs a short pass of it).
fuzz: install
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-300} FUZZ_RANDOM=1 .venv/bin/pytest tests/test_fuzz.py -q

# The HTTP hot paths (bench/run.py), then the event gateway (bench/events.py); results in bench/results/.
bench: install
	@$(PY) -m bench; http=$$?; $(PY) -m bench.events && exit $$http

# Faults and rolling restarts under a steady mix, with the ledger (see reliability/README.md).
reliability: install
	@$(PY) -m reliability faults; faults=$$?; $(PY) -m reliability rolling && exit $$faults

# The same mix for SOAK_MINUTES (default 30): memory, p99, errors and sizes over time, with plots.
soak: install
	@$(PY) -m reliability soak

clean:
	@if [ -x $(PY) ]; then $(PY) -m devstack clean; else rm -rf .data; fi
