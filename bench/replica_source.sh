#!/usr/bin/env bash
# New-replica benchmark: a replica rebuilt by pgkeel from the backup
# repository against one cloned with pg_basebackup from the primary, on the
# same cluster, in one run.
#
# One cluster (`pgkeel up`, a path repository, schedules off) holding a
# pgbench database of SCALE (default 130: about 2 GB) and a fresh full
# backup. Rounds alternate:
#   pgkeel  a replica's PostgreSQL is killed and its data directory
#           removed; its agent restores the newest backup from the
#           repository, replays the archive and streams again
#   basebackup  `pg_basebackup -X stream -R` from the primary into a scratch
#           directory, started on a free port until it streams
# Timed: from the loss (or the start of pg_basebackup) until the primary
# shows the new replica streaming. Measured on the primary: bytes its
# walsender processes read (`rchar` in /proc/PID/io, sampled every 0.1 s),
# i.e. what serving the new replica cost it.
#
# Usage: bench/replica_source.sh [RUNS] [SCALE] (defaults 3, 130). Run as
# root (the servers run as `postgres`). PGKEEL_BIN: a built pgkeel (default:
# cargo build --release). Everything started is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS="${1:-3}"
SCALE="${2:-130}"
backup_bench_setup
BIN="$(pg_bindir)"
WORK="$(mktemp -d /tmp/pgkeel-replica-bench-XXXXXX)"
chmod 755 "$WORK"
ROOT="$WORK/cluster"
REPO="$WORK/repo"
RAW="$WORK/rounds.tsv"
SCRATCH="$WORK/basebackup"
mkdir -p "$REPO" && chown postgres:postgres "$REPO"
BASE="$(free_ports 3)"
HAND_PORT="$(free_ports 1)"
SAMPLER=""

as_pg() { runuser -u postgres -- "$@"; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null || true
  [ -f "$SCRATCH/data/postmaster.pid" ] && as_pg "$BIN/pg_ctl" stop -D "$SCRATCH/data" -m immediate -s 2>/dev/null || true
  "$PGKEEL_BIN" destroy --dir "$ROOT" --yes >/dev/null 2>&1 || true
  [ -f "$RAW" ] && echo "raw rounds: $RAW"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export PGKEEL_BACKUP_PATH="$REPO" PGKEEL_BACKUP_FULL_SCHEDULE=off \
  PGKEEL_BACKUP_INCR_SCHEDULE=off PGKEEL_BACKUP_VERIFY_SCHEDULE=off
"$PGKEEL_BIN" up --dir "$ROOT" --base-port "$BASE" --no-proxy >/dev/null
SU_URL="$("$PGKEEL_BIN" url --dir "$ROOT" --primary --superuser)"
echo "pgbench -i -s $SCALE (not timed)" >&2
"$BIN/pgbench" -q -i -s "$SCALE" "$SU_URL" >/dev/null 2>&1
"$PGKEEL_BIN" backup --dir "$ROOT" --full --json >/dev/null
DB_BYTES="$(psql "$SU_URL" -Atc "SELECT sum(pg_database_size(oid)) FROM pg_database")"
echo "database: $((DB_BYTES / 1024 / 1024)) MB" >&2
PRIMARY_PID="$(head -1 "$ROOT/nodes/primary/data/postmaster.pid")"
REPLICA=replica2

# Samples the primary's walsenders' rchar every 0.1 s into $1 (pid rchar
# lines); the largest value per pid is what it read.
sample_walsenders() {
  while :; do
    for child in $(pgrep -P "$PRIMARY_PID"); do
      grep -q walsender "/proc/$child/cmdline" 2>/dev/null || continue
      awk -v p="$child" '/^rchar/ {print p, $2}' "/proc/$child/io" 2>/dev/null || true
    done
    sleep 0.1
  done >>"$1"
}
# Walsender pids before the round: their earlier reads are not counted.
baseline() { : >"$1"; for child in $(pgrep -P "$PRIMARY_PID"); do
  grep -q walsender "/proc/$child/cmdline" 2>/dev/null || continue
  awk -v p="$child" '/^rchar/ {print p, $2}' "/proc/$child/io"; done >"$1"; }
read_bytes() { # samples baseline -> bytes read during the round
  python3 - "$1" "$2" <<'PY'
import sys
def load(path):
    seen = {}
    for line in open(path):
        pid, n = line.split()
        seen[pid] = max(seen.get(pid, 0), int(n))
    return seen
during, before = load(sys.argv[1]), load(sys.argv[2])
print(sum(n - before.get(pid, 0) for pid, n in during.items()))
PY
}
streaming() { # application_name -> 1 when it streams from the primary
  psql "$SU_URL" -Atc "SELECT count(*) FROM pg_stat_replication WHERE application_name = '$1' AND state = 'streaming'"
}

pgkeel_round() {
  local pid
  pid="$(head -1 "$ROOT/nodes/$REPLICA/data/postmaster.pid")"
  kill -9 "$pid"
  rm -rf "$ROOT/nodes/$REPLICA/data"
  until [ "$(streaming "$REPLICA")" = 1 ] && [ -f "$ROOT/nodes/$REPLICA/data/PG_VERSION" ]; do sleep 0.1; done
}

basebackup_round() {
  rm -rf "$SCRATCH"; install -d -m 0700 -o postgres -g postgres "$SCRATCH"
  as_pg env PGPASSFILE="$ROOT/auth/replication.pgpass" PGAPPNAME=hand "$BIN/pg_basebackup" \
    -h 127.0.0.1 -p "$BASE" -U replicator -D "$SCRATCH/data" -X stream -R -c fast >/dev/null
  as_pg "$BIN/pg_ctl" start -D "$SCRATCH/data" -l "$SCRATCH/postgresql.log" -w -t 600 -s \
    -o "-c port=$HAND_PORT -c unix_socket_directories='$SCRATCH' -c archive_mode=off -c cluster_name=hand -c primary_slot_name=''"
  until [ "$(streaming hand)" = 1 ]; do sleep 0.1; done
  as_pg "$BIN/pg_ctl" stop -D "$SCRATCH/data" -m immediate -s
  rm -rf "$SCRATCH"
}

printf 'round\tsystem\tseconds\tprimary_read_bytes\n' >"$RAW"
for round in $(seq "$RUNS"); do
  for system in pgkeel basebackup; do
    [ $((round % 2)) -eq 0 ] && system=$([ "$system" = pgkeel ] && echo basebackup || echo pgkeel)
    echo "round $round/$RUNS: $system" >&2
    baseline "$WORK/before"
    : >"$WORK/during"
    sample_walsenders "$WORK/during" & SAMPLER=$!
    t0="$(now)"
    "${system}_round"
    t1="$(now)"
    sleep 0.3
    kill "$SAMPLER"; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=""
    printf '%s\t%s\t%s\t%s\n' "$round" "$system" "$(elapsed "$t0" "$t1")" "$(read_bytes "$WORK/during" "$WORK/before")" >>"$RAW"
  done
done

python3 - "$RAW" "$DB_BYTES" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
mb = int(sys.argv[2]) / 1e6
def col(system, key):
    return [float(r[key]) for r in rows if r["system"] == system]
def mmm(xs, f="{:.2f}"):
    return " / ".join(f.format(x) for x in (min(xs), statistics.median(xs), max(xs)))
p, b = col("pgkeel", "seconds"), col("basebackup", "seconds")
print(f"database {mb:.0f} MB; new replica streaming (s, min / median / max): "
      f"from the repository {mmm(p)}  pg_basebackup {mmm(b)}  "
      f"ratio repository/basebackup {mmm([x / y for x, y in zip(p, b)])}")
pr, br = col("pgkeel", "primary_read_bytes"), col("basebackup", "primary_read_bytes")
print(f"read by the primary's walsenders (MB): from the repository {mmm([x / 1e6 for x in pr], '{:.1f}')}  "
      f"pg_basebackup {mmm([x / 1e6 for x in br], '{:.1f}')}")
PY
