# The two commands: `make run` serves the demo, `make test` checks everything.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BIND ?= 127.0.0.1:8000

.PHONY: run test test-all lint typecheck unit bench clean tools faults dist docs

# Every supported Python (3.11 to 3.13) found on this machine (PATH, then pyenv).
PYTHONS ?= 3.11 3.12 3.13


# The demo needs forklog and gunicorn only; the tests need the frameworks and tools too.
$(BIN)/.demo: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[gunicorn]'
	touch $@

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(BIN)/.demo

run: $(BIN)/.demo
	BIND=$(BIND) $(BIN)/gunicorn -c gunicorn_conf.py app:app

# The real tools under test, each with the file deploy/ ships for it: logrotate
# (test_logrotate.py), rsyslogd with RELP (test_syslog.py, test_relp.py), systemd-analyze (test_deploy.py),
# redis-server (Celery's broker in test_run_celery.py).
# Installed with apt-get when missing, as root; otherwise the command to run is named.
TOOLS := logrotate:logrotate rsyslogd:rsyslog systemd-analyze:systemd redis-server:redis-server
# rsyslog's RELP input (test_relp.py), a module rather than a command.
RELP_MODULE := /usr/lib/$(shell uname -m)-linux-gnu/rsyslog/imrelp.so
tools:
	@missing=""; for pair in $(TOOLS); do tool=$${pair%%:*}; pkg=$${pair##*:}; \
		command -v $$tool >/dev/null 2>&1 || [ -x /usr/sbin/$$tool ] || missing="$$missing $$pkg"; done; \
		[ -e $(RELP_MODULE) ] || [ -e /usr/lib/rsyslog/imrelp.so ] || missing="$$missing rsyslog-relp"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then \
			echo "make test needs:$$missing; run: sudo apt-get install -y$$missing" >&2; exit 1; fi; \
		export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && \
		apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

# The docs site (mkdocs.yml, docs/), warnings as errors; its code blocks are run by the tests.
docs: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir $$(mktemp -d)

# faults: the accounting tests again, each with a fault injected in the master; each must
# fail on its accounting assertion (tests/faults.py).
test: tools lint typecheck docs
	$(BIN)/python -m pytest
	$(BIN)/python -m tests.faults
	$(BIN)/python -m benchmarks --quick

faults: tools $(BIN)/.installed
	$(BIN)/python -m tests.faults

bench: wrk $(BIN)/.installed
	$(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks.chaos
	$(BIN)/python -m benchmarks.syslog
	$(BIN)/python -m benchmarks.http

# wrk drives gunicorn in benchmarks/http.py; installed with apt-get when missing, as root,
# otherwise the command to run is named.
.PHONY: wrk
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
		if [ "$$(id -u)" != 0 ]; then \
			echo "make bench needs wrk; run: sudo apt-get install -y wrk" >&2; exit 1; fi; \
		export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && \
		apt-get install -y -qq --no-install-recommends wrk >/dev/null; }

unit: $(BIN)/.installed
	$(BIN)/python -m pytest tests/unit

# The whole suite on each interpreter, each in its own .venv-3.X.
test-all:
	@set -e; for v in $(PYTHONS); do \
		py=""; for c in "$$(command -v python$$v)" $(HOME)/.pyenv/versions/$$v.*/bin/python$$v; do \
			if [ -n "$$c" ] && "$$c" -c '' 2>/dev/null; then py="$$c"; break; fi; \
		done; \
		if [ -z "$$py" ]; then echo "python$$v: not found"; exit 1; fi; \
		echo "== $$py"; \
		[ -x .venv-$$v/bin/python ] || "$$py" -m venv .venv-$$v; \
		.venv-$$v/bin/python -m pip install --quiet -e '.[test]'; \
		.venv-$$v/bin/python -m pytest -q -p no:cacheprovider; \
	done

# The sdist and the wheel, in dist/: pip install 'dist/forklog-0.1.0-py3-none-any.whl[gunicorn]'.
dist: $(BIN)/.demo
	$(BIN)/python -m pip install --quiet build
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

clean:
	rm -rf $(VENV) .venv-3.* logs dist build .pytest_cache .mypy_cache .ruff_cache
