#!/usr/bin/env bash
# The test command (README): starts the real services the tests need, then runs every test.
# Arguments replace the default `--lib --bins --tests` (e.g. `bash tests/run.sh --test integration -- outcomes::`).
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/services.sh
set -e
# Benchmarks are not tests: they run with `cargo bench` (README, Performance); clippy compiles them.
if [ "$#" -eq 0 ]; then set -- --lib --bins --tests; fi
cargo test "$@"
