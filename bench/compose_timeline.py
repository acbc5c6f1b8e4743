#!/usr/bin/python3
"""One failover of bench/compose.sh as a timeline: the writer's events
(pgkeel-rN-writer.log: the kill, failed writes, the first acknowledged
write after it) merged with the agents' and the proxy's log lines (docker
logs -t), each shown as seconds after the kill.

Usage: bench/compose_timeline.py LOGDIR ROUND [--before S] [--after S] [--all]
  LOGDIR  the logs directory compose.sh prints at the end
  --all   also the agents' routine lines (PublishOptime, following ...)
"""
import argparse
import datetime
import glob
import os
import re

ROUTINE = re.compile(r'Wait\("following|-> \[PublishOptime|^hint:')
APP_TS = re.compile(r"^(\d{10}\.\d+ |\d{4}-\d\d-\d\dT[\d:.]+Z\s+)")


def docker_ts(field):
    # 2026-12-07T18:14:16.474206760Z: nanoseconds, which fromisoformat refuses.
    day, frac = field.rstrip("Z").split(".")
    t = datetime.datetime.fromisoformat(day).replace(tzinfo=datetime.timezone.utc)
    return t.timestamp() + float("0." + frac)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("logdir")
    ap.add_argument("round", type=int)
    ap.add_argument("--before", type=float, default=0.5)
    ap.add_argument("--after", type=float, default=1.0)
    ap.add_argument("--all", action="store_true")
    a = ap.parse_args()
    prefix = os.path.join(a.logdir, f"pgkeel-r{a.round}-")
    rows = []
    crash = first_ack = None
    with open(prefix + "writer.log") as f:
        for line in f:
            t, _, rest = line.rstrip("\n").split(" ", 2)
            t = float(t)
            if crash is None:
                crash = t
            if rest.startswith("first acknowledged"):
                first_ack = t
            rows.append((t, "writer", rest))
    end = (first_ack or crash + 60) + a.after
    for path in sorted(glob.glob(prefix + "*.log")):
        who = path[len(prefix):-4]
        if who == "writer":
            continue
        with open(path, errors="replace") as f:
            for line in f:
                stamp, _, text = line.rstrip("\n").partition(" ")
                try:
                    t = docker_ts(stamp)
                except ValueError:
                    continue
                if not crash - a.before <= t <= end:
                    continue
                text = APP_TS.sub("", text).replace(" INFO pgkeel_proxy::", " ")
                if not a.all and ROUTINE.search(text):
                    continue
                rows.append((t, who, text[:200]))
    for t, who, text in sorted(rows):
        print(f"{t - crash:+7.3f}s  {who:6} {text}")


if __name__ == "__main__":
    main()
