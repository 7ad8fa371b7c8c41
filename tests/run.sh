#!/usr/bin/env bash
# The test command (README): starts the real services the tests need, then runs every test.
# Arguments replace the default `--all-targets` (e.g. `bash tests/run.sh --test outcomes`).
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/services.sh
set -e
if [ "$#" -eq 0 ]; then set -- --all-targets; fi
cargo test "$@"
