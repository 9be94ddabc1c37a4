# Two entry points: `make demo` and `make test`. Each creates or reuses the
# virtual environment and installs what it needs, system packages included.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint sysdeps venv clean fuzz wheelhouse

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
test: $(STAMP) sysdeps lint
	$(BIN)/kit policy check bundles
	@$(BIN)/python -m pytest -q; rc=$$?; \
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

# Coverage-guided fuzzing of every decoder (not part of `make test`, which runs
# a short Hypothesis smoke of the same targets). FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 60
fuzz: $(STAMP)
	$(BIN)/python -m pip install -q 'atheris>=2.3'
	@for t in bundle trust-root enrollment receipt receipt-batch manifest; do \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
	  $(BIN)/python fuzz/run.py $$t -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
	    -print_final_stats=1 > fuzz/last-$$t.log 2>&1; rc=$$?; \
	  tail -n 3 fuzz/last-$$t.log; [ $$rc -eq 0 ] || exit $$rc; \
	done
