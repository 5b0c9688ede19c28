#!/usr/bin/env bash
# PostgreSQL's archive_command: copy one finished WAL segment into the archive folder.
#
#   archive_command = '/path/to/deploy/backup/archive-wal.sh "%p" "%f" /srv/wal-archive'
#
# PostgreSQL recycles a segment once this command exits 0, so it must exit 0 only when
# the copy is whole and on disk: the segment is copied under a temporary name, flushed,
# renamed into place and the folder flushed, so a crash never leaves a partial file
# under a segment's name. A segment already archived with the same bytes is success
# (after a crash PostgreSQL may archive a segment again); one archived with other bytes
# is refused, because overwriting the archive could destroy the only good copy.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[[ $# -eq 3 ]] || fail "usage: archive-wal.sh WAL_PATH WAL_FILE_NAME ARCHIVE_DIR"
wal_path="$1"
wal_name="$2"
archive_dir="$3"

[[ -d "$archive_dir" ]] || fail "archive folder $archive_dir does not exist"
target="$archive_dir/$wal_name"
if [[ -e "$target" ]]; then
    if cmp -s "$wal_path" "$target"; then
        exit 0
    fi
    fail "$target already exists with different contents; refusing to overwrite it"
fi
partial="$archive_dir/.$wal_name.partial.$$"
trap 'rm -f "$partial"' EXIT
cp "$wal_path" "$partial"
sync "$partial"
mv -T "$partial" "$target"
sync "$archive_dir"
