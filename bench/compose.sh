#!/usr/bin/env bash
# Compose benchmark: pgkeel's exported Docker Compose cluster against
# Patroni 3 (Debian's package) + etcd in the same kind of containers, in
# the same run, rounds interleaved.
#
# Both: three containers on a compose network with static addresses, each
# running PostgreSQL 15, its HA agent (pgkeel agent --with-etcd / Patroni)
# and one member of a 3-member etcd (heartbeat 100 ms, election 1 s);
# images built before timing, from the local base images of
# .ci/base-image.sh (pgkeel-base / pgkeel-patroni-base, the same debootstrap).
# Measured per round, from nothing (volumes removed between rounds):
#   ready     seconds from `docker-compose up -d` to a leader with both
#             replicas streaming from it
#   failover  bench/failover_probe.py writes (autocommit INSERTs, directly to
#             whichever node is primary, through the published ports); after
#             3 s it `docker kill`s the primary's container (a host crash: its
#             address vanishes, no TCP reset); seconds until a write is
#             acknowledged by the new primary; acknowledged rows lost
#
# pgkeel: `pgkeel init --node ...` + `pgkeel export compose` defaults
# (quorum ANY 1, ttl 3, loop_wait 1). Patroni: synchronous_mode
# ($PATRONI_SYNC, default true, for the same no-loss promise), ttl/loop_wait/
# retry_timeout $PATRONI_TIMING (default "20 1 3", the minimums Patroni's
# docs state), etcd3 DCS, use_pg_rewind, use_slots; config generated here.
#
# VIA=proxy: pgkeel alone, the writer going through the exported proxy's
# published port instead (a write unanswered for 1 s is given up and
# retried on a new connection); the writer's errors after the kill, with
# wall-clock times, are kept beside the containers' logs (docker logs -t);
# bench/compose_timeline.py LOGDIR ROUND merges them into one timeline.
#
# Usage: bench/compose.sh [RUNS] (default 5). Run as root, with Docker and
# docker-compose. Env: PGKEEL_BIN (a built pgkeel with pgkeel-proxy beside
# it; default: cargo build --release), PATRONI_TIMING, PATRONI_SYNC, VIA.
# Everything started is removed on exit (compose projects by name, with
# their volumes, networks and images).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS="${1:-5}"
PATRONI_TIMING="${PATRONI_TIMING:-20 1 3}"
PATRONI_SYNC="${PATRONI_SYNC:-true}"
VIA="${VIA:-}"
case "$VIA" in ""|proxy) ;; *) echo "VIA must be empty or proxy" >&2; exit 1 ;; esac
PY=/usr/bin/python3
WARMUP=3

[ "$(id -u)" -eq 0 ] || { echo "run as root (Docker, and the base images are built with debootstrap)" >&2; exit 1; }
command -v docker-compose >/dev/null || { echo "docker-compose is missing: apt-get install docker-compose" >&2; exit 1; }
if ! $PY -c 'import psycopg2' 2>/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-psycopg2 >/dev/null 2>&1 || true
  $PY -c 'import psycopg2' || { echo "the probe needs Debian's python3-psycopg2 (apt-get install python3-psycopg2)" >&2; exit 1; }
fi

.ci/base-image.sh pgkeel
[ -n "$VIA" ] || .ci/base-image.sh patroni
if [ -z "${PGKEEL_BIN:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pgkeel/target}"
  cargo build --release -q -p pgkeel
  PGKEEL_BIN="$CARGO_TARGET_DIR/release/pgkeel"
fi

WORK="$(mktemp -d /tmp/pgkeel-compose-bench-XXXXXX)"
chmod 755 "$WORK"
RAW="$WORK/runs.jsonl"
TAG="pgkbench$$"
PG_PROJECT="${TAG}pgkeel"
PA_PROJECT="${TAG}patroni"

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for p in "$PG_PROJECT:$WORK/pgkeel/export" "$PA_PROJECT:$WORK/patroni"; do
    local name="${p%%:*}" dir="${p#*:}"
    [ -f "$dir/docker-compose.yml" ] || continue
    (cd "$dir" && docker-compose -p "$name" down -v --rmi local --timeout 2 >/dev/null 2>&1) || true
  done
  [ -f "$RAW" ] && echo "raw per-run results: $RAW (container logs in $WORK/logs)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$WORK/logs"

# Subnets and published ports of this run.
PG_NET="10.$((200 + $$ % 25)).$((RANDOM % 250)).0"; PG_NET="${PG_NET%.0}"
PA_NET="10.$((225 + $$ % 25)).$((RANDOM % 250)).0"; PA_NET="${PA_NET%.0}"
PG_BASE="$(free_ports 3)"
PA_BASE="$(free_ports 3)"

# Builds DIR's image once and tags it for every service of PROJECT.
build_tagged() { # dir project base_image services...
  local dir="$1" project="$2" base="$3"; shift 3
  docker build -q --build-arg "BASE_IMAGE=$base" -t "${project}_$1" "$dir" >/dev/null 2>&1
  local s
  for s in "${@:2}"; do docker tag "${project}_$1" "${project}_$s"; done
}

# ---------------------------------------------------------------- pgkeel

setup_pgkeel() {
  local d="$WORK/pgkeel"
  mkdir -p "$d/origin"
  "$PGKEEL_BIN" init -o "$d/origin/pgkeel.toml" --name bench \
    --node "pg1=$PG_NET.11" --node "pg2=$PG_NET.12" --node "pg3=$PG_NET.13" >/dev/null
  "$PGKEEL_BIN" export compose --config "$d/origin/pgkeel.toml" -o "$d/export" \
    --subnet "$PG_NET.0/24" --publish-base "$PG_BASE" >/dev/null
  build_tagged "$d/export" "$PG_PROJECT" pgkeel-base:bookworm pg1 pg2 pg3 proxy
  PG_APP_PW="$(cat "$d/export/secrets/app.password")"
}

# Prints the leader's index (0-2) once it has both replicas streaming.
pgkeel_ready_leader() {
  local i
  for i in 0 1 2; do
    curl -s -m 1 "http://$PG_NET.$((11 + i)):7432/cluster" 2>/dev/null | $PY -c '
import json, sys
c = json.load(sys.stdin)
m = {x["name"]: x for x in c["members"]}
l = c.get("leader")
ok = l in m and m[l]["role"] == "primary" and m[l]["running"] and all(
    x["role"] == "replica" and x["streaming"] and x["timeline"] == m[l]["timeline"]
    for n, x in m.items() if n != l) and len(m) == 3
print(["pg1", "pg2", "pg3"].index(l) if ok else "")' 2>/dev/null && return 0
  done
  return 0
}

run_pgkeel() { # round
  local round="$1" t0 t1 leader="" i nodes=()
  cd "$WORK/pgkeel/export"
  t0="$(now)"
  docker-compose -p "$PG_PROJECT" up -d >/dev/null 2>&1
  for _ in $(seq 900); do
    leader="$(pgkeel_ready_leader)"
    [ -n "$leader" ] && break
    sleep 0.1
  done
  t1="$(now)"
  if [ -z "$leader" ]; then
    echo "{\"system\": \"pgkeel\", \"round\": $round, \"error\": \"not ready in 90 s\"}" >>"$RAW"
  else
    for i in 0 1 2; do
      nodes+=(--node "pg$((i + 1))=host=127.0.0.1 port=$((PG_BASE + i)) user=app password=$PG_APP_PW dbname=app")
    done
    local victim="pg$((leader + 1))" via=()
    [ "$VIA" = proxy ] && via=(--via "proxy=host=127.0.0.1 port=$((PG_BASE + 1000)) user=app password=$PG_APP_PW dbname=app" --stuck 1)
    $PY "$OLDPWD/bench/failover_probe.py" --warmup "$WARMUP" --after 1 --timeout 60 "${nodes[@]}" "${via[@]}" \
      --crash-cmd "docker kill ${PG_PROJECT}_${victim}_1 >/dev/null" --crashed "$victim" \
      --events "$WORK/logs/pgkeel-r$round-writer.log" \
      --table "probe_r$round" >"$WORK/probe.json" 2>"$WORK/probe.err" || true
    $PY -c '
import json, sys
r = json.load(open(sys.argv[1])) if open(sys.argv[1]).read().strip() else {"error": "probe printed nothing"}
r.update(system="pgkeel" + sys.argv[4], round=int(sys.argv[2]), ready_s=round(float(sys.argv[3]), 3))
print(json.dumps(r))' "$WORK/probe.json" "$round" "$(elapsed "$t0" "$t1")" "${VIA:+-$VIA}" >>"$RAW"
  fi
  for i in 1 2 3; do docker logs -t "${PG_PROJECT}_pg${i}_1" >"$WORK/logs/pgkeel-r$round-pg$i.log" 2>&1 || true; done
  docker logs -t "${PG_PROJECT}_proxy_1" >"$WORK/logs/pgkeel-r$round-proxy.log" 2>&1 || true
  docker-compose -p "$PG_PROJECT" down -v --timeout 2 >/dev/null 2>&1
  cd - >/dev/null
}

# ---------------------------------------------------------------- Patroni

setup_patroni() {
  local d="$WORK/patroni" ttl loop retry i
  read -r ttl loop retry <<<"$PATRONI_TIMING"
  mkdir -p "$d/conf"
  local hosts="$PA_NET.11:2379,$PA_NET.12:2379,$PA_NET.13:2379"
  local cluster="pg1=http://$PA_NET.11:2380,pg2=http://$PA_NET.12:2380,pg3=http://$PA_NET.13:2380"
  for i in 1 2 3; do
    local ip="$PA_NET.$((10 + i))"
    cat >"$d/conf/pg$i.yml" <<YML
scope: bench
name: pg$i
restapi:
  listen: $ip:8008
  connect_address: $ip:8008
etcd3:
  hosts: $hosts
bootstrap:
  dcs:
    ttl: $ttl
    loop_wait: $loop
    retry_timeout: $retry
    maximum_lag_on_failover: 1048576
    synchronous_mode: $PATRONI_SYNC
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        wal_keep_size: 1GB
        max_wal_senders: 10
        max_replication_slots: 10
        shared_buffers: 64MB
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
    - data-checksums
  pg_hba:
    - local all all trust
    - host replication replicator $PA_NET.0/24 scram-sha-256
    - host all all $PA_NET.0/24 scram-sha-256
postgresql:
  listen: $ip:5432
  connect_address: $ip:5432
  data_dir: /var/lib/patroni/data
  bin_dir: /usr/lib/postgresql/15/bin
  pgpass: /tmp/pgpass
  authentication:
    superuser: {username: postgres, password: benchsecret}
    replication: {username: replicator, password: replsecret}
  parameters:
    unix_socket_directories: /tmp
YML
  done
  cat >"$d/entry.sh" <<SH
#!/bin/sh
# One host: its etcd member in the background, Patroni (as postgres) in front.
set -e
name="\$1"; ip="\$2"
install -d -o postgres -g postgres -m 0700 /var/lib/patroni
etcd --name "\$name" --data-dir /var/lib/patroni/etcd \\
  --listen-client-urls "http://\$ip:2379,http://127.0.0.1:2379" --advertise-client-urls "http://\$ip:2379" \\
  --listen-peer-urls "http://\$ip:2380" --initial-advertise-peer-urls "http://\$ip:2380" \\
  --initial-cluster "$cluster" --initial-cluster-token bench --initial-cluster-state new \\
  --heartbeat-interval 100 --election-timeout 1000 --log-level warn &
exec runuser -u postgres -- patroni "/etc/patroni/\$name.yml"
SH
  chmod 755 "$d/entry.sh"
  cat >"$d/Dockerfile" <<'DF'
ARG BASE_IMAGE=pgkeel-patroni-base:bookworm
FROM ${BASE_IMAGE}
RUN rm -rf /etc/postgresql/*/main /var/lib/postgresql/*/main
COPY entry.sh /usr/local/bin/entry.sh
COPY conf/ /etc/patroni/
ENTRYPOINT ["/usr/bin/tini", "--"]
DF
  {
    echo 'version: "3.8"'
    echo 'services:'
    for i in 1 2 3; do
      cat <<YML
  pg$i:
    build: .
    command: ["/usr/local/bin/entry.sh", "pg$i", "$PA_NET.$((10 + i))"]
    networks:
      bench:
        ipv4_address: "$PA_NET.$((10 + i))"
    ports:
      - "$((PA_BASE + i - 1)):5432"
    volumes:
      - "pg$i-data:/var/lib/patroni"
YML
    done
    cat <<YML
networks:
  bench:
    ipam:
      config:
        - subnet: "$PA_NET.0/24"
volumes:
  pg1-data: {}
  pg2-data: {}
  pg3-data: {}
YML
  } >"$d/docker-compose.yml"
  build_tagged "$d" "$PA_PROJECT" pgkeel-patroni-base:bookworm pg1 pg2 pg3
}

# Prints the leader's index once it has both replicas streaming (a
# synchronous one in synchronous_mode).
patroni_ready_leader() {
  local i leader="" q n s
  for i in 0 1 2; do
    [ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://$PA_NET.$((11 + i)):8008/primary" 2>/dev/null)" = 200 ] && leader="$i"
  done
  [ -n "$leader" ] || return 0
  q="SELECT count(*) FILTER (WHERE state='streaming'), count(*) FILTER (WHERE sync_state IN ('sync','quorum')) FROM pg_stat_replication WHERE application_name IN ('pg1','pg2','pg3')"
  read -r n s < <(PGPASSWORD=benchsecret PGCONNECT_TIMEOUT=2 psql -h 127.0.0.1 -p "$((PA_BASE + leader))" -U postgres -d postgres -qAt -F ' ' -c "$q" 2>/dev/null || echo "0 0")
  if [ "$n" = 2 ] && { [ "$PATRONI_SYNC" != true ] || [ "$s" -ge 1 ]; }; then echo "$leader"; fi
}

run_patroni() { # round
  local round="$1" t0 t1 leader="" i nodes=()
  cd "$WORK/patroni"
  t0="$(now)"
  docker-compose -p "$PA_PROJECT" up -d >/dev/null 2>&1
  for _ in $(seq 900); do
    leader="$(patroni_ready_leader)"
    [ -n "$leader" ] && break
    sleep 0.1
  done
  t1="$(now)"
  if [ -z "$leader" ]; then
    echo "{\"system\": \"patroni\", \"round\": $round, \"error\": \"not ready in 90 s\"}" >>"$RAW"
  else
    for i in 0 1 2; do
      nodes+=(--node "pg$((i + 1))=host=127.0.0.1 port=$((PA_BASE + i)) user=postgres password=benchsecret dbname=postgres")
    done
    local victim="pg$((leader + 1))"
    $PY "$OLDPWD/bench/failover_probe.py" --warmup "$WARMUP" --after 1 --timeout 90 "${nodes[@]}" \
      --crash-cmd "docker kill ${PA_PROJECT}_${victim}_1 >/dev/null" --crashed "$victim" \
      --table "probe_r$round" >"$WORK/probe.json" 2>"$WORK/probe.err" || true
    $PY -c '
import json, sys
r = json.load(open(sys.argv[1])) if open(sys.argv[1]).read().strip() else {"error": "probe printed nothing"}
r.update(system="patroni", round=int(sys.argv[2]), ready_s=round(float(sys.argv[3]), 3))
print(json.dumps(r))' "$WORK/probe.json" "$round" "$(elapsed "$t0" "$t1")" >>"$RAW"
  fi
  for i in 1 2 3; do docker logs -t "${PA_PROJECT}_pg${i}_1" >"$WORK/logs/patroni-r$round-pg$i.log" 2>&1 || true; done
  docker-compose -p "$PA_PROJECT" down -v --timeout 2 >/dev/null 2>&1
  cd - >/dev/null
}

# ---------------------------------------------------------------- run

echo "building images (not timed)" >&2
setup_pgkeel
[ -n "$VIA" ] || setup_patroni
for round in $(seq "$RUNS"); do
  echo "round $round/$RUNS: pgkeel${VIA:+ (writer through the $VIA)}" >&2
  run_pgkeel "$round"
  [ -n "$VIA" ] && continue
  echo "round $round/$RUNS: Patroni" >&2
  run_patroni "$round"
done

$PY - "$RAW" "$PATRONI_TIMING" "$PATRONI_SYNC" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
if any(r["system"] == "patroni" for r in rows):
    print(f"compose benchmark, {max(r['round'] for r in rows)} rounds; Patroni ttl/loop_wait/retry_timeout {sys.argv[2]}, synchronous_mode {sys.argv[3]}")
else:
    print(f"compose benchmark, {max(r['round'] for r in rows)} rounds, pgkeel only, the writer through the proxy")
med = {}
for system in ("pgkeel", "pgkeel-proxy", "patroni"):
    rs = [r for r in rows if r["system"] == system]
    if not rs:
        continue
    errors = [r for r in rs if r.get("error") or r.get("timeout")]
    for key, label in (("ready_s", "ready"), ("recovery_s", "failover")):
        xs = [r[key] for r in rs if r.get(key) is not None]
        if xs:
            med[(system, key)] = statistics.median(xs)
            print(f"  {system:12} {label:9} n={len(xs)} min={min(xs):.2f}s median={statistics.median(xs):.2f}s max={max(xs):.2f}s")
    lost = sum(r.get("lost_n") or 0 for r in rs)
    print(f"  {system:12} acknowledged rows lost: {lost} (of {sum(r.get('acked') or 0 for r in rs)}); failed runs: {len(errors)}")
    for r in errors:
        print(f"    round {r['round']}: {r.get('error') or 'timeout: ' + str(r.get('last_error'))}")
for key, label in (("ready_s", "ready"), ("recovery_s", "failover")):
    a, b = med.get(("pgkeel", key)), med.get(("patroni", key))
    if a and b:
        print(f"  ratio {label:9} pgkeel/Patroni median = {a / b:.2f}")
PY
