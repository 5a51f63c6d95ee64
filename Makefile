.DEFAULT_GOAL := help
PY ?= python3

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

serve:  ## set up and start the service with demo data
	$(PY) run.py serve

test:  ## set up and run the whole test suite
	$(PY) run.py test

lint:  ## ruff (lint + format check) and mypy
	$(PY) run.py lint

bench:  ## ingestion benchmark (writes bench/results/ingest.json)
	.venv/bin/python bench/ingest.py

ci:  ## what CI runs
	./.ci/run

.PHONY: help serve test lint bench ci
