# `make demo` and `make test` set everything up on a fresh machine (Python 3.10+, a C compiler, cmake;
# Node 20 and npm for the VS Code extension's tests; Debian's apt for the real VS Code the tests drive,
# which tests/editors/test_vscode.py installs with scripts/install-workbench.sh).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
VOCAB := .cache/vocab/.done

.PHONY: demo test test-stress screenshots serve bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[default-model,dev]'
	rm -f $(VENV)/.installed-*; touch $@

# Vocab-only GGUFs (tokenizers of several model families) ship in llama-cpp-python's sdist.
$(VOCAB): $(STAMP)
	bash scripts/fetch-vocab.sh $(BIN)/python .cache/vocab
	touch $@

demo: $(STAMP)
	$(BIN)/tandem demo

test: $(STAMP) $(VOCAB)
	$(BIN)/python -m pytest -q --durations=20
	cd editors/vscode && npm ci --no-audit --no-fund && npm test

# The same suite with every core kept busy beside it: no test may depend on how fast the machine is.
test-stress: $(STAMP) $(VOCAB)
	bash scripts/under-load.sh $(MAKE) test

# The README's pictures, taken by the editor tests in a real VS Code and a real Neovim.
screenshots: $(STAMP) $(VOCAB)
	TANDEM_SCREENSHOTS=$(CURDIR)/docs/screenshots $(BIN)/python -m pytest -q --timeout=3600 tests/editors/test_vscode.py tests/editors/test_nvim.py
	test -z "$$(find docs/screenshots -name '*.png' -size +150k)"  # kept small in git

serve: $(STAMP)
	$(BIN)/tandem serve

bench: $(STAMP)
	$(BIN)/tandem bench

lint: $(STAMP)
	$(BIN)/ruff check lsp_server tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .cache tests/editors/vscode/node_modules
