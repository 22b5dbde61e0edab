# reme — every command a user needs. `make setup` is folded into the others.
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PRESET  ?= default
OUT     ?= out
CLASSES ?= person,cat,cup,rocket,sky,grass
# Extra flags for the index job, e.g. INDEX_ARGS="--runner DataflowRunner --project P ..."
INDEX_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup test test-slow test-all index label bench lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q -e '.[dev]'
	touch $@

# The default suite: everything but the tests marked slow (those run in CI through test-slow).
test: setup
	$(PY) -m pytest -m "not slow" -n 2 --dist loadfile $(PYTEST_ARGS)

test-slow: setup
	$(PY) -m pytest -m slow -n 2 --dist loadfile $(PYTEST_ARGS) || [ $$? -eq 5 ]  # 5: none collected

test-all: setup
	$(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

# Build a reference set from the bundled sample photos (scikit-image ships them) with their captions.
index: setup
	$(PY) -m pipeline.samples $(OUT)/samples
	$(PY) -m pipeline.build_index --input '$(OUT)/samples/images' --output $(OUT)/reference \
		--label_source captions --captions $(OUT)/samples/captions.jsonl --preset $(PRESET) $(INDEX_ARGS)

label: setup
	$(VENV)/bin/reme label --index $(OUT)/reference --classes "$(CLASSES)" --overlay \
		$(OUT)/samples/images $(OUT)/labels

bench: setup
	$(PY) bench/run_all.py

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(OUT) .pytest_cache build dist *.egg-info
