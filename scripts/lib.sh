# Shared by the scripts: messages, root, and a throwaway PostgreSQL when
# DATABASE_URL is unset (stopped and removed when the sourcing script exits).
# Source it, then call ensure_postgres.

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        say "need root to run: $*"; exit 1; fi
}

pg_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin /usr/pgsql-*/bin /usr/local/pgsql/bin; do
        [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    command -v initdb >/dev/null && { dirname "$(command -v initdb)"; return 0; }
    return 1
}

PG_DIR=""
cleanup() {
    if [ -n "$PG_DIR" ] && [ -d "$PG_DIR" ]; then
        say "stopping the throwaway PostgreSQL"
        run_pg "$PGBIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$PG_DIR"
    fi
}
trap cleanup EXIT

run_pg() {
    # initdb and postgres refuse to run as root: use the postgres account.
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    local p
    for p in $(seq 54320 54999); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
    done
    return 1
}

ensure_postgres() {
if [ -z "${DATABASE_URL:-}" ]; then
    if ! PGBIN=$(pg_bin); then
        say "PostgreSQL server not found: installing it with apt-get"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
        PGBIN=$(pg_bin) || { say "PostgreSQL install did not provide initdb"; exit 1; }
    fi
    PG_DIR=$(mktemp -d /tmp/sparkcap-pg.XXXXXX)
    chmod 755 "$PG_DIR"
    [ "$(id -u)" -eq 0 ] && chown postgres "$PG_DIR"
    PORT=$(free_port)
    say "starting a throwaway PostgreSQL on 127.0.0.1:$PORT ($PG_DIR)"
    run_pg "$PGBIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 >/dev/null
    # Durability is pointless for a throwaway server; speed is not.
    run_pg "$PGBIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w -o \
        "-c listen_addresses=127.0.0.1 -p $PORT -k $PG_DIR -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null
    export DATABASE_URL="postgres://postgres@127.0.0.1:$PORT/postgres"
else
    say "using DATABASE_URL from the environment"
fi
}
