#!/usr/bin/env bash
# The test command (README): starts the real services the tests need, then runs every test.
# Extra arguments go to `cargo test` (e.g. `bash tests/run.sh --test outcomes`).
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/services.sh
set -e
cargo test --all-targets "$@"
