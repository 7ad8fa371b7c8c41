#!/usr/bin/env bash
# Checks of the deployable infrastructure. Run from the repository root:  bash infra/check.sh
#
#   1. cfn-lint infra/template.yaml: no errors and no warnings (suppressions are in the template,
#      each with its reason).
#   2. checkov on infra/ (the SAM template as written), and on the translated template with every
#      condition true, so that the optional resources (VPC endpoints, KMS statements) are scanned too.
#   3. infra/test_stack.py: the translated template's settings, then the messaging part deployed to
#      moto (at $OPSRELAY_TEST_AWS_ENDPOINT, or a moto_server it starts and stops).
#   4. infra/package.sh: puts rules.toml (and a CA bundle) beside bootstrap, and fails clearly when
#      bootstrap is missing.
#
# Prints one line per check, then "N passed, N failed"; exits 1 if anything failed.
#
# Installs what is missing. The Python tools (cfn-lint, aws-sam-translator, boto3, moto, PyYAML) are
# used from python3 when it has them, else installed into a virtualenv of their own. checkov always
# gets its own virtualenv: it pins many packages (boto3's among them) that would fight moto's and
# cfn-lint's. Both live under ${OPSRELAY_INFRA_CACHE:-~/.cache/opsrelay}.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
cache=${OPSRELAY_INFRA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/opsrelay}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
pass() {
    echo "PASS $1"
    passed=$((passed + 1))
}
fail() { # name [file with the details]
    echo "FAIL $1"
    if [ -n "${2:-}" ] && [ -s "$2" ]; then
        tail -n 60 "$2" | sed 's/^/    /'
    fi
    failed=$((failed + 1))
}
die() {
    echo "check.sh: $*" >&2
    echo "$passed passed, $((failed + 1)) failed"
    exit 1
}

# A virtualenv at $1 (made if missing), with the pip packages that follow installed when $2 (a
# command that must succeed inside it) fails.
venv() {
    local dir=$1 probe=$2
    shift 2
    if [ ! -x "$dir/bin/python" ]; then
        mkdir -p "$(dirname "$dir")"
        if ! python3 -m venv "$dir" >"$work/venv.log" 2>&1; then
            # Debian's python3 lacks venv until python3-venv is installed.
            if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
                { apt-get update -q && apt-get install -y -q python3-venv; } >>"$work/venv.log" 2>&1
                rm -rf "$dir"
                python3 -m venv "$dir" >>"$work/venv.log" 2>&1 || { cat "$work/venv.log" >&2; die "cannot make a virtualenv at $dir"; }
            else
                cat "$work/venv.log" >&2
                die "cannot make a virtualenv at $dir (install python3-venv)"
            fi
        fi
    fi
    if ! (cd "$work" && "$dir/bin/python" -c "$probe") >/dev/null 2>&1; then
        "$dir/bin/python" -m pip install -q --disable-pip-version-check "$@" >"$work/pip.log" 2>&1 ||
            { cat "$work/pip.log" >&2; die "pip install $* failed"; }
    fi
}

# ---------------------------------------------------------------- tools
tools_probe='import cfnlint, samtranslator, boto3, moto, moto.server, flask, yaml'
if (cd "$work" && python3 -c "$tools_probe") >/dev/null 2>&1 && command -v cfn-lint >/dev/null; then
    py=python3
    cfnlint=cfn-lint
else
    venv "$cache/tools-venv" "$tools_probe" "cfn-lint==1.51.0" aws-sam-translator boto3 "moto[server]==5.2.1" pyyaml
    py=$cache/tools-venv/bin/python
    cfnlint=$cache/tools-venv/bin/cfn-lint
fi
checkov_venv=${OPSRELAY_CHECKOV_VENV:-$cache/checkov-venv}
venv "$checkov_venv" 'import checkov' "checkov==3.3.30"
checkov=$checkov_venv/bin/checkov

# ---------------------------------------------------------------- 1. cfn-lint
if "$cfnlint" infra/template.yaml >"$work/cfn-lint.log" 2>&1; then
    pass "cfn-lint infra/template.yaml: no errors, no warnings"
else
    fail "cfn-lint infra/template.yaml" "$work/cfn-lint.log"
fi

# ---------------------------------------------------------------- 2. checkov
# --skip-download: no network for checkov's guideline download; the checks ship with the package.
run_checkov() { # name directory
    if BC_SKIP_MAPPING=TRUE "$checkov" -d "$2" --framework cloudformation --skip-download --compact --quiet \
        >"$work/checkov.log" 2>&1; then
        pass "$1"
    else
        fail "$1" "$work/checkov.log"
    fi
}
run_checkov "checkov infra/ (SAM template): no failed checks" infra/
if "$py" infra/test_stack.py --write-translated "$work/translated" >"$work/translate.log" 2>&1; then
    run_checkov "checkov translated template, every condition true: no failed checks" "$work/translated"
else
    fail "checkov translated template (translation failed)" "$work/translate.log"
fi

# ---------------------------------------------------------------- 3. template and moto
"$py" infra/test_stack.py >"$work/test.log" 2>&1
rc=$?
grep -v -E '^[0-9]+ passed, [0-9]+ failed$' "$work/test.log"
n_pass=$(grep -c '^PASS ' "$work/test.log")
n_fail=$(grep -c '^FAIL ' "$work/test.log")
passed=$((passed + n_pass))
failed=$((failed + n_fail))
if [ "$rc" != 0 ] && [ "$n_fail" = 0 ]; then
    fail "infra/test_stack.py exited $rc" "$work/test.log"
fi

# ---------------------------------------------------------------- 4. package.sh
# In a scratch copy of the layout, so the real target/ is left alone.
mkdir -p "$work/repo/infra" "$work/repo/target"
cp infra/package.sh "$work/repo/infra/"
printf '[defaults]\ndestinations = ["OPSRELAY_SLACK_WEBHOOK_URL"]\n' >"$work/rules.toml"
if (unset CARGO_TARGET_DIR; OPSRELAY_SKIP_BUILD=1 bash "$work/repo/infra/package.sh" "$work/rules.toml") \
    >"$work/package.log" 2>&1; then
    fail "package.sh fails when bootstrap is missing (it succeeded)" "$work/package.log"
elif grep -q "bootstrap is missing" "$work/package.log"; then
    pass "package.sh fails with a clear message when bootstrap is missing"
else
    fail "package.sh fails with a clear message when bootstrap is missing" "$work/package.log"
fi
mkdir -p "$work/repo/target/lambda/opsrelay-lambda"
printf 'stand-in binary\n' >"$work/repo/target/lambda/opsrelay-lambda/bootstrap"
if (unset CARGO_TARGET_DIR; OPSRELAY_SKIP_BUILD=1 bash "$work/repo/infra/package.sh" "$work/rules.toml") \
    >"$work/package.log" 2>&1 && cmp -s "$work/rules.toml" "$work/repo/target/lambda/opsrelay-lambda/rules.toml"; then
    pass "package.sh puts the rules beside bootstrap as rules.toml"
else
    fail "package.sh puts the rules beside bootstrap as rules.toml" "$work/package.log"
fi
printf -- '-----BEGIN CERTIFICATE-----\nstand-in\n-----END CERTIFICATE-----\n' >"$work/global-bundle.pem"
if (unset CARGO_TARGET_DIR; OPSRELAY_SKIP_BUILD=1 OPSRELAY_DB_CA_BUNDLE="$work/global-bundle.pem" \
    bash "$work/repo/infra/package.sh" "$work/rules.toml") >"$work/package.log" 2>&1 &&
    cmp -s "$work/global-bundle.pem" "$work/repo/target/lambda/opsrelay-lambda/global-bundle.pem" &&
    grep -q "DatabaseCaBundle=global-bundle.pem" "$work/package.log"; then
    pass "package.sh puts the database's CA bundle beside bootstrap and names the parameter"
else
    fail "package.sh puts the database's CA bundle beside bootstrap and names the parameter" "$work/package.log"
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
