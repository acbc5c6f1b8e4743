#!/usr/bin/python3
"""Writer probe for bench/failover.sh: primary host crash under a continuous writer.

A writer thread inserts sequential ids (autocommit, one row per statement)
into its own table on whichever node is primary, reconnecting on any error by
trying every node (short connect timeout) and keeping the first that is not in
recovery. It records every id whose INSERT was acknowledged.

After --warmup seconds of acknowledged writes the main thread "crashes the
primary host": SIGKILL, in one tight loop, of the given PIDs (the HA agent /
Patroni and the postmaster) and of every descendant of the postmaster (its
backends, walsenders, ...), so nothing of the old primary can acknowledge
anything afterwards. It then waits until a write is acknowledged on a
connection opened after the crash, keeps writing --after seconds more, and
checks on that new primary which acknowledged ids are missing.

With --via NAME=DSN (a proxy) the writer connects only there, without
checking pg_is_in_recovery() (a proxy may route it to a replica), and gives
a write up after --stuck seconds (psycopg2's asynchronous mode: a write
sent to a vanished primary otherwise waits for TCP to give up); the
acknowledged ids are then checked on whichever --node is not in recovery.
--events FILE writes the writer's errors after the crash, with wall-clock
times, for a timeline against the servers' logs.

Prints one JSON object on stdout:
  recovery_s  first acknowledged write on a post-crash connection minus the
              crash instant (null on timeout)
  lost        acknowledged ids absent on the new primary (null on timeout)
Runs with Debian's python3-psycopg2 (/usr/bin/python3); needs root to kill
the postgres-owned processes.
"""
import argparse
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

import psycopg2
import psycopg2.extensions as ext

mono = time.monotonic


class Stuck(Exception):
    pass


def wait_async(conn, deadline):
    """Drives an asynchronous psycopg2 connection until its operation is
    done, or raises Stuck at `deadline` (monotonic)."""
    while True:
        state = conn.poll()
        if state == ext.POLL_OK:
            return
        left = deadline - mono()
        if left <= 0:
            raise Stuck()
        fd = conn.fileno()
        if state == ext.POLL_READ:
            select.select([fd], [], [], left)
        elif state == ext.POLL_WRITE:
            select.select([], [fd], [], left)


def descendants(root):
    """PIDs of every descendant of `root`, from /proc (by PID, not by name)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class Writer(threading.Thread):
    def __init__(self, nodes, table, connect_timeout, via=None, stuck=1.0):
        super().__init__(daemon=True)
        self.nodes = nodes  # [(name, dsn)]
        self.via = via  # (name, dsn): the only endpoint, asynchronous, bounded writes
        self.stuck = stuck
        self.events = []  # (wall time, what) after the crash
        self.table = table
        self.connect_timeout = connect_timeout
        self.stop = False
        self.crash_t = None  # set by the main thread
        self.acked = []  # ids acknowledged
        self.first_post_crash = None  # (t_ack, node)
        self.acks_after_crash_on_old_conn = 0
        self.errors = 0
        self.last_error = ""
        self.next_id = 1
        self.first_ack_t = None
        self.node = None
        self.skip = None  # a crashed node, no longer tried (set by the main thread)

    def note(self, what):
        if self.crash_t is not None and len(self.events) < 2000:
            self.events.append((time.time(), what))

    def connect_via(self):
        name, dsn = self.via
        c = None
        try:
            c = psycopg2.connect(dsn, async_=1, application_name="failover_probe")
            wait_async(c, mono() + self.stuck)
            return c, name
        except Stuck:
            self.last_error = f"{name}: connect took over {self.stuck}s"
        except psycopg2.Error as e:
            self.last_error = f"{name}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
        self.note("connect failed: " + self.last_error)
        if c is not None:
            c.close()
        return None, None

    def connect_primary(self):
        if self.via:
            return self.connect_via()
        for name, dsn in self.nodes:
            if name == self.skip:
                continue
            try:
                c = psycopg2.connect(dsn, connect_timeout=self.connect_timeout,
                                     application_name="failover_probe")
                c.autocommit = True
                with c.cursor() as cur:
                    cur.execute("SELECT pg_is_in_recovery()")
                    if not cur.fetchone()[0]:
                        return c, name
                c.close()
            except psycopg2.Error as e:
                self.last_error = f"{name}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
        return None, None

    def run(self):
        conn = None
        opened = 0.0
        while not self.stop:
            if conn is None:
                conn, self.node = self.connect_primary()
                opened = mono()
                if conn is None:
                    time.sleep(0.05)
                    continue
            i = self.next_id
            self.next_id += 1
            try:
                with conn.cursor() as cur:
                    cur.execute(f"INSERT INTO {self.table}(id) VALUES (%s)", (i,))
                    if self.via:
                        wait_async(conn, mono() + self.stuck)
                t = mono()
                self.acked.append(i)
                if self.first_ack_t is None:
                    self.first_ack_t = t
                ct = self.crash_t
                if ct is not None and t > ct:
                    if opened > ct:
                        if self.first_post_crash is None:
                            self.first_post_crash = (t, self.node)
                            self.note("first acknowledged write on a connection opened after the crash")
                    else:
                        self.acks_after_crash_on_old_conn += 1
            except (psycopg2.Error, Stuck) as e:
                # The id's fate is unknown (may or may not have committed): never counted.
                self.errors += 1
                if isinstance(e, Stuck):
                    self.last_error = f"{self.node}: no answer in {self.stuck}s"
                else:
                    self.last_error = f"{self.node}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
                self.note(f"write {i} failed: {self.last_error}")
                try:
                    conn.close()
                except Exception:
                    pass
                conn = None


def write_events(path, crash_wall, crash_cmd, events):
    if not path:
        return
    with open(path, "w") as f:
        f.write(f"{crash_wall:.3f} +0.000s crash ({crash_cmd or 'kill'})\n")
        for t, what in events:
            f.write(f"{t:.3f} +{t - crash_wall:.3f}s {what}\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--node", action="append", required=True, metavar="NAME=DSN")
    ap.add_argument("--kill", action="append", type=int, default=[], metavar="PID",
                    help="PID to SIGKILL at the crash (agent/patroni)")
    ap.add_argument("--kill-tree", action="append", type=int, default=[], metavar="PID",
                    help="PID to SIGKILL with all its descendants (postmaster)")
    ap.add_argument("--crash-cmd", metavar="SHELL",
                    help="command that crashes the primary host (e.g. docker kill NAME), run at the crash")
    ap.add_argument("--crashed", metavar="NAME",
                    help="the node --crash-cmd takes down: not tried after the crash (a vanished "
                         "container's address only times out, which would hide the new primary)")
    ap.add_argument("--table", default="failover_probe")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--after", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--connect-timeout", type=int, default=2)
    ap.add_argument("--via", metavar="NAME=DSN",
                    help="write only through this endpoint (a proxy); --node is then used to check for losses")
    ap.add_argument("--stuck", type=float, default=1.0,
                    help="with --via: seconds after which a write (or connect) is given up")
    ap.add_argument("--events", metavar="FILE", help="writer errors after the crash, with wall-clock times")
    a = ap.parse_args()
    nodes = [tuple(n.split("=", 1)) for n in a.node]
    via = tuple(a.via.split("=", 1)) if a.via else None
    res = {"timeout": False, "recovery_s": None, "lost": None}

    w = Writer(nodes, a.table, a.connect_timeout, via, a.stuck)
    if via:
        # The table is made on the primary directly (DDL through a proxy is
        # fine too, but the probe must know the old primary's name).
        w.via = None
    c, name = w.connect_primary()
    w.via = via
    if c is None:
        print(json.dumps({"error": f"no primary before the crash: {w.last_error}"}))
        return 2
    with c.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {a.table}")
        cur.execute(f"CREATE TABLE {a.table}(id bigint PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
    c.close()
    res["old_primary"] = name
    w.start()
    t_end = mono() + 30
    while (w.first_ack_t is None or mono() - w.first_ack_t < a.warmup) and mono() < t_end:
        time.sleep(0.05)
    if w.first_ack_t is None:
        print(json.dumps({"error": f"no write acknowledged before the crash: {w.last_error}"}))
        return 2
    acked_before = len(w.acked)
    warm_rate = acked_before / (mono() - w.first_ack_t)

    # The crash: every process of the old primary host, in one loop.
    victims = list(a.kill)
    for p in a.kill_tree:
        victims += [p] + descendants(p)
    crash_t = mono()
    crash_wall = time.time()
    w.crash_t = crash_t
    w.skip = a.crashed
    if a.crash_cmd:
        subprocess.run(a.crash_cmd, shell=True, check=False)
    for p in victims:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    killed_in = mono() - crash_t

    deadline = crash_t + a.timeout
    while w.first_post_crash is None and mono() < deadline:
        time.sleep(0.01)
    res.update(acked_before_crash=acked_before, writes_per_s=round(warm_rate, 1),
               killed=len(victims), kill_loop_ms=round(killed_in * 1000, 2))
    if w.first_post_crash is None:
        w.stop = True
        res.update(timeout=True, timeout_s=a.timeout, acked=len(w.acked), errors=w.errors,
                   last_error=w.last_error)
        write_events(a.events, crash_wall, a.crash_cmd, list(w.events))
        print(json.dumps(res))
        return 0
    t_first, new_primary = w.first_post_crash
    time.sleep(a.after)
    w.stop = True
    w.join(5)
    acked = list(w.acked)
    if via:
        w.via, w.skip = None, a.crashed
        c, new_primary = w.connect_primary()
        if c is not None:
            c.close()
    write_events(a.events, crash_wall, a.crash_cmd, w.events)
    present = None
    for n, dsn in nodes:
        if n != new_primary:
            continue
        c = psycopg2.connect(dsn, connect_timeout=a.connect_timeout)
        with c.cursor() as cur:
            cur.execute("SELECT pg_is_in_recovery()")
            in_rec = cur.fetchone()[0]
            cur.execute(f"SELECT id FROM {a.table}")
            present = {r[0] for r in cur.fetchall()}
        c.close()
    lost = sorted(set(acked) - present)
    res.update(recovery_s=round(t_first - crash_t, 3), new_primary=new_primary,
               crash_wall=round(crash_wall, 3), first_ack_wall=round(crash_wall + t_first - crash_t, 3),
               new_primary_in_recovery_at_check=in_rec, acked=len(acked),
               lost_n=len(lost), lost=lost[:50], errors=w.errors,
               acks_after_crash_on_old_conn=w.acks_after_crash_on_old_conn)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    os._exit(rc)
