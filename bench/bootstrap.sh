#!/usr/bin/env bash
# Bootstrap benchmark: seconds from nothing on disk to a primary + 2
# streaming replicas, and `pgkeel status` latency.
#
#   pgkeel   `pgkeel up` (initdb, roles, slots, 2 parallel pg_basebackups,
#            local etcd + 3 agents holding the leader lease; returns when
#            both replicas stream in quorum mode)
#   no-ha    `pgkeel up --no-ha` (the same without etcd and agents)
#   guide    the replication guide's procedure done natively with the same
#            binaries and no container or health-check delays: initdb, start,
#            create role and slots, pg_basebackup -R each replica in turn,
#            start, wait until both stream. Its best case.
#
# Rounds alternate pgkeel/no-ha/guide. Usage: bench/bootstrap.sh [RUNS] (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS="${1:-5}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pgkeel/target}"
cargo build --release -q -p pgkeel
PGKEEL="$CARGO_TARGET_DIR/release/pgkeel"
BIN="$(pg_bindir)"
OSUSER=postgres
WORK="$(mktemp -d /tmp/pgkeel-bench-XXXXXX)"
chmod 755 "$WORK"
PIDS_FILE="$WORK/pids"
touch "$PIDS_FILE"

cleanup() {
  # Stop every server this script started, by PID.
  for dir in "$WORK"/c* "$WORK"/n*; do
    [ -f "$dir/cluster.toml" ] && "$PGKEEL" destroy --dir "$dir" --yes >/dev/null 2>&1
  done
  for pidfile in "$WORK"/*/nodes/*/data/postmaster.pid "$WORK"/guide*/*/postmaster.pid; do
    [ -f "$pidfile" ] || continue
    pid="$(head -1 "$pidfile")"
    kill -QUIT "$pid" 2>/dev/null || true
  done
  sleep 0.5
  rm -rf "$WORK"
}
trap cleanup EXIT

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u "$OSUSER" -- "$@"; else "$@"; fi; }

guide_procedure() {
  local dir="$1" port="$2"
  mkdir -p "$dir"; [ "$(id -u)" -ne 0 ] || chown "$OSUSER" "$dir"
  local p="$dir/primary" pw="$dir/pw"
  as_pg bash -c "echo secret > '$pw'; chmod 600 '$pw'"
  as_pg "$BIN/initdb" -D "$p" -U postgres --pwfile="$pw" --data-checksums -E UTF8 --locale=C.UTF-8 >/dev/null
  as_pg bash -c "cat >> '$p/postgresql.conf' <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = 1GB
hot_standby = on
hot_standby_feedback = on
CONF
echo 'host replication replicator 127.0.0.1/32 scram-sha-256' >> '$p/pg_hba.conf'"
  as_pg "$BIN/pg_ctl" start -D "$p" -l "$dir/primary.log" -w -s
  as_pg "$BIN/psql" -h "$dir" -p "$port" -U postgres -qAt -c \
    "CREATE ROLE replicator LOGIN REPLICATION PASSWORD 'secret'; SELECT pg_create_physical_replication_slot('replica1'); SELECT pg_create_physical_replication_slot('replica2');" >/dev/null
  for i in 1 2; do
    local r="$dir/replica$i"
    as_pg env PGPASSWORD=secret "$BIN/pg_basebackup" -h 127.0.0.1 -p "$port" -U replicator -D "$r" -X stream -S "replica$i" -R -c fast
    as_pg bash -c "echo \"port = $((port + i))\" >> '$r/postgresql.conf'; echo \"primary_conninfo = 'host=127.0.0.1 port=$port user=replicator password=secret application_name=replica$i'\" >> '$r/postgresql.conf'"
    as_pg "$BIN/pg_ctl" start -D "$r" -l "$dir/replica$i.log" -w -s
  done
  until [ "$(as_pg "$BIN/psql" -h "$dir" -p "$port" -U postgres -qAt -c "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")" = 2 ]; do
    sleep 0.05
  done
}

: > "$WORK/up.txt"; : > "$WORK/noha.txt"; : > "$WORK/guide.txt"; : > "$WORK/status.txt"
for round in $(seq 1 "$RUNS"); do
  port="$(free_ports 3)"
  t0="$(now)"
  "$PGKEEL" up --dir "$WORK/c$round" --base-port "$port" >/dev/null 2>&1
  t1="$(now)"
  elapsed "$t0" "$t1" >> "$WORK/up.txt"
  for _ in 1 2 3 4 5; do
    s0="$(now)"; "$PGKEEL" status --dir "$WORK/c$round" --json >/dev/null; s1="$(now)"
    elapsed_ms "$s0" "$s1" >> "$WORK/status.txt"
  done
  "$PGKEEL" destroy --dir "$WORK/c$round" --yes >/dev/null

  port="$(free_ports 3)"
  t0="$(now)"
  "$PGKEEL" up --no-ha --dir "$WORK/n$round" --base-port "$port" >/dev/null 2>&1
  t1="$(now)"
  elapsed "$t0" "$t1" >> "$WORK/noha.txt"
  "$PGKEEL" destroy --dir "$WORK/n$round" --yes >/dev/null

  port="$(free_ports 3)"
  t0="$(now)"
  guide_procedure "$WORK/guide$round" "$port" 2>/dev/null
  t1="$(now)"
  elapsed "$t0" "$t1" >> "$WORK/guide.txt"
  for n in primary replica1 replica2; do
    [ -f "$WORK/guide$round/$n/postmaster.pid" ] && as_pg "$BIN/pg_ctl" stop -D "$WORK/guide$round/$n" -m immediate -s -w || true
  done
  echo "round $round: pgkeel $(tail -1 "$WORK/up.txt")s, no-ha $(tail -1 "$WORK/noha.txt")s, guide $(tail -1 "$WORK/guide.txt")s" >&2
done

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $("$BIN/postgres" --version), $(date -u +%Y-%m-%d)"
stats "pgkeel up -> 3 streaming nodes + etcd + agents (s)" < "$WORK/up.txt"
stats "pgkeel up --no-ha -> 3 streaming nodes (s)" < "$WORK/noha.txt"
stats "guide procedure, native, sequential (s)" < "$WORK/guide.txt"
stats "pgkeel status --json latency (ms)" < "$WORK/status.txt"
python3 - "$WORK/up.txt" "$WORK/guide.txt" <<'PY'
import statistics, sys
up = [float(l) for l in open(sys.argv[1]) if l.strip()]
guide = [float(l) for l in open(sys.argv[2]) if l.strip()]
ratios = sorted(g / u for u, g in zip(up, guide))
print(f"guide / pgkeel time per round: min={ratios[0]:.2f} median={statistics.median(ratios):.2f} max={ratios[-1]:.2f}")
PY
