# Helpers shared by the backup scripts in this folder; sourced, never run.
#
# PostgreSQL's server programs must be of the same major version as the cluster they
# work on (a version 15 backup cannot be restored by version 17's postgres), and
# Debian keeps them outside PATH, in /usr/lib/postgresql/VERSION/bin.

# Print the folder holding PostgreSQL's programs: $PG_BINDIR if set, else the one of
# major version $1 (when given and installed), else the newest installed, else the
# folder of the pg_ctl on PATH.
postgres_bindir() {
    local wanted_version="${1:-}"
    if [[ -n "${PG_BINDIR:-}" ]]; then
        echo "$PG_BINDIR"
        return
    fi
    if [[ -n "$wanted_version" && -x "/usr/lib/postgresql/$wanted_version/bin/pg_ctl" ]]; then
        echo "/usr/lib/postgresql/$wanted_version/bin"
        return
    fi
    local newest
    newest="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    if [[ -n "$newest" && -x "$newest/pg_ctl" ]]; then
        echo "$newest"
        return
    fi
    local on_path
    on_path="$(command -v pg_ctl || true)"
    if [[ -z "$on_path" ]]; then
        echo "PostgreSQL's programs not found: set PG_BINDIR" >&2
        return 1
    fi
    dirname "$on_path"
}

# Stop with a message on standard error.
fail() {
    echo "$(basename "$0"): $*" >&2
    exit 1
}
