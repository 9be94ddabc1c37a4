# Two entry points: `make demo` and `make test`. Each creates or reuses the
# virtual environment and installs what it needs, system packages included.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint sysdeps venv clean fuzz wheelhouse bench

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# System tools the demo and tests use: unshare, ip, faketime.
sysdeps:
	@bash scripts/sysdeps.sh

demo: $(STAMP) sysdeps
	PATH="$(CURDIR)/$(BIN):$$PATH" bash demo/demo.sh

lint: $(STAMP)
	$(BIN)/ruff format --check kit tests demo fuzz scripts
	$(BIN)/ruff check kit tests demo fuzz scripts
	$(BIN)/mypy --strict kit

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
# The tests start kit as a process some thousand times: its modules are
# compiled once up front (a sandbox may set PYTHONDONTWRITEBYTECODE), and
# the suite runs on every core (pytest-xdist; PYTEST_WORKERS=0 runs it in this process).
PYTEST_WORKERS ?= auto
test: $(STAMP) sysdeps lint
	$(BIN)/kit policy check bundles
	@$(BIN)/python -m compileall -q kit
	@$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

# Every wheel an offline host needs, for media: install there with
#   pip install --no-index --find-links WHEELHOUSE kit
WHEELHOUSE ?= wheelhouse
wheelhouse: $(STAMP)
	$(BIN)/python -m pip wheel -q --wheel-dir $(WHEELHOUSE) .
	@echo "wheelhouse: $$(ls $(WHEELHOUSE) | wc -l) wheels in $(WHEELHOUSE)/"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

# Coverage-guided fuzzing of every decoder and the QR frame parser (not part
# of `make test`, which runs a short Hypothesis smoke of the same targets).
# FUZZ_SECONDS per target. A crashing input is saved as
# fuzz/crashes/<target>-crash-<sha1>; every target still runs, and make fails
# at the end naming the targets with findings (turn each into a vector).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := bundle trust-root enrollment receipt receipt-batch manifest \
	revocation-list ledger-export qr-frames
fuzz: $(STAMP)
	$(BIN)/python -m pip install -q 'atheris>=2.3'
	@mkdir -p fuzz/crashes; failed=""; \
	for t in $(FUZZ_TARGETS); do \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
	  $(BIN)/python fuzz/run.py $$t -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
	    -artifact_prefix=fuzz/crashes/$$t- -print_final_stats=1 \
	    > fuzz/last-$$t.log 2>&1 || failed="$$failed $$t"; \
	  tail -n 3 fuzz/last-$$t.log; \
	done; \
	if [ -n "$$failed" ]; then \
	  echo "fuzz: findings in:$$failed (inputs in fuzz/crashes/)" >&2; exit 1; \
	fi

# Speed against the physical floor and the peers (docs/BENCHMARKS.md); not
# part of `make test`. BENCH_FULL=0 skips the 1,000,000-receipt reconcile (~3 min).
BENCH_JSON ?= bench/results.json
bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	@bash scripts/benchdeps.sh
	$(BIN)/python bench/run.py --json $(BENCH_JSON)
