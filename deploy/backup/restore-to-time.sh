#!/usr/bin/env bash
# Restore a base backup plus archived WAL into a fresh data directory, as of a chosen
# moment, start it and wait until it has been promoted and takes writes.
#
#   restore-to-time.sh --backup DIR --archive DIR --target-time TIME --data DIR --port PORT
#                      [--listen ADDRESSES] [--socket-dir DIR] [--log FILE] [--timeout-s SECONDS]
#
# TIME is a timestamp with an explicit offset, e.g. '2026-12-06 14:03:27.250+00'.
# PostgreSQL replays the archived WAL and stops before the first transaction that
# committed after TIME (recovery_target_time, inclusive of TIME itself), then promotes
# (recovery_target_action = 'promote') onto a new timeline. Run as the user PostgreSQL
# runs as. The backup and the archive are only read. The restored server listens on
# ADDRESSES (default: localhost only, so no client finds it by accident) and puts its
# socket in DIR (default: /var/run/postgresql when writable, else the data directory).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
    sed -n '5,6p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

parse_arguments() {
    backup_dir="" archive_dir="" target_time="" data_dir="" port=""
    listen_addresses="" socket_dir="" log_file="" timeout_s=300
    while [[ $# -gt 0 ]]; do
        [[ $# -ge 2 ]] || usage
        case "$1" in
            --backup) backup_dir="$2" ;;
            --archive) archive_dir="$2" ;;
            --target-time) target_time="$2" ;;
            --data) data_dir="$2" ;;
            --port) port="$2" ;;
            --listen) listen_addresses="$2" ;;
            --socket-dir) socket_dir="$2" ;;
            --log) log_file="$2" ;;
            --timeout-s) timeout_s="$2" ;;
            *) usage ;;
        esac
        shift 2
    done
    [[ -n "$backup_dir" && -n "$archive_dir" && -n "$target_time" && -n "$data_dir" && -n "$port" ]] || usage
    [[ -f "$backup_dir/backup_label" ]] || fail "$backup_dir is not a plain-format base backup (no backup_label)"
    # Debian keeps a cluster's configuration in /etc/postgresql, outside the data directory.
    [[ -f "$backup_dir/postgresql.conf" ]] \
        || fail "$backup_dir has no postgresql.conf; copy the source's configuration files into it first"
    [[ -d "$archive_dir" ]] || fail "archive folder $archive_dir does not exist"
    # A time without an offset would be read in the restored server's time zone setting,
    # which may not be the one the operator meant.
    local day='[0-9]{4}-[0-9]{2}-[0-9]{2}' clock='[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?'
    local offset='(Z|UTC|[+-][0-9]{2}(:?[0-9]{2})?)'
    [[ "$target_time" =~ ^${day}[T\ ]${clock}\ ?${offset}$ ]] \
        || fail "--target-time needs an explicit offset (…+00, …Z or …UTC): $target_time"
    if [[ -e "$data_dir" && -n "$(ls -A "$data_dir")" ]]; then
        fail "$data_dir is not empty; restore into a fresh data directory"
    fi
    data_dir="$(realpath -m "$data_dir")"
    archive_dir="$(cd "$archive_dir" && pwd)"
    log_file="${log_file:-${data_dir}.restore.log}"
    listen_addresses="${listen_addresses:-localhost}"
    if [[ -z "$socket_dir" ]]; then
        socket_dir=/var/run/postgresql
        [[ -d "$socket_dir" && -w "$socket_dir" ]] || socket_dir="$data_dir"
    fi
    # The settings below are single-quoted in postgresql.auto.conf.
    for value in "$archive_dir" "$target_time" "$data_dir" "$listen_addresses" "$socket_dir"; do
        [[ "$value" != *"'"* ]] || fail "a quote (') is not allowed in: $value"
    done
}

# Copy the backup into the new data directory and tell PostgreSQL where to stop.
prepare_data_directory() {
    mkdir -p "$data_dir"
    chmod 0700 "$data_dir"
    cp -a "$backup_dir/." "$data_dir/"
    # The manifest describes the backup, not the cluster that grows from it; a signal
    # file from the source would make this a standby instead of a targeted recovery.
    rm -f "$data_dir/backup_manifest" "$data_dir/standby.signal" "$data_dir/postmaster.pid"
    touch "$data_dir/recovery.signal"
    local capacity_settings
    capacity_settings="$(settings_for_the_source_capacity)"
    {
        echo "# Added by deploy/backup/restore-to-time.sh at $(date -u +%Y-%m-%dT%H:%M:%SZ)."
        echo "restore_command = 'cp \"$archive_dir/%f\" \"%p\"'"
        echo "recovery_target_time = '$target_time'"
        echo "recovery_target_action = 'promote'"
        # The restored cluster is a new history (a new timeline): it must not archive
        # into the folder it was restored from. Turn archiving on, into a new folder,
        # once it is checked and becomes a primary, and take a new base backup then.
        echo "archive_mode = 'off'"
        settings_for_this_host
        [[ -z "$capacity_settings" ]] || echo "$capacity_settings"
    } >> "$data_dir/postgresql.auto.conf"
}

# The backup carries the source host's configuration files (Patroni writes its settings
# into postgresql.conf in the data directory): the source's addresses, socket and log
# folders, the paths of its pg_hba.conf and pg_ident.conf, and its synchronous standby.
# These lines make the restored server stand on its own on this host.
settings_for_this_host() {
    echo "port = $port"
    echo "listen_addresses = '$listen_addresses'"
    echo "unix_socket_directories = '$socket_dir'"
    # A promoted server waiting for a standby it does not have would hang every commit.
    echo "synchronous_standby_names = ''"
    # The server's log goes to the file this script reads, not to the source's log folder.
    echo "logging_collector = 'off'"
    [[ ! -f "$data_dir/pg_hba.conf" ]] || echo "hba_file = '$data_dir/pg_hba.conf'"
    [[ ! -f "$data_dir/pg_ident.conf" ]] || echo "ident_file = '$data_dir/pg_ident.conf'"
}

# Recovery runs as a hot standby, which refuses to replay WAL of a server that had more
# connections, worker processes, WAL senders, prepared transactions or locks per
# transaction than it has itself. The source's values are in the backup's pg_control;
# a server started with them on its command line (as Patroni starts PostgreSQL) leaves
# them out of the configuration files the backup carries. Print a setting line for
# each one the restored configuration would set lower.
settings_for_the_source_capacity() {
    local control label name source_value configured_value
    control="$(LC_ALL=C "$bindir/pg_controldata" "$backup_dir")"
    while IFS='=' read -r label name; do
        source_value="$(sed -n "s/^$label setting: *//p" <<<"$control")"
        configured_value="$("$bindir/postgres" -D "$data_dir" -C "$name")"
        if [[ -n "$source_value" ]] && ((source_value > configured_value)); then
            printf '%s = %s\n' "$name" "$source_value"
        fi
    done <<'PAIRS'
max_connections=max_connections
max_worker_processes=max_worker_processes
max_wal_senders=max_wal_senders
max_prepared_xacts=max_prepared_transactions
max_locks_per_xact=max_locks_per_transaction
PAIRS
}

# Start the server and wait until recovery has stopped at the target and it promoted.
# ``pg_ctl -w`` returns once read-only connections are possible, which may be before
# replay reaches the target, so the cluster state in pg_control is what is waited on.
start_and_wait_for_promotion() {
    "$bindir/pg_ctl" --pgdata="$data_dir" --log="$log_file" --wait --timeout="$timeout_s" start >/dev/null \
        || { tail -n 20 "$log_file" >&2; fail "the restored server did not start; see $log_file"; }
    local deadline=$((SECONDS + timeout_s))
    until LC_ALL=C "$bindir/pg_controldata" "$data_dir" | grep -q '^Database cluster state: *in production'; do
        if ! "$bindir/pg_ctl" --pgdata="$data_dir" status >/dev/null; then
            tail -n 20 "$log_file" >&2
            fail "the restored server stopped during recovery (was the target reached?); see $log_file"
        fi
        ((SECONDS < deadline)) || fail "not promoted within ${timeout_s} s; see $log_file"
        sleep 0.1
    done
    # Where replay stopped and the new timeline, in PostgreSQL's own words.
    grep -E 'recovery stopping|selected new timeline|last completed transaction' "$log_file" || true
    echo "restored to $target_time and promoted: $data_dir on port $port"
}

parse_arguments "$@"
bindir="$(postgres_bindir "$(cat "$backup_dir/PG_VERSION")")"
"$bindir/pg_verifybackup" --quiet "$backup_dir" || fail "the base backup in $backup_dir does not verify"
prepare_data_directory
start_and_wait_for_promotion
