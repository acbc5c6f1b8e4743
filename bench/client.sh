#!/usr/bin/env bash
# Client library overhead: pgkeel-client `read()` + `SELECT 1` versus a plain
# deadpool-postgres pool to the same replica (prepared statement cache and
# fast recycling on both sides), interleaved rounds, on a fresh
# `pgkeel up` cluster (primary + 1 replica) on free loopback ports.
#
#   bench/client.sh [ROUNDS] [OPS] [TASKS]     (defaults 101, 1000, 1)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS="${1:-101}"
OPS="${2:-1000}"
TASKS="${3:-1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pgkeel/target}"
cargo build --release -q -p pgkeel
cargo build --release -q -p pgkeel-client --example bench-read
PGKEEL="$CARGO_TARGET_DIR/release/pgkeel"
BENCH="$CARGO_TARGET_DIR/release/examples/bench-read"
WORK="$(mktemp -d /tmp/pgkeel-bench-client-XXXXXX)"
chmod 755 "$WORK"

cleanup() {
  # pgkeel stops what it started (proxy, agents, etcd, servers) by PID;
  # then any server left over, by its postmaster.pid.
  [ -f "$WORK/c/cluster.toml" ] && "$PGKEEL" destroy --dir "$WORK/c" --yes >/dev/null 2>&1
  for pidfile in "$WORK"/c/nodes/*/data/postmaster.pid; do
    [ -f "$pidfile" ] || continue
    kill -QUIT "$(head -1 "$pidfile")" 2>/dev/null || true
  done
  sleep 0.5
  rm -rf "$WORK"
}
trap cleanup EXIT

port="$(free_ports 2)"
"$PGKEEL" up --dir "$WORK/c" --base-port "$port" --replicas 1 --mode async >/dev/null 2>&1
primary="$("$PGKEEL" url --dir "$WORK/c" --node primary)"
replica="$("$PGKEEL" url --dir "$WORK/c" --node replica1)"
echo "PostgreSQL $("$(pg_bindir)/postgres" --version | awk '{print $3}'), $(nproc) cores, rounds=$ROUNDS ops=$OPS tasks=$TASKS"
"$BENCH" --primary "$primary" --replica "$replica" --rounds "$ROUNDS" --ops "$OPS" --tasks "$TASKS"
