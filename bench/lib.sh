# Shared helpers for bench/ scripts (sourced).

# A block of N consecutive free loopback ports; prints the first.
free_ports() {
  python3 - "$1" <<'PY'
import random, socket, sys
n = int(sys.argv[1])
for _ in range(1000):
    base = random.randint(20000, 60000 - 3002 - n)
    socks = []
    # Also the ports `pgkeel up` derives from the first node's: the proxy
    # (+1000, +1001), the agents' APIs (+2000...) and etcd (+3000, +3001).
    ports = [*range(base, base + n), base + 1000, base + 1001,
             *range(base + 2000, base + 2000 + n), base + 3000, base + 3001]
    try:
        for p in ports:
            s = socket.socket(); s.bind(("127.0.0.1", p)); socks.append(s)
    except OSError:
        continue
    finally:
        for s in socks: s.close()
    print(base); break
PY
}

# Seconds since epoch with nanoseconds.
now() { date +%s.%N; }

# Seconds (and milliseconds) between two `now` readings.
elapsed() { python3 -c "print(round($2 - $1, 4))"; }
elapsed_ms() { python3 -c "print(round(($2 - $1) * 1000, 2))"; }

# min/median/max of the numbers on stdin, one per line, with a label.
stats() {
  python3 -c '
import statistics, sys
label = sys.argv[1]
xs = [float(l) for l in sys.stdin if l.strip()]
print(f"{label}: n={len(xs)} min={min(xs):.3f} median={statistics.median(xs):.3f} max={max(xs):.3f}")
' "$1"
}

# Median of the numbers on stdin.
median() { python3 -c 'import statistics,sys; print(statistics.median(float(l) for l in sys.stdin if l.strip()))'; }

# The PostgreSQL bin directory of this machine.
pg_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do echo "$d"; return; done
  dirname "$(command -v initdb)"
}

# Backup benches: run as root (the servers run as postgres), with
# pgBackRest installed; sets PGKEEL_BIN (built unless given).
backup_bench_setup() {
  [ "$(id -u)" -eq 0 ] || { echo "run as root (the servers run as postgres)" >&2; exit 1; }
  command -v pgbackrest >/dev/null || { echo "pgbackrest is missing: apt-get install pgbackrest" >&2; exit 1; }
  if [ -z "${PGKEEL_BIN:-}" ]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pgkeel/target}"
    cargo build --release -q -p pgkeel
    PGKEEL_BIN="$CARGO_TARGET_DIR/release/pgkeel"
  fi
}
