#!/usr/bin/env bash
# Take a base backup of a running PostgreSQL server into a new folder and verify it.
#
#   base-backup.sh BACKUP_DIR [pg_basebackup connection options, e.g. -h HOST -p PORT -U USER]
#
# The backup is a plain copy of the data directory with the WAL needed to make it
# consistent streamed alongside (--wal-method=stream), so it is usable by itself; the
# archived WAL then carries it forward to any later moment (restore-to-time.sh). The
# checkpoint is fast rather than spread, so the backup starts at once. A manifest with
# SHA-256 checksums is written and checked with pg_verifybackup before this exits 0,
# so a backup that cannot be restored is known when it is taken, not when it is needed.
# The user needs the REPLICATION attribute and a "replication" line in pg_hba.conf.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[[ $# -ge 1 ]] || fail "usage: base-backup.sh BACKUP_DIR [pg_basebackup connection options]"
backup_dir="$1"
shift
[[ ! -e "$backup_dir" ]] || fail "$backup_dir already exists; a base backup goes into a new folder"

bindir="$(postgres_bindir)"
"$bindir/pg_basebackup" --pgdata="$backup_dir" --format=plain --wal-method=stream --checkpoint=fast \
    --manifest-checksums=SHA256 --label="alliance base backup $(date -u +%Y-%m-%dT%H:%M:%SZ)" --no-password "$@"
"$bindir/pg_verifybackup" --quiet "$backup_dir"
# The label names where WAL replay must start and when the backup began.
grep -E '^(START WAL LOCATION|START TIME|LABEL):' "$backup_dir/backup_label"
echo "base backup verified: $backup_dir"
