# Two commands a newcomer needs: `make run` and `make test`. Both work on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench fuzz catalog system-deps clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/trackrelay serve

# Debian packages the tests and the benchmark drive for real: swaks (a real SMTP client),
# chromium (browser tests), npm (axe-core), postfix/nginx/wrk (benchmark references).
system-deps:
	bash scripts/system-deps.sh

# axe-core (npm) checks the panel's pages for accessibility in the browser tests
AXE := .cache/npm/node_modules/axe-core/axe.min.js
$(AXE):
	npm install --no-save --no-audit --no-fund --prefix .cache/npm axe-core@4.14.1

test: $(STAMP) system-deps $(AXE)
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: $(STAMP) system-deps
	bash bench/run.sh

# the fuzz targets of tests/fuzz/ for minutes instead of the seconds `make test` gives them
FUZZ_EXAMPLES ?= 20000
fuzz: $(STAMP)
	TRACKRELAY_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -p no:cacheprovider -o timeout=0 tests/fuzz $(PYTEST_ARGS)

# after changing the panel's strings: the template (.pot) and the Hungarian catalog get the new
# msgids (empty, for a translator; a test fails until they are translated)
catalog: $(STAMP)
	$(BIN)/pybabel extract -F admin/babel.cfg -o admin/locale/messages.pot --no-location --omit-header --width=120 .
	$(BIN)/pybabel update -N --width=120 -i admin/locale/messages.pot -d admin/locale

clean:
	rm -rf $(VENV) var
