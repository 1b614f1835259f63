# ticker — one command each: `make dev` runs the whole system, `make test` runs the suite.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

.PHONY: setup dev test bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml streamer/_assemble.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

# `make dev PORT=9000 STREAMER_PORT=9001 SIM_PORT=9002` picks the ports, as the same variables in the
# environment do; everything listens on 127.0.0.1 only.
dev: $(STAMP)
	$(VENV)/bin/ticker dev

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m tests.bench $(BENCH)

# mypy reads the code through a `ticker` package of links: the folders map to ticker.* only at install.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	mkdir -p .typecheck/ticker
	for d in core infra streamer jobs http; do ln -sfn ../../$$d .typecheck/ticker/$$d; done
	ln -sfn ../../infra/client .typecheck/ticker/client  # installed as ticker.client, not ticker.infra.client
	cd .typecheck && ../$(VENV)/bin/mypy --config-file ../pyproject.toml --namespace-packages --explicit-package-bases \
		--exclude '^ticker/infra/client/' -p ticker

clean:
	rm -rf $(VENV) .ticker .pytest_cache .ruff_cache .hypothesis .typecheck .mypy_cache *.egg-info
