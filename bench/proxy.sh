#!/usr/bin/env bash
# Proxy benchmark: pgbench through pgkeel proxy, PgBouncer (transaction
# mode) and pgpool-II, against the primary directly, in interleaved rounds.
#
#   cases    select-only (-S) with -M simple/extended/prepared, 8 and 32
#            clients; the TPC-B-like default script with 8 clients
#   targets  direct (the primary), replica (one replica directly: where
#            pgkeel's selects run; not for TPC-B), pipe (bench/pipe.c: a
#            byte pipe, one server connection per client, no parsing or
#            pooling: the floor of any proxy on this machine; to the
#            replicas for selects, to the primary for TPC-B), pgbouncer,
#            pgpool, pgkeel
#   output   per case and target: min/median/max TPS, median ratio to
#            direct and to PgBouncer and pgpool-II, median CPU time of the
#            pooler per transaction (from /proc: utime+stime of its
#            processes, and for pgkeel the user/system split); pgkeel's RSS
#            idle at start, idle after the rounds, and with 1,000 idle
#            clients (per client: against the idle RSS after the rounds);
#            then pgkeel's ratio to each anchor paired within each round,
#            min/median/max over the rounds (robust to a machine whose
#            speed drifts; the target order rotates from round to round)
#
# PgBouncer and pgpool-II come from the OS packages and are installed if
# missing. All poolers front the same cluster (primary + 2 replicas, async);
# PgBouncer and pgpool-II send everything to the primary, pgkeel splits
# reads to the replicas. Every process started here is stopped by PID.
#
# Usage: bench/proxy.sh [ROUNDS] [SECONDS]   (default 3 rounds of 5 s)
# PGKEEL_PROXY_THREADS=N runs pgkeel proxy with N threads (default 1);
# PGKEEL_BENCH_CASES selects cases (see CASES below).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS="${1:-3}"
SECS="${2:-5}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pgkeel/target}"

# Five rounds of TPC-B write WAL on three nodes: a disk that fills up
# mid-run makes the primary PANIC and every later run fail.
avail_kb="$(df -Pk "${TMPDIR:-/tmp}" | awk 'NR == 2 {print $4}')"
if [ "${avail_kb:-0}" -lt $((4 * 1024 * 1024)) ]; then
  echo "only $((avail_kb / 1024)) MB free under ${TMPDIR:-/tmp}: free at least 4 GB (old build directories under ~/.cache, test dirs) and run again" >&2
  exit 1
fi

missing=()
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
command -v pgpool >/dev/null || [ -x /usr/sbin/pgpool ] || missing+=(pgpool2)
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "need root to install ${missing[*]}" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
PGBOUNCER="$(command -v pgbouncer || echo /usr/sbin/pgbouncer)"
PGPOOL="$(command -v pgpool || echo /usr/sbin/pgpool)"

cargo build --release -q -p pgkeel
PGKEEL="$CARGO_TARGET_DIR/release/pgkeel"
BIN="$(pg_bindir)"
OSUSER=postgres
WORK="$(mktemp -d /tmp/pgkeel-proxybench-XXXXXX)"
chmod 755 "$WORK"
PIDS=()
THREADS="${PGKEEL_PROXY_THREADS:-1}"

cleanup() {
  set +e
  # Poolers first (pgpool's children spin once their servers are gone),
  # by the PIDs in their pid files (runuser does not pass signals on),
  # with their children; then our own children; then the servers.
  local pooler=() f pid
  for f in "$WORK/pgbouncer/pgbouncer.pid" "$WORK/pgpool/pgpool.pid"; do
    [ -f "$f" ] || continue
    pid="$(tr -d '\0' < "$f" | head -1)"
    [ -n "$pid" ] || continue
    pooler+=("$pid" $(ps -o pid= --ppid "$pid" 2>/dev/null))
  done
  for pid in "${pooler[@]}" "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  sleep 1
  for pid in "${pooler[@]}" "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  # The cluster's HA agents and etcd (daemons of `pgkeel up`), by their pid
  # files, before the servers so nothing restarts them.
  for f in "$WORK"/cluster/nodes/*/agent.pid "$WORK"/cluster/etcd/supervisor.pid "$WORK"/cluster/etcd/etcd.pid; do
    [ -f "$f" ] || continue
    pid="$(tr -d '\0' < "$f" | head -1)"
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  sleep 1
  for pidfile in "$WORK"/cluster/nodes/*/data/postmaster.pid; do
    [ -f "$pidfile" ] || continue
    kill -INT "$(head -1 "$pidfile")" 2>/dev/null || true
  done
  sleep 1
  # A target that failed leaves its evidence: the nodes' server and agent
  # logs and the poolers' logs are kept (the rest of the work dir goes).
  if [ -s "${RESULTS:-/nonexistent}" ] && grep -q FAIL "$RESULTS"; then
    local keep="${TMPDIR:-/tmp}/pgkeel-proxybench-logs.$$"
    mkdir -p "$keep"
    for f in "$WORK"/cluster/nodes/*/*.log "$WORK"/cluster/etcd/*.log "$WORK"/pgkeel-proxy.log \
             "$WORK"/pgbouncer/*.log "$WORK"/pgpool/*.log; do
      [ -f "$f" ] && cp "$f" "$keep/$(basename "$(dirname "$f")")-$(basename "$f")"
    done
    echo "some runs failed: logs kept in $keep" >&2
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u "$OSUSER" -- "$@"; else "$@"; fi; }

BASE="$(free_ports 8)"
PG_PORT="$BASE"; BOUNCER_PORT=$((BASE + 3)); POOL_PORT=$((BASE + 4)); KEEL_PORT=$((BASE + 5))
PIPE_PORT=$((BASE + 6)); PIPE_PRIMARY_PORT=$((BASE + 7))
"$PGKEEL" up --dir "$WORK/cluster" --base-port "$PG_PORT" --replicas 2 --mode async --no-proxy >/dev/null
PASS="$(cat "$WORK/cluster/secrets/app.password")"
export PGPASSWORD="$PASS" PGUSER=app PGDATABASE=app PGHOST=127.0.0.1
"$BIN/pgbench" -i -s 10 -q -p "$PG_PORT" >/dev/null 2>&1

# PgBouncer, transaction mode, 32 server connections.
B="$WORK/pgbouncer"; mkdir -p "$B"
printf '"app" "%s"\n' "$PASS" > "$B/userlist.txt"
cat > "$B/pgbouncer.ini" <<INI
[databases]
app = host=127.0.0.1 port=$PG_PORT dbname=app
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $B/userlist.txt
pool_mode = transaction
default_pool_size = 32
max_client_conn = 2000
logfile = $B/pgbouncer.log
pidfile = $B/pgbouncer.pid
INI
chown -R "$OSUSER" "$B"; chmod 600 "$B/userlist.txt"
as_pg "$PGBOUNCER" "$B/pgbouncer.ini" >/dev/null 2>&1 &
PIDS+=($!)

# pgpool-II, one backend (the primary), 32 children, connection cache on.
P="$WORK/pgpool"; mkdir -p "$P"
printf 'app:TEXT%s\n' "$PASS" > "$P/pool_passwd"
: > "$P/pcp.conf"
printf 'host all all 127.0.0.1/32 scram-sha-256\n' > "$P/pool_hba.conf"
cat > "$P/pgpool.conf" <<CONF
backend_clustering_mode = 'streaming_replication'
listen_addresses = '127.0.0.1'
port = $POOL_PORT
unix_socket_directories = '$P'
pcp_listen_addresses = ''
pcp_port = $((BASE + 2))
pcp_socket_dir = '$P'
backend_hostname0 = '127.0.0.1'
backend_port0 = $PG_PORT
backend_weight0 = 1
backend_flag0 = 'ALWAYS_PRIMARY|DISALLOW_TO_FAILOVER'
enable_pool_hba = on
pool_passwd = '$P/pool_passwd'
num_init_children = 32
max_pool = 1
connection_cache = on
load_balance_mode = off
sr_check_period = 0
health_check_period = 0
failover_on_backend_error = off
pid_file_name = '$P/pgpool.pid'
logdir = '$P'
CONF
chown -R "$OSUSER" "$P"; chmod 600 "$P/pool_passwd"
as_pg "$PGPOOL" -n -f "$P/pgpool.conf" -F "$P/pcp.conf" -a "$P/pool_hba.conf" >"$P/pgpool.log" 2>&1 &
PIDS+=($!)

# pgkeel proxy.
"$PGKEEL" proxy --dir "$WORK/cluster" --listen "127.0.0.1:$KEEL_PORT" --pool-size 32 --threads "$THREADS" 2>"$WORK/pgkeel-proxy.log" &
KEEL_PID=$!
PIDS+=($KEEL_PID)

# The pipe: the floor of any proxy (see bench/pipe.c), over the nodes'
# Unix sockets as pgkeel's server connections: to the replicas for
# selects, to the primary for TPC-B.
gcc -O2 -o "$WORK/pipe" bench/pipe.c
"$WORK/pipe" "$PIPE_PORT" "$WORK/cluster/nodes/replica1/run/.s.PGSQL.$((PG_PORT + 1))" \
  "$WORK/cluster/nodes/replica2/run/.s.PGSQL.$((PG_PORT + 2))" 2>"$WORK/pipe.log" &
PIPE_PID=$!
PIDS+=($PIPE_PID)
"$WORK/pipe" "$PIPE_PRIMARY_PORT" "$WORK/cluster/nodes/primary/run/.s.PGSQL.$PG_PORT" \
  2>"$WORK/pipe-primary.log" &
PIPE_PRIMARY_PID=$!
PIDS+=($PIPE_PRIMARY_PID)

wait_port() {
  for _ in $(seq 1 100); do
    "$BIN/psql" -p "$1" -Atc 'SELECT 1' >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "nothing answers on port $1" >&2; return 1
}
for p in "$BOUNCER_PORT" "$POOL_PORT" "$KEEL_PORT" "$PIPE_PORT" "$PIPE_PRIMARY_PORT"; do wait_port "$p"; done
# Warm every server's caches alike: `pgbench -i` warmed only the primary,
# and pgkeel sends the selects to the replicas.
for p in "$PG_PORT" $((PG_PORT + 1)) $((PG_PORT + 2)); do
  "$BIN/pgbench" -S -c 4 -j 2 -T 5 -p "$p" >/dev/null 2>&1 || true
done
sleep 1
keel_rss_idle="$(awk '/VmRSS/ {print $2}' /proc/$KEEL_PID/status)"

# Pids whose CPU counts for a target (the pooler and its children).
cpu_split() {
  local pid
  pid="$(pooler_pids "$1" | head -1)"
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] && awk '{print $14, $15}' "/proc/$pid/stat" || echo "0 0"
}
pooler_pids() {
  case "$1" in
    direct|replica) ;;
    pgbouncer) pgrep -u "$OSUSER" -x pgbouncer || true ;;
    pgpool) pgrep -u "$OSUSER" -x pgpool || true ;;
    pgkeel) echo "$KEEL_PID" ;;
    pipe) echo "$PIPE_PID"; echo "$PIPE_PRIMARY_PID" ;;
  esac
}
cpu_ticks() {
  local total=0 pid
  for pid in $(pooler_pids "$1"); do
    [ -r "/proc/$pid/stat" ] || continue
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}
port_of() {
  case "$1" in
    direct) echo "$PG_PORT" ;; replica) echo $((PG_PORT + 1)) ;; pgbouncer) echo "$BOUNCER_PORT" ;;
    pgpool) echo "$POOL_PORT" ;; pgkeel) echo "$KEEL_PORT" ;;
    pipe) if [ "$2" = "-S" ]; then echo "$PIPE_PORT"; else echo "$PIPE_PRIMARY_PORT"; fi ;;
  esac
}
HZ="$(getconf CLK_TCK)"
CASES=("simple 8 -S" "simple 32 -S" "extended 8 -S" "prepared 8 -S" "prepared 8 tpcb")
# PGKEEL_BENCH_CASES="prepared 8 -S;simple 32 -S" runs only those cases.
if [ -n "${PGKEEL_BENCH_CASES:-}" ]; then IFS=';' read -ra CASES <<<"$PGKEEL_BENCH_CASES"; fi
TARGETS=(direct replica pipe pgbouncer pgpool pgkeel)
RESULTS="$WORK/results"; : > "$RESULTS"

for round in $(seq 1 "$ROUNDS"); do
  # Each round starts the targets at another place in the list, so no
  # target always runs right after the same neighbour (pgpool-II's 32
  # children, a cooling cache, a drifting machine).
  shift_by=$(( (round - 1) % ${#TARGETS[@]} ))
  ORDER=("${TARGETS[@]:$shift_by}" "${TARGETS[@]:0:$shift_by}")
  for c in "${CASES[@]}"; do
    read -r mode clients script <<<"$c"
    for t in "${ORDER[@]}"; do
      [ "$t" = replica ] && [ "$script" != "-S" ] && continue
      args=(-M "$mode" -c "$clients" -j 2 -T "$SECS" -p "$(port_of "$t" "$script")")
      [ "$script" = "-S" ] && args+=(-S)
      before="$(cpu_ticks "$t")"
      read -r ub sb <<<"$(cpu_split "$t")"
      out="$("$BIN/pgbench" "${args[@]}" 2>&1)" || true
      after="$(cpu_ticks "$t")"
      read -r ua sa <<<"$(cpu_split "$t")"
      tps="$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -1)"
      txns="$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")"
      lat="$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")"
      if [ -z "$tps" ] || [ -z "$txns" ] || [ "$txns" = 0 ]; then
        tps=FAIL
        # Say why (pgbench's first errors).
        grep -E "error|abort|FATAL|ERROR" <<<"$out" | grep -v -i vacuum | head -3 | sed "s/^/  $t: /" >&2 || true
      fi
      us=""; split=""
      if [ "$tps" != FAIL ] && [ "$t" != direct ] && [ "$t" != replica ]; then
        us="$(python3 -c "print(round(($after - $before) / $HZ * 1e6 / $txns, 1))")"
        [ "$t" = pgkeel ] && split="$(python3 -c "print(round(($ua - $ub) / $HZ * 1e6 / $txns, 1), round(($sa - $sb) / $HZ * 1e6 / $txns, 1))")"
      fi
      echo "$round|$mode $clients ${script/-S/select}|$t|$tps|${lat:-}|$us|$split" >> "$RESULTS"
      echo "round $round: $mode $clients ${script/-S/select} $t: tps=$tps lat=${lat:-?}ms cpu/txn=${us:-n/a}us" >&2
    done
  done
done

# pgkeel's memory with 1,000 idle clients (logged in, between statements),
# against its idle RSS after the rounds (pools filled, code paths touched).
sleep 1
keel_rss_after="$(awk '/VmRSS/ {print $2}' /proc/$KEEL_PID/status)"
ulimit -n 8192 2>/dev/null || true
printf '\\sleep 8 s\n' > "$WORK/idle.sql"
"$BIN/pgbench" -n -f "$WORK/idle.sql" -c 1000 -j 2 -T 10 -p "$KEEL_PORT" >/dev/null 2>&1 &
IDLE_PID=$!
PIDS+=($IDLE_PID)
sleep 6
keel_clients="$(grep -c . <(ss -Htn state established "( sport = :$KEEL_PORT )" 2>/dev/null) || true)"
keel_rss_1000="$(awk '/VmRSS/ {print $2}' /proc/$KEEL_PID/status)"
wait "$IDLE_PID" 2>/dev/null || true

python3 - "$RESULTS" "$keel_rss_idle" "$ROUNDS" "$SECS" "$keel_rss_1000" "$keel_clients" "$keel_rss_after" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("|") for l in open(sys.argv[1]) if l.strip()]
cases, targets = [], []
data = {}
for _, case, target, tps, lat, us, split in rows:
    if case not in cases: cases.append(case)
    if target not in targets: targets.append(target)
    data.setdefault((case, target), []).append((tps, lat, us, split))
def median_tps(case, target):
    ok = [float(v[0]) for v in data.get((case, target), []) if v[0] != "FAIL"]
    return statistics.median(ok) if ok else None
# Paired ratios: pgkeel against each anchor within the same round (runs
# minutes apart at most), so a machine that is slower for a while slows
# both sides of a ratio; min/median/max over the rounds.
by_round = {}
for rnd, case, target, tps, *_ in rows:
    if tps != "FAIL":
        by_round[(rnd, case, target)] = float(tps)
def paired(case, other):
    rs = sorted(by_round[(r, c, t)] / by_round[(r, c, other)]
                for (r, c, t) in by_round
                if c == case and t == "pgkeel" and (r, c, other) in by_round)
    return rs
print(f"pgbench, {sys.argv[3]} interleaved rounds of {sys.argv[4]} s, median (min-max)")
print("| case | target | TPS | latency ms | ratio to direct | to PgBouncer | to pgpool-II | pooler CPU µs/txn (user+sys) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for case in cases:
    dmed = median_tps(case, "direct")
    for target in targets:
        vals = data.get((case, target), [])
        if not vals:
            continue
        ok = [float(v[0]) for v in vals if v[0] != "FAIL"]
        if not ok:
            print(f"| {case} | {target} | fails | | | | | |"); continue
        med = statistics.median(ok)
        lats = [float(v[1]) for v in vals if v[0] != "FAIL" and v[1]]
        uss = [float(v[2]) for v in vals if v[0] != "FAIL" and v[2]]
        splits = [v[3].split() for v in vals if v[0] != "FAIL" and v[3]]
        fails = len(vals) - len(ok)
        ratio = f"{med / dmed:.2f}" if dmed else ""
        rel = []
        for other in ("pgbouncer", "pgpool"):
            o = median_tps(case, other)
            rel.append(f"{med / o:.2f}" if o and target not in ("direct", "replica", other) else "")
        cpu = f"{statistics.median(uss):.1f}" if uss else ""
        if splits:
            cpu += (f" ({statistics.median(float(s[0]) for s in splits):.1f}"
                    f"+{statistics.median(float(s[1]) for s in splits):.1f})")
        note = f" ({fails} failed)" if fails else ""
        print(f"| {case} | {target} | {med:.0f} ({min(ok):.0f}-{max(ok):.0f}){note} | "
              f"{statistics.median(lats):.3f} | {ratio} | {rel[0]} | {rel[1]} | {cpu} |")
print("\npgkeel against each anchor, paired within a round: median (min-max) of the rounds' ratios")
print("| case | to direct | to PgBouncer | to pgpool-II | to the pipe (floor) |")
print("| --- | --- | --- | --- | --- |")
for case in cases:
    cells = []
    for other in ("direct", "pgbouncer", "pgpool", "pipe"):
        rs = paired(case, other)
        cells.append(f"{statistics.median(rs):.2f} ({rs[0]:.2f}-{rs[-1]:.2f})" if rs else "n/a")
    print(f"| {case} | " + " | ".join(cells) + " |")
idle, busy, n = int(sys.argv[2]), int(sys.argv[5]), int(sys.argv[6] or 0)
after = int(sys.argv[7])
print(f"\npgkeel proxy RSS idle: {idle / 1024:.1f} MB at start, {after / 1024:.1f} MB after the rounds; "
      f"with {n} idle clients: {busy / 1024:.1f} MB (+{(busy - after) / max(n, 1):.1f} KB per client "
      f"over the idle RSS after the rounds, +{(busy - idle) / max(n, 1):.1f} KB over the RSS at start)")
PY
