#!/usr/bin/env bash
# Failover benchmark: primary host crash under a continuous writer.
#
# Each run starts a fresh 3-node cluster (primary + 2 streaming replicas),
# starts bench/failover_probe.py (one writer, autocommit INSERTs of sequential
# ids on whichever node is primary), and after 3 s of acknowledged writes
# crashes the primary host: SIGKILL, in one loop, of its HA agent (pgkeel
# agent / Patroni) and of its postmaster with every descendant. Measured:
#   recovery  seconds from the crash until a write is acknowledged by the new
#             primary (on a connection opened after the crash)
#   lost      acknowledged writes missing on the new primary
#
# Configurations (interleaved round by round; CONFIGS= to choose):
#   pgkeel-quorum        `pgkeel up` defaults (quorum ANY 1, ttl 3, loop 1)
#   pgkeel-async         `pgkeel up --mode async`
#   patroni-default      Debian's Patroni, etcd v2, ttl 30 / loop_wait 10 / retry_timeout 10, async
#   patroni-tuned        ttl 20 / loop_wait 1 / retry_timeout 3, async: the minimums
#                        Patroni's docs state (ttl >= 20, loop_wait >= 1,
#                        retry_timeout >= 3); Debian's 3.0.2 validates none of them
#   patroni-tuned-sync   the same with synchronous_mode: true
#   patroni-pgkeel-timing ttl 3 / loop_wait 1 / retry_timeout 1, async:
#                        below Patroni's documented minimum, accepted by 3.0.x
#
# Usage: bench/failover.sh [RUNS] (default 5). Run as root.
# Env: CONFIGS="..." (subset, any order), PATRONI_DEFAULT / PATRONI_TUNED
# ("ttl loop_wait retry_timeout"). Agent/Patroni/PostgreSQL logs of every run
# and the raw per-run JSON lines stay in the work dir printed at the end;
# every process started is stopped by PID on exit, the data dirs are removed.
# Readiness before each crash: a leader and both replicas streaming from it
# (pg_basebackup's own WAL stream is not counted).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS="${1:-5}"
CONFIGS="${CONFIGS:-pgkeel-quorum pgkeel-async patroni-default patroni-tuned patroni-tuned-sync patroni-pgkeel-timing}"
PATRONI_DEFAULT="${PATRONI_DEFAULT:-30 10 10}"   # ttl loop_wait retry_timeout
PATRONI_TUNED="${PATRONI_TUNED:-20 1 3}"
PATRONI_PGKEEL_TIMING="3 1 1"
WARMUP=3
PY=/usr/bin/python3 # Debian's python3 with python3-psycopg2
OSUSER=postgres

[ "$(id -u)" -eq 0 ] || { echo "run as root (PostgreSQL/Patroni run as $OSUSER, the probe kills them)" >&2; exit 1; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pgkeel/target}"
if [[ " $CONFIGS " == *" pgkeel"* ]]; then cargo build --release -q -p pgkeel; fi
PGKEEL="$CARGO_TARGET_DIR/release/pgkeel"
BIN="$(pg_bindir)"

if ! $PY -c 'import psycopg2' 2>/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-psycopg2 >/dev/null 2>&1 || true
  $PY -c 'import psycopg2' || { echo "the probe needs Debian's python3-psycopg2" >&2; exit 1; }
fi

WORK="$(mktemp -d /tmp/pgkeel-failover-XXXXXX)"
chmod 755 "$WORK"
RAW="$WORK/runs.jsonl"
LOGS="$WORK/logs"
mkdir -p "$LOGS"
ACTIVE="" # the run directory being set up/measured
ETCD_PID=""
PROBE_PID=""

# ---------------------------------------------------------------- cleanup

# Is $1 a live process whose command line contains $2? (guards against PID reuse)
pid_is() { [ -n "$1" ] && [ -r "/proc/$1/cmdline" ] && { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null | grep -q -- "$2"; }

stop_pid() { # pid pattern signal
  pid_is "$1" "$2" && kill "-${3:-KILL}" "$1" 2>/dev/null || true
}

wait_gone() { # pid... ; up to 10 s
  local i p alive
  for i in $(seq 100); do
    alive=0
    for p in "$@"; do [ -n "$p" ] && kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && return 0
    sleep 0.1
  done
}

stop_run_dir() { # dir: everything a pgkeel or Patroni run started
  local d="$1" f pids=()
  [ -n "$d" ] && [ -d "$d" ] || return 0
  if [ -f "$d/cluster.toml" ]; then
    "$PGKEEL" destroy --dir "$d" --yes >"$d.destroy.log" 2>&1 || true
  fi
  [ -d "$d" ] || return 0
  # Leftovers (Patroni runs, or a failed destroy): by recorded PID only.
  for f in "$d"/*/patroni.pid "$d"/*/runuser.pid "$d"/nodes/*/agent.pid; do
    [ -f "$f" ] || continue
    local p; p="$(head -1 "$f")"; stop_pid "$p" "" KILL; pids+=("$p")
  done
  for f in "$d"/*/data/postmaster.pid "$d"/nodes/*/data/postmaster.pid; do
    [ -f "$f" ] || continue
    local p; p="$(head -1 "$f")"; stop_pid "$p" postgres QUIT; pids+=("$p")
  done
  for f in $(find "$d" -name '*.pid' -path '*etcd*' 2>/dev/null); do
    local p; p="$(head -1 "$f")"; stop_pid "$p" etcd TERM; pids+=("$p")
  done
  if [ "${#pids[@]}" -gt 0 ]; then wait_gone "${pids[@]}"; fi
  rm -rf "$d"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "$PROBE_PID" ] && kill -KILL "$PROBE_PID" 2>/dev/null || true
  stop_run_dir "$ACTIVE" || true
  if [ -n "$ETCD_PID" ]; then
    kill -TERM "$ETCD_PID" 2>/dev/null || true
    wait_gone "$ETCD_PID"
    rm -rf "$WORK/patroni-etcd"
  fi
  [ -f "$RAW" ] && echo "raw per-run results: $RAW (logs: $LOGS)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- ports

# N free loopback ports (each probed by binding), space separated.
free_ports_n() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks: s.close()
PY
}

# ---------------------------------------------------------------- probe

# run_probe out_json timeout node=dsn... -- kill args
run_probe() {
  local out="$1" timeout="$2"; shift 2
  $PY bench/failover_probe.py --warmup "$WARMUP" --after 1 --timeout "$timeout" "$@" >"$out" 2>"$out.err" &
  PROBE_PID=$!
  wait "$PROBE_PID" || true
  PROBE_PID=""
}

# ---------------------------------------------------------------- pgkeel

run_pgkeel() { # cfg round -> writes $1.json
  local cfg="$1" round="$2" mode_args=() base d st="" leader="" pid="" apid="" nodes=() n
  [ "$cfg" = pgkeel-async ] && mode_args=(--mode async)
  base="$(free_ports 3)"
  d="$WORK/run-$round-$cfg"
  ACTIVE="$d"
  if ! "$PGKEEL" up --dir "$d" --base-port "$base" "${mode_args[@]}" >"$WORK/up.log" 2>&1; then
    echo "{\"error\": \"pgkeel up failed: $(tail -1 "$WORK/up.log" | tr -d '"\\')\"}" >"$WORK/probe.json"
    stop_run_dir "$d"; ACTIVE=""; return
  fi
  # Wait until an agent holds the leader lease and both replicas stream from it.
  for _ in $(seq 150); do
    st="$("$PGKEEL" status --dir "$d" --json 2>/dev/null || true)"
    leader="$(echo "$st" | $PY -c '
import json, sys
s = json.load(sys.stdin)
reps = [n for n in s["nodes"] if n["name"] != s.get("leader")]
ok = s.get("leader") and len(reps) == 2 and all(n.get("replication_state") == "streaming" for n in reps)
print(s["leader"] if ok else "")' 2>/dev/null || true)"
    [ -n "$leader" ] && break
    sleep 0.2
  done
  read -r pid apid < <(echo "$st" | $PY -c '
import json, sys
s = json.load(sys.stdin)
n = [n for n in s["nodes"] if n["name"] == s["leader"]][0]
print(n["pid"] or "", n["agent_pid"] or "")' 2>/dev/null || true)
  if [ -z "${pid:-}" ] || [ -z "${apid:-}" ]; then
    echo "{\"error\": \"no leader with postmaster and agent PIDs in pgkeel status\"}" >"$WORK/probe.json"
  else
    for n in primary replica1 replica2; do
      nodes+=(--node "$n=$("$PGKEEL" url --dir "$d" --node "$n")")
    done
    run_probe "$WORK/probe.json" 30 "${nodes[@]}" --kill "$apid" --kill-tree "$pid" --table "probe_r$round"
  fi
  # Keep the agents' logs of every run (small) for post-mortems.
  mkdir -p "$LOGS/run-$round-$cfg"
  for n in primary replica1 replica2; do
    cp "$d/nodes/$n/agent.log" "$LOGS/run-$round-$cfg/$n.agent.log" 2>/dev/null || true
    cp "$d/nodes/$n/postgresql.log" "$LOGS/run-$round-$cfg/$n.postgresql.log" 2>/dev/null || true
  done
  "$PGKEEL" status --dir "$d" --json >"$LOGS/run-$round-$cfg/status-after.json" 2>&1 || true
  stop_run_dir "$d"
  ACTIVE=""
}

# ---------------------------------------------------------------- Patroni

PATRONI_OK=0
PATRONI_WHY=""
check_patroni() {
  if ! command -v patroni >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q patroni >"$WORK/apt.log" 2>&1 || true
  fi
  if ! command -v patroni >/dev/null; then
    PATRONI_WHY="patroni is not installed and 'apt-get install -y patroni' failed: $(tail -1 "$WORK/apt.log" 2>/dev/null)"; return
  fi
  if ! /usr/bin/python3 -c 'import etcd' 2>/dev/null; then
    PATRONI_WHY="Patroni's etcd v2 client (python3-etcd) is missing"; return
  fi
  if ! command -v etcd >/dev/null; then
    PATRONI_WHY="no etcd binary for Patroni's DCS (apt-get install etcd-server)"; return
  fi
  PATRONI_OK=1
}

start_patroni_etcd() {
  local cp pp
  read -r cp pp < <(free_ports_n 2)
  mkdir -p "$WORK/patroni-etcd"
  etcd --name bench --data-dir "$WORK/patroni-etcd/data" --enable-v2=true \
    --listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp" \
    --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
    --initial-cluster "bench=http://127.0.0.1:$pp" >"$WORK/patroni-etcd/etcd.log" 2>&1 &
  ETCD_PID=$!
  PATRONI_ETCD="127.0.0.1:$cp"
  for _ in $(seq 100); do
    curl -fsS "http://$PATRONI_ETCD/v2/keys/" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  PATRONI_OK=0; PATRONI_WHY="etcd for Patroni (v2 API) did not start: $(tail -2 "$WORK/patroni-etcd/etcd.log")"
  return 1
}

http_code() { curl -s -o /dev/null -m 1 -w '%{http_code}' "$1" 2>/dev/null || true; }

run_patroni() { # cfg round
  local cfg="$1" round="$2" timing sync=false ttl loop retry d ports i n leader=""
  case "$cfg" in
    patroni-default) timing="$PATRONI_DEFAULT" ;;
    patroni-tuned) timing="$PATRONI_TUNED" ;;
    patroni-tuned-sync) timing="$PATRONI_TUNED"; sync=true ;;
    patroni-pgkeel-timing) timing="$PATRONI_PGKEEL_TIMING" ;;
  esac
  read -r ttl loop retry <<<"$timing"
  d="$WORK/run-$round-$cfg"
  ACTIVE="$d"
  mkdir -p "$d"
  read -r -a ports < <(free_ports_n 6) # 3 PostgreSQL + 3 REST
  for i in 0 1 2; do
    n="n$i"
    mkdir -p "$d/$n"
    cat >"$d/$n/patroni.yml" <<YML
scope: bench-$round-$cfg
name: $n
restapi:
  listen: 127.0.0.1:${ports[$((i + 3))]}
  connect_address: 127.0.0.1:${ports[$((i + 3))]}
etcd:
  host: $PATRONI_ETCD
bootstrap:
  dcs:
    ttl: $ttl
    loop_wait: $loop
    retry_timeout: $retry
    maximum_lag_on_failover: 1048576
    synchronous_mode: $sync
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        wal_keep_size: 1GB
        max_wal_senders: 10
        max_replication_slots: 10
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
    - data-checksums
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 scram-sha-256
    - host all all 127.0.0.1/32 scram-sha-256
postgresql:
  listen: 127.0.0.1:${ports[$i]}
  connect_address: 127.0.0.1:${ports[$i]}
  data_dir: $d/$n/data
  bin_dir: $BIN
  pgpass: $d/$n/pgpass
  authentication:
    superuser: {username: postgres, password: benchsecret}
    replication: {username: replicator, password: replsecret}
  parameters:
    unix_socket_directories: $d/$n
YML
  done
  chown -R "$OSUSER" "$d"
  chmod 755 "$d"
  for i in 0 1 2; do
    n="n$i"
    runuser -u "$OSUSER" -- bash -c "echo \$\$ > '$d/$n/patroni.pid'; exec patroni '$d/$n/patroni.yml' >'$d/$n/patroni.log' 2>&1" 2>>"$d/$n/runuser.log" &
    echo $! >"$d/$n/runuser.pid"
    disown $! # no "Killed" job notices; stopped by PID in stop_run_dir
    if [ "$i" = 0 ]; then sleep 1; fi # let n0 bootstrap first (not required)
  done
  # Ready: a leader (REST /primary 200) with 2 streaming replicas (a sync one in sync mode).
  local ready=0 want="streaming" q
  for _ in $(seq 600); do
    leader=""
    for i in 0 1 2; do
      [ "$(http_code "http://127.0.0.1:${ports[$((i + 3))]}/primary")" = 200 ] && leader="$i"
    done
    if [ -n "$leader" ]; then
      # application_name = Patroni member name: pg_basebackup's own WAL stream also shows as 'streaming'.
      q="SELECT count(*) FILTER (WHERE state='streaming'), count(*) FILTER (WHERE sync_state IN ('sync','quorum')) FROM pg_stat_replication WHERE application_name IN ('n0','n1','n2')"
      read -r nstream nsync < <(PGPASSWORD=benchsecret PGCONNECT_TIMEOUT=2 psql -h 127.0.0.1 -p "${ports[$leader]}" -U postgres -d postgres -qAt -F ' ' -c "$q" 2>/dev/null || echo "0 0")
      if [ "$nstream" = 2 ] && { [ "$sync" = false ] || [ "$nsync" -ge 1 ]; }; then ready=1; break; fi
    fi
    sleep 0.2
  done
  if [ "$ready" != 1 ]; then
    echo "{\"error\": \"Patroni cluster not ready within 120 s (see $LOGS/run-$round-$cfg)\"}" >"$WORK/probe.json"
  else
    local ppid pmpid nodes=()
    ppid="$(cat "$d/n$leader/patroni.pid")"
    pmpid="$(head -1 "$d/n$leader/data/postmaster.pid")"
    for i in 0 1 2; do
      nodes+=(--node "n$i=host=127.0.0.1 port=${ports[$i]} user=postgres password=benchsecret dbname=postgres")
    done
    local to=60
    [ "$cfg" = patroni-default ] && to=90
    run_probe "$WORK/probe.json" "$to" "${nodes[@]}" --kill "$ppid" --kill-tree "$pmpid" --table "probe_r$round"
  fi
  mkdir -p "$LOGS/run-$round-$cfg"
  for i in 0 1 2; do cp "$d/n$i/patroni.log" "$LOGS/run-$round-$cfg/n$i.patroni.log" 2>/dev/null || true; done
  stop_run_dir "$d"
  ACTIVE=""
}

# ---------------------------------------------------------------- main

PGV="$("$BIN/postgres" --version)"
echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')  host: nproc=$(nproc) mem=$(free -g | awk '/^Mem:/{print $2}')GiB"
echo "PostgreSQL: $PGV  pgkeel: $(git rev-parse --short HEAD 2>/dev/null || echo '?') (release build)  etcd: $(etcd --version 2>/dev/null | head -1 | awk '{print $3}')"
if [[ " $CONFIGS " == *" patroni"* ]]; then
  check_patroni
  [ "$PATRONI_OK" = 1 ] && start_patroni_etcd || true
  if [ "$PATRONI_OK" = 1 ]; then
    echo "Patroni: $(patroni --version 2>&1 | awk '{print $2}') (Debian package $(dpkg-query -W -f '${Version}' patroni 2>/dev/null)), etcd v2 API at $PATRONI_ETCD (pid $ETCD_PID)"
  else
    echo "Patroni: NOT RUN - $PATRONI_WHY"
    CONFIGS="$(for c in $CONFIGS; do [[ $c == patroni* ]] || echo "$c"; done | xargs)"
  fi
fi
echo "Patroni timing (ttl/loop_wait/retry_timeout): default $PATRONI_DEFAULT, tuned $PATRONI_TUNED (the minimums in current Patroni docs; 3.0.2 validates none of them), pgkeel-timing $PATRONI_PGKEEL_TIMING"
echo "configs: $CONFIGS   runs: $RUNS   warm-up: ${WARMUP}s of writes before each crash   work dir: $WORK"

for round in $(seq "$RUNS"); do
  for cfg in $CONFIGS; do
    rm -f "$WORK/probe.json"
    case "$cfg" in
      pgkeel-*) run_pgkeel "$cfg" "$round" ;;
      patroni-*) run_patroni "$cfg" "$round" ;;
      *) echo "unknown config $cfg" >&2; exit 2 ;;
    esac
    [ -s "$WORK/probe.json" ] || echo "{\"error\": \"probe printed nothing: $(tail -1 "$WORK/probe.json.err" 2>/dev/null | tr -d '"\\')\"}" >"$WORK/probe.json"
    $PY - "$cfg" "$round" "$WORK/probe.json" "$RAW" <<'PY'
import json, sys
cfg, rnd, path, raw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
try:
    r = json.load(open(path))
except Exception as e:
    r = {"error": f"unreadable probe output: {e}"}
r = {"config": cfg, "round": rnd, **r}
with open(raw, "a") as f:
    f.write(json.dumps(r) + "\n")
if "error" in r:
    print(f"round {rnd} {cfg:<22} ERROR {r['error']}")
elif r["timeout"]:
    print(f"round {rnd} {cfg:<22} TIMEOUT no write acknowledged within {r['timeout_s']:.0f}s "
          f"(acked {r['acked']}, last error: {r.get('last_error','')})")
else:
    print(f"round {rnd} {cfg:<22} recovery {r['recovery_s']:7.3f}s  lost {r['lost_n']:4d} of {r['acked']:6d} acked  "
          f"{r['old_primary']}->{r['new_primary']}  {r['writes_per_s']:.0f} w/s"
          + (f"  lost ids {r['lost'][:10]}" if r['lost_n'] else ""))
PY
  done
done

echo
$PY - "$RAW" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
cfgs = list(dict.fromkeys(r["config"] for r in runs))
med = {}
print(f"{'config':<22} {'ok':>3} {'t/o':>3} {'err':>3} {'min s':>7} {'median s':>9} {'max s':>7} {'lost':>5}  lost per run")
for c in cfgs:
    rs = [r for r in runs if r["config"] == c]
    ok = [r for r in rs if "error" not in r and not r["timeout"]]
    to = sum(1 for r in rs if "error" not in r and r["timeout"])
    err = sum(1 for r in rs if "error" in r)
    xs = [r["recovery_s"] for r in ok]
    lost = [("t/o" if r.get("timeout") else "err" if "error" in r else str(r["lost_n"])) for r in rs]
    if xs:
        med[c] = statistics.median(xs)
        print(f"{c:<22} {len(ok):>3} {to:>3} {err:>3} {min(xs):7.3f} {med[c]:9.3f} {max(xs):7.3f} "
              f"{sum(r['lost_n'] for r in ok):>5}  {' '.join(lost)}")
    else:
        print(f"{c:<22} {len(ok):>3} {to:>3} {err:>3} {'-':>7} {'-':>9} {'-':>7} {'-':>5}  {' '.join(lost)}")
print()
pk = [c for c in med if c.startswith("pgkeel")]
pa = [c for c in med if c.startswith("patroni")]
for p in pa:
    print("ratio of medians  " + "   ".join(f"{p}/{k} = {med[p] / med[k]:.1f}x" for k in pk))
PY
