#!/usr/bin/env bash
# Backup benchmark: pgkeel's backups and verification against pgBackRest
# run by hand with the same settings, on the same cluster, in one run.
#
# One cluster (`pgkeel up`, a path repository, schedules off) holding a
# pgbench database of SCALE (default 130: about 2 GB). Rounds alternate:
#   pgkeel  `pgkeel backup --full` (from the streaming replica), then
#           `pgkeel backup verify` (pgbackrest verify, restore to the end of
#           the backup, start on a private socket, marker, pg_amcheck --all)
#   hand    the same by hand with pgkeel's own pgbackrest.conf: `pgbackrest
#           backup --type=full --backup-standby` over the same two servers,
#           then `pgbackrest verify`, `pgbackrest restore --type=immediate`,
#           pg_ctl start with the same options, wait for the promotion,
#           pg_amcheck --all, stop, remove
# Reported: seconds per round and their ratio pgkeel/hand (min/median/max),
# and the backup and restore throughput in MB/s of database.
#
# Usage: bench/backup.sh [RUNS] [SCALE] (defaults 3, 130). Run as root (the
# servers run as `postgres`). PGKEEL_BIN: a built pgkeel (default: cargo
# build --release). Everything started is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS="${1:-3}"
SCALE="${2:-130}"
backup_bench_setup
BIN="$(pg_bindir)"
WORK="$(mktemp -d /tmp/pgkeel-backup-bench-XXXXXX)"
chmod 755 "$WORK"
ROOT="$WORK/cluster"
REPO="$WORK/repo"
RAW="$WORK/rounds.tsv"
mkdir -p "$REPO" && chown postgres:postgres "$REPO"
BASE="$(free_ports 3)"

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  "$PGKEEL_BIN" destroy --dir "$ROOT" --yes >/dev/null 2>&1 || true
  [ -f "$RAW" ] && echo "raw rounds: $RAW"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

as_pg() { runuser -u postgres -- "$@"; }

export PGKEEL_BACKUP_PATH="$REPO" PGKEEL_BACKUP_FULL_SCHEDULE=off \
  PGKEEL_BACKUP_INCR_SCHEDULE=off PGKEEL_BACKUP_VERIFY_SCHEDULE=off
"$PGKEEL_BIN" up --dir "$ROOT" --base-port "$BASE" --no-proxy >/dev/null
SU_URL="$("$PGKEEL_BIN" url --dir "$ROOT" --primary --superuser)"
echo "pgbench -i -s $SCALE (not timed)" >&2
"$BIN/pgbench" -q -i -s "$SCALE" "$SU_URL" >/dev/null 2>&1
# Both replicas caught up before the first round.
until [ "$(psql "$SU_URL" -Atc "SELECT count(*) FROM pg_stat_replication WHERE replay_lsn = pg_current_wal_lsn()")" = 2 ]; do
  sleep 0.5
done
DB_BYTES="$(psql "$SU_URL" -Atc "SELECT sum(pg_database_size(oid)) FROM pg_database")"
echo "database: $((DB_BYTES / 1024 / 1024)) MB" >&2

CONF="$ROOT/backup/pgbackrest.conf"
STATUS="$("$PGKEEL_BIN" status --dir "$ROOT" --json)"
pg_opts() { # node index (1, 2) -> --pgN-* options of that node
  python3 - "$STATUS" "$1" "$2" "$ROOT" <<'PY'
import json, sys
s = json.loads(sys.argv[1]); role = sys.argv[2]; n = sys.argv[3]; root = sys.argv[4]
node = next(x for x in s["nodes"] if x["role"] == role and (role == "primary" or x.get("replication_state") == "streaming"))
name = node["name"]
print(f"--pg{n}-path={root}/nodes/{name}/data --pg{n}-port={node['port']} "
      f"--pg{n}-socket-path={root}/nodes/{name}/run --pg{n}-user=postgres")
PY
}
HAND_OPTS="--config=$CONF --stanza=pgkeel $(pg_opts primary 1) $(pg_opts replica 2)"
SCRATCH="$ROOT/verify-hand"

hand_backup() {
  as_pg pgbackrest $HAND_OPTS --type=full --backup-standby backup >/dev/null
}

hand_verify() {
  local label="$1" data="$SCRATCH/data" run="$SCRATCH/run"
  as_pg pgbackrest --config="$CONF" --stanza=pgkeel --set="$label" verify >/dev/null
  rm -rf "$SCRATCH"; install -d -m 0700 -o postgres -g postgres "$SCRATCH" "$data" "$run"
  as_pg pgbackrest --config="$CONF" --stanza=pgkeel --pg1-path="$data" --set="$label" \
    --archive-mode=off --type=immediate --target-action=promote restore >/dev/null
  as_pg "$BIN/pg_ctl" start -D "$data" -l "$SCRATCH/postgresql.log" -w -t 600 -s \
    -o "-c listen_addresses='' -c port=$BASE -c unix_socket_directories='$run' -c archive_mode=off -c shared_buffers=64MB -c synchronous_standby_names=''"
  until [ "$(as_pg psql -h "$run" -p "$BASE" -d postgres -Atc 'SELECT pg_is_in_recovery()')" = f ]; do sleep 0.1; done
  as_pg "$BIN/pg_amcheck" --all --install-missing -h "$run" -p "$BASE" >/dev/null
  as_pg "$BIN/pg_ctl" stop -D "$data" -m immediate -s
  rm -rf "$SCRATCH"
}

newest_label() {
  as_pg pgbackrest --config="$CONF" --stanza=pgkeel --output=json info |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["backup"][-1]["label"])'
}

printf 'round\tsystem\tbackup_s\tverify_s\trestore_s\n' >"$RAW"
for round in $(seq "$RUNS"); do
  for system in pgkeel hand; do
    # Alternate which goes first.
    [ $((round % 2)) -eq 0 ] && system=$([ "$system" = pgkeel ] && echo hand || echo pgkeel)
    echo "round $round/$RUNS: $system" >&2
    t0="$(now)"
    if [ "$system" = pgkeel ]; then
      "$PGKEEL_BIN" backup --dir "$ROOT" --full --json >/dev/null
    else
      hand_backup
    fi
    t1="$(now)"
    label="$(newest_label)"
    if [ "$system" = pgkeel ]; then
      restore_s="$("$PGKEEL_BIN" backup verify "$label" --dir "$ROOT" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["restore_seconds"])')"
    else
      hand_verify "$label"
      restore_s=""
    fi
    t2="$(now)"
    printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$system" "$(elapsed "$t0" "$t1")" "$(elapsed "$t1" "$t2")" "$restore_s" >>"$RAW"
  done
done

python3 - "$RAW" "$DB_BYTES" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
mb = int(sys.argv[2]) / 1e6
def col(system, key):
    return [float(r[key]) for r in rows if r["system"] == system and r[key]]
def mmm(xs):
    return f"{min(xs):.2f} / {statistics.median(xs):.2f} / {max(xs):.2f}"
for key, what in [("backup_s", "full backup from the replica (s)"),
                  ("verify_s", "verify: check files, restore, start, pg_amcheck (s)")]:
    p, h = col("pgkeel", key), col("hand", key)
    ratios = [a / b for a, b in zip(p, h)]
    print(f"{what}: pgkeel {mmm(p)}  by hand {mmm(h)}  ratio pgkeel/hand {mmm(ratios)}")
b = col("pgkeel", "backup_s"); r = col("pgkeel", "restore_s")
print(f"database {mb:.0f} MB: backup {mmm([mb / x for x in b])} MB/s, "
      f"restore to a running copy {mmm([mb / x for x in r])} MB/s")
PY
