# Developer tasks; `just --list` shows them. Everything runs from the repo's .venv.
set shell := ["bash", "-euo", "pipefail", "-c"]

# Run the test suite (extra arguments go to pytest).
test *args:
    .venv/bin/pytest {{args}}

# Lint, check formatting and type-check.
lint:
    .venv/bin/ruff check src tests bench && .venv/bin/ruff format --check src tests bench && .venv/bin/mypy

# Format the code and apply safe lint fixes.
fmt:
    .venv/bin/ruff format src tests bench && .venv/bin/ruff check --fix src tests bench

# The end-to-end demo.
demo:
    .venv/bin/ozw demo

# The benchmarks (ratios against same-run baselines; `just bench --quick` for a short run).
bench *args:
    .venv/bin/python -m bench {{args}}
