#!/usr/bin/env bash
# Builds the Lambda and puts the rules file beside it, ready for `sam deploy` (infra/template.yaml's
# CodeUri is target/lambda/opsrelay-lambda/, deployed as /var/task: bootstrap and rules.toml).
#
# Usage: bash infra/package.sh RULES_FILE [cargo lambda build options, e.g. --arm64]
#   OPSRELAY_SKIP_BUILD=1  package a bootstrap built before, without building.
#   OPSRELAY_DB_CA_BUNDLE=FILE  put the database's CA bundle (a .pem; for RDS, the region's bundle
#                          from AWS) beside bootstrap too; set the template's DatabaseCaBundle to its
#                          file name.
# Build for the template's Architecture parameter: x86_64 by default, --arm64 for arm64.
set -euo pipefail

die() {
    echo "package.sh: $*" >&2
    exit 1
}

[ $# -ge 1 ] || die "usage: bash infra/package.sh RULES_FILE [cargo lambda build options]"
rules=$1
shift
[ -f "$rules" ] || die "rules file not found: $rules"
rules=$(cd "$(dirname "$rules")" && pwd)/$(basename "$rules")

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
dest=target/lambda/opsrelay-lambda
built=${CARGO_TARGET_DIR:-target}/lambda/opsrelay-lambda

if [ "${OPSRELAY_SKIP_BUILD:-0}" != 1 ]; then
    cargo lambda --version >/dev/null 2>&1 ||
        die "cargo lambda is not installed: python3 -m pip install cargo-lambda (it brings zig), then run this again"
    cargo lambda build --release --bin opsrelay-lambda "$@"
fi

if [ ! -f "$built/bootstrap" ]; then
    if [ "${OPSRELAY_SKIP_BUILD:-0}" = 1 ]; then
        die "$built/bootstrap is missing: build it first ('cargo lambda build --release --bin opsrelay-lambda') or run without OPSRELAY_SKIP_BUILD=1"
    fi
    die "$built/bootstrap is missing: 'cargo lambda build --release --bin opsrelay-lambda' did not produce it (see its output above)"
fi
if [ "$(cd "$(dirname "$built")" && pwd)" != "$(mkdir -p "$(dirname "$dest")" && cd "$(dirname "$dest")" && pwd)" ]; then
    # CARGO_TARGET_DIR points elsewhere: bring the binary to where the template looks.
    mkdir -p "$dest"
    cp "$built/bootstrap" "$dest/bootstrap"
fi
cp "$rules" "$dest/rules.toml"
if [ -n "${OPSRELAY_DB_CA_BUNDLE:-}" ]; then
    bundle=$OPSRELAY_DB_CA_BUNDLE
    [ -f "$bundle" ] || die "CA bundle not found: $bundle (OPSRELAY_DB_CA_BUNDLE)"
    case $(basename "$bundle") in
    *.pem) ;;
    *) die "the CA bundle must be a .pem file (the template's DatabaseCaBundle takes a .pem name): $bundle" ;;
    esac
    grep -q 'BEGIN CERTIFICATE' "$bundle" || die "$bundle holds no PEM certificate"
    cp "$bundle" "$dest/$(basename "$bundle")"
    echo "packaged $dest: bootstrap, rules.toml (from $rules) and $(basename "$bundle"): set DatabaseCaBundle=$(basename "$bundle")"
else
    echo "packaged $dest: bootstrap and rules.toml (from $rules)"
    echo "no database CA bundle (OPSRELAY_DB_CA_BUNDLE): the function will not verify the database's certificate" >&2
fi
