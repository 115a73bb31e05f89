# The few commands people type. Everything runs inside .venv (created by `make install`).
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install services demo test test-shared test-all test-crash test-model lint bench bench-quick

install:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'

demo: install
	bash examples/two_devices.sh

# Everything on the embedded stores (tests/e2e/test_scale_out.py runs two servers on PostgreSQL and
# SeaweedFS behind nginx whatever the store). `services` installs nginx if it is missing and checks that
# PostgreSQL and Redis answer on 127.0.0.1 (starting them if it can): no test skips for want of one.
services:
	bash scripts/ci_services.sh

test: install services
	$(PY) -m pytest -q -x -m "not slow and not crash"

# The end-to-end suite again with every server on the shared stores (PostgreSQL, S3 on SeaweedFS, the
# PostgreSQL bus); to join `make test` once a whole run of it is green (issue 20).
test-shared: install services
	BOX_TEST_STORE=shared $(PY) -m pytest -q -x -m "not slow and not crash" tests/e2e

test-all: install
	$(PY) -m pytest -q

# SIGKILL of the server and the client at 144 scheduled points (over 100 land before the process ends by
# itself; each test prints how many), and power cuts of the server and a device (issue 17).
test-crash: install
	BOX_CRASH_POINTS=32 $(PY) -m pytest -q -x tests/e2e/test_crash.py tests/e2e/test_crash_points.py \
		tests/e2e/test_power_loss.py

# The randomized model test (tests/model) with 1,000 seeded runs instead of the 50 of `make test`;
# BOX_MODEL_RUNS=N sets another count, BOX_MODEL_OPS=-typechange leaves an op class out.
BOX_MODEL_RUNS ?= 1000
test-model: install
	BOX_MODEL_RUNS=$(BOX_MODEL_RUNS) $(PY) -m pytest -q tests/model

lint: install
	$(VENV)/bin/ruff check .

.PHONY: bench-watch bench-watch-quick

# Automatic sync: watch latency between two devices (200 edits) and 1,000 long polls on one server.
bench-watch: install
	$(PY) -m bench.watch_latency

bench-watch-quick: install
	$(PY) -m bench.watch_latency --quick

# Benchmarks against rsync, restic and borg (issue 3): bench/setup.sh installs the peers from Debian
# (needs root or sudo) and the Python extras; results go to bench/results/ and docs/benchmarks.md.
bench: install
	bash bench/setup.sh
	$(PY) -m bench.run

bench-quick: install
	bash bench/setup.sh
	$(PY) -m bench.run --quick

.PHONY: bench-scale bench-scale-quick
# Scale-out (issue 20): commits per second on SQLite, PostgreSQL, and two processes behind nginx; a big
# file's push and clone with blocks on the local folder and on SeaweedFS. Needs nginx (apt-get install nginx-light).
bench-scale: install
	$(PY) -m bench.scale

bench-scale-quick: install
	$(PY) -m bench.scale --quick
