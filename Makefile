# `make demo` and `make test` each create .venv when missing and install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch and torchvision must come as a matching pair (a mismatched torchvision fails to import).
TORCH_PACKAGES ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.odezoo-installed
# The docs site is built in a venv of its own holding only the docs tools (docs/requirements.txt, the
# `docs` extra): mkdocstrings reads odezoo's source statically, so neither odezoo nor torch is installed
# there, and torchattacks' old `requests` pin in .venv cannot conflict with mkdocs-material.
DOCS_VENV ?= .venv-docs
DOCS_STAMP := $(DOCS_VENV)/.odezoo-docs-installed

.PHONY: demo test bench docs clean-venv

$(STAMP): pyproject.toml plugins/odezoo-rk3w/pyproject.toml plugins/odezoo-bs32/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PACKAGES)
	$(PY) -m pip install --quiet -e ".[recipes,attacks,crosscheck,dev]" -e plugins/odezoo-rk3w -e plugins/odezoo-bs32
	touch $(STAMP)

$(DOCS_STAMP): docs/requirements.txt
	test -x $(DOCS_VENV)/bin/python || $(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DOCS_VENV)/bin/python -m pip install --quiet -r docs/requirements.txt
	touch $(DOCS_STAMP)

# `make demo` prints per-phase progress and the time left; `make demo DEMO_FLAGS=--long` is the longer version.
DEMO_FLAGS ?=
demo: $(STAMP)
	@echo "odezoo demo: setting up .venv took until now; training starts (odezoo demo --help lists the flags)"
	$(VENV)/bin/odezoo demo $(DEMO_FLAGS)

# tests/test_docs.py builds the site with $(DOCS_VENV), so the docs are checked by every test run.
# One test process per core (pytest-xdist; each process runs one torch thread, tests/conftest.py);
# a file's tests stay in one process, so a module's shared fixture is built once.  TEST_JOBS=0 runs
# them in this process.
TEST_JOBS ?= auto
test: $(STAMP) $(DOCS_STAMP)
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/run.py
	$(PY) benchmarks/per_sample_times.py --threads 1

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/mkdocs build --strict

clean-venv:
	rm -rf $(VENV) $(DOCS_VENV)
