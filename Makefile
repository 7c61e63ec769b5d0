# The two commands: `make run` (install, migrate, serve) and `make test` (install dev deps, test).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test test-models fuzz lint bench-engine bench-gateway install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Stamps re-run pip only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Embedded defaults: SQLite under ./var, in-process limiter store. The first run creates an
# admin key (printed, saved to ./var/admin-key, mode 0600) unless SLUICEGATE_ADMIN_KEY is set,
# and fetches SmolLM2-135M-Instruct (98 MB, from the package index, SHA-256 checked) into
# ./var/models once; later runs work offline (a failed fetch, e.g. offline on the first run, is
# reported and the server serves `tiny` alone). The models load and warm up as it starts.
run: install
	-$(BIN)/sluicegate models fetch
	$(BIN)/sluicegate migrate
	$(BIN)/sluicegate admin bootstrap
	$(BIN)/sluicegate serve --host $(HOST) --port $(PORT)

# pytest exits 5 when it collected nothing: say so instead of a bare "Error 5".
test: install-dev
	@$(BIN)/python -m pytest -q $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)" >&2; \
	elif [ $$status -ne 0 ]; then echo "make test: pytest exited $$status" >&2; fi; \
	exit $$status

# The real-model group (`-m real_model`): SmolLM2-135M-Instruct against transformers loading
# the same GGUF (token-exact greedy decoding, chat template, tokenization); fetches it once.
test-models: install-dev
	$(BIN)/sluicegate models fetch
	@OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q -m real_model tests/inference $(PYTEST_ARGS); status=$$?; \
	if [ $$status -ne 0 ]; then echo "make test-models: pytest exited $$status" >&2; fi; \
	exit $$status

# The schemathesis run of tests/fuzz with many more examples per operation (the suite runs 5).
FUZZ_EXAMPLES ?= 200
fuzz: install-dev
	SLUICEGATE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -s -p no:cacheprovider \
		--timeout 0 tests/fuzz $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy api auth backends billing cli core inference migrations bench

# The gateway benchmark drives load with wrk (Debian package), installed here if missing.
bench-gateway: install-dev
	command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	$(BIN)/python -m bench.gateway $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

# vLLM (#14): its own environment, cached (deploy/vllm-env.sh says why; VLLM_PACKAGE picks the
# CUDA build on a GPU host), and the `vllm` test group against it (real vLLM, minutes).
VLLM_ENV ?= $(HOME)/.cache/sluicegate/vllm-venv
.PHONY: vllm test-vllm
vllm:
	PYTHON=$(PYTHON) deploy/vllm-env.sh $(VLLM_ENV)

test-vllm: install-dev vllm
	SLUICEGATE_VLLM_ENV=$(VLLM_ENV) $(BIN)/python -m pytest -q -m vllm tests/vllm $(PYTEST_ARGS)

# The web console (#15) in headless Chromium (Debian's chromium + chromium-driver; `.ci/run`
# installs them) against a live gateway. `make screenshots` also saves every page at
# 1280x800 and 390x844 under docs/screenshots/ (the README shows them).
.PHONY: test-browser screenshots
test-browser: install-dev
	$(BIN)/python -m pytest -q -m browser tests/browser $(PYTEST_ARGS)

screenshots: install-dev
	SLUICEGATE_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -q -m browser \
		tests/browser/test_console_journey.py::test_the_whole_journey $(PYTEST_ARGS)

# Peers of `python -m bench.engine --peers`, built from the package registries into
# ~/.cache/sluicegate (kept across runs): llama.cpp's `llama-server` from the sources the
# llama-cpp-python sdist vendors, and llama-cpp-python in its own venv, bound to that same
# build of the libraries (LLAMA_BUILD=OFF: no second 25-minute compile).
SLUICEGATE_CACHE ?= $(HOME)/.cache/sluicegate
LLAMA_CPP_PYTHON_VERSION := 0.3.36
LLAMA_SDIST := $(SLUICEGATE_CACHE)/downloads/llama_cpp_python-$(LLAMA_CPP_PYTHON_VERSION).tar.gz
LLAMA_SRC := $(SLUICEGATE_CACHE)/src/llama_cpp_python-$(LLAMA_CPP_PYTHON_VERSION)
LLAMA_BUILD := $(LLAMA_SRC)/vendor/llama.cpp/build
LLAMA_VENV := $(SLUICEGATE_CACHE)/llama-cpp-venv

.PHONY: llama-server llama-cpp-python

$(LLAMA_SDIST):
	mkdir -p $(dir $@)
	$(PYTHON) -m pip download --quiet --no-binary :all: --no-deps -d $(dir $@) \
		llama-cpp-python==$(LLAMA_CPP_PYTHON_VERSION)

# tar keeps the archive's timestamps, so re-extracting never makes a cached build stale.
$(LLAMA_SRC)/.extracted: | $(LLAMA_SDIST)
	mkdir -p $(dir $(LLAMA_SRC))
	tar -xzf $(LLAMA_SDIST) -C $(dir $(LLAMA_SRC))
	touch $@

$(LLAMA_BUILD)/bin/llama-server: | $(LLAMA_SRC)/.extracted
	cmake -S $(LLAMA_SRC)/vendor/llama.cpp -B $(LLAMA_BUILD) -DCMAKE_BUILD_TYPE=Release \
		-DGGML_NATIVE=ON -DLLAMA_CURL=OFF
	cmake --build $(LLAMA_BUILD) --target llama-server -j $$(nproc)

llama-server: $(LLAMA_BUILD)/bin/llama-server

$(LLAMA_VENV)/.installed: | $(LLAMA_BUILD)/bin/llama-server
	$(PYTHON) -m venv $(LLAMA_VENV)
	CMAKE_ARGS="-DLLAMA_BUILD=OFF" $(LLAMA_VENV)/bin/pip install --quiet $(LLAMA_SDIST)
	lib=$$($(LLAMA_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/llama_cpp/lib; \
		mkdir -p $$lib && cp -P $(LLAMA_BUILD)/bin/lib*.so* $$lib/
	touch $@

llama-cpp-python: $(LLAMA_VENV)/.installed
