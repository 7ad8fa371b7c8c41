#!/usr/bin/env bash
# The whole-process performance table (README, Performance): builds the release bootstrap and the
# lambda_runtime hello world, zips the bootstrap with the rules as deployed, starts the test services
# (PostgreSQL for the lookups) and runs benches/whole_process.rs, which prints the table.
#   bash benches/perf.sh
# OPSRELAY_PERF_ONLY=throughput (or sources) prints only those rows, to set beside another build's.
# OPSRELAY_PERF_ONLY=builds sets this build beside OPSRELAY_PERF_BASELINE_BOOTSTRAP (another build's
# bootstrap) in the same run: events/s, CPU and instructions (valgrind's callgrind) per event.
# The in-process figures per event come from criterion: `cargo bench --bench parse_render`.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bin opsrelay-lambda --example hello_lambda
out=target/perf
rm -rf "$out" && mkdir -p "$out/zip"
cp target/release/opsrelay-lambda "$out/zip/bootstrap"
cp src/defaults/rules.toml "$out/zip/rules.toml"
(cd "$out/zip" && zip -q -X ../opsrelay-lambda.zip bootstrap rules.toml)

. tests/services.sh
set -e
# The interpreter itself, not a version manager's shim, so that Python's init is not overstated.
python=$(python3 -c 'import sys; print(sys.executable)')
python3 -c 'import boto3' 2>/dev/null || python3 -m pip install -q boto3

export OPSRELAY_PERF_BOOTSTRAP="$PWD/$out/zip/bootstrap"
export OPSRELAY_PERF_HELLO="$PWD/target/release/examples/hello_lambda"
export OPSRELAY_PERF_ZIP="$PWD/$out/opsrelay-lambda.zip"
export OPSRELAY_PERF_PYTHON="$python"
export OPSRELAY_PERF_PYTHON_HANDLER="$PWD/benches/python/handler.py"
# The table goes to standard output; the in-process pipeline's logs (as on Lambda) to a file.
if ! cargo bench --bench whole_process 2>"$out/bench.log"; then
  tail -n 30 "$out/bench.log" >&2
  exit 1
fi
