#!/usr/bin/env bash
# The seeded soak (not part of CI): builds the binaries in release mode with
# the crash points compiled in, starts a throwaway PostgreSQL when
# DATABASE_URL is unset, and runs sparkcap-soak with the given arguments.
#
#   ./scripts/soak.sh                                   # 30 min, 100 tenants, 500 jobs
#   ./scripts/soak.sh --minutes 5 --seed 42             # shorter, replaying seed 42
#   ./scripts/soak.sh --help
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
command -v cargo >/dev/null || { say "cargo not found: install Rust (https://rustup.rs) first"; exit 1; }
# One build of all three: the test kit turns on the ledger's crash points,
# and so they are in the scheduler and webhook binaries built with it.
say "building sparkcap-scheduler, sparkcap-webhook and the soak (release, crash points compiled in)"
cargo build --release --quiet -p sparkcap-scheduler -p sparkcap-webhook -p sparkcap-testkit --bins
ensure_postgres
target/release/sparkcap-soak "$@"
