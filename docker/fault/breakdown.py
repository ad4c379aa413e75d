"""Breaks a recovery down into its steps, from the nodes' own logs.

For a fault at a wall-clock instant and one job it affected, each step is
the first line about it (in any node's log) after the fault:

  detection    a node other than the target marks it down (or sees it
               restarted: `cluster member down|restarted node=<target>`)
  takeover     the job changes hands: taken over on the standby, its attempt
               lost on its owner, or resumed from disk by a restarted owner
  re-dispatch  `job dispatched` with an attempt above the one at the fault
  input fetch  the worker's `attempt input fetched` (or its `attempt
               started`, on the owner itself: the input is on its disk)

and `waited_for_slot`: whether the worker the job went to had ended another
attempt within the second before (every slot was busy until then).

Each step is given in seconds from the previous one (from the fault for
detection); a step whose line is missing is None, and the next one is then
counted from the last step found. Log lines are `docker logs --timestamps`
output: the container's stdout (tracing's text format) prefixed with the
RFC 3339 time docker received the line.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys

STEPS = ("detection", "takeover", "re-dispatch", "input fetch")

_FIELD = re.compile(r"(\w+)=(\"[^\"]*\"|\S+)")
# tracing's text format: "<time>  LEVEL spans: target: message fields".
_MESSAGE = re.compile(r"^\S+\s+(?:TRACE|DEBUG|INFO|WARN|ERROR)\s+.*?\b[\w:]+: ([a-z][^=]*?)(?: \w+=|$)")

# A worker's lines when its attempt ends, freeing its slot.
SLOT_FREED = ("attempt finished", "attempt failed", "attempt lost", "attempt canceled",
              "attempt interrupted")
TAKEOVER = ("job taken over from a lost owner", "attempt lost", "job resumed from disk")


def parse_time(stamp: str) -> float | None:
    """Seconds since the epoch of docker's RFC 3339 time (nanoseconds cut to µs)."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z", stamp)
    if not m:
        return None
    base = dt.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc)
    frac = float("0." + m.group(2)) if m.group(2) else 0.0
    return base.timestamp() + frac


def parse_line(node: str, line: str) -> dict | None:
    """Returns {t, node, msg, fields} for one log line, or None."""
    stamp, _, rest = line.partition(" ")
    t = parse_time(stamp)
    if t is None:
        return None
    m = _MESSAGE.match(rest)
    if not m:
        return None
    fields = {k: v.strip('"') for k, v in _FIELD.findall(rest[m.end(1):])}
    return {"t": t, "node": node, "msg": m.group(1).strip(), "fields": fields}


def read_log_files(folder: str) -> list[dict]:
    """Every parsed line of the logs a run saved (`<folder>/node-*.log`)."""
    lines = []
    for name in sorted(os.listdir(folder)):
        if name.startswith("node-") and name.endswith(".log"):
            with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as fh:
                lines += [p for p in (parse_line(name[:-4], raw.rstrip("\n")) for raw in fh) if p]
    lines.sort(key=lambda p: p["t"])
    return lines


def read_logs(containers: dict[str, str]) -> list[dict]:
    """Every parsed line of every node's log (all its lives), in time order."""
    lines = []
    for node, cid in containers.items():
        try:
            out = subprocess.run(["docker", "logs", "--timestamps", cid], capture_output=True,
                                 text=True, errors="replace", timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        for raw in (out.stdout + out.stderr).splitlines():
            p = parse_line(node, raw)
            if p:
                lines.append(p)
    lines.sort(key=lambda p: p["t"])
    return lines


def _first(lines: list[dict], after: float, pred) -> float | None:
    for p in lines:
        if p["t"] >= after and pred(p):
            return p["t"]
    return None


def attempt_of(p: dict) -> int:
    try:
        return int(p["fields"].get("attempt", "0"))
    except ValueError:
        return 0


def breakdown(lines: list[dict], t0: float, target: str, job: str, attempt0: int,
              until: float | None = None) -> dict:
    """The steps of one job's recovery from a fault on `target` at `t0`
    (epoch seconds), each in seconds from the previous step found."""
    horizon = (until or t0 + 150) + 1.0
    scoped = [p for p in lines if t0 - 0.05 <= p["t"] <= horizon]
    detected = _first(scoped, t0, lambda p: p["node"] != target
                      and p["msg"] in ("cluster member down", "cluster member restarted")
                      and p["fields"].get("node") == target)
    mine = [p for p in scoped if p["fields"].get("job_id") == job]
    # After the detection: a cut-off target's own `attempt lost` comes before.
    taken = _first(mine, detected or t0, lambda p: p["msg"] in TAKEOVER)
    dispatched_line = next((p for p in mine if p["msg"] == "job dispatched"
                            and attempt_of(p) > attempt0), None)
    dispatched = dispatched_line["t"] if dispatched_line else None
    fetched = None
    if dispatched_line:
        a = attempt_of(dispatched_line)
        fetched = _first(mine, dispatched, lambda p: attempt_of(p) == a and (
            p["msg"] == "attempt input fetched"
            or (p["msg"] == "attempt started" and p["fields"].get("owner") == p["node"])))
    out, last = {}, t0
    for step, t in zip(STEPS, (detected, taken, dispatched, fetched)):
        if t is None or t < last - 0.001:
            out[step] = None
            continue
        out[step] = max(0.0, round(t - last, 3))
        last = t
    # Whether the re-dispatch waited for a worker slot: the worker it went to
    # ended another attempt just before (every slot was busy until then).
    out["waited_for_slot"] = None
    if dispatched_line:
        worker = dispatched_line["fields"].get("node")
        out["waited_for_slot"] = any(
            p["node"] == worker and p["msg"] in SLOT_FREED and p["fields"].get("job_id") != job
            and dispatched - 1.0 <= p["t"] <= dispatched for p in scoped)
    return out


def main(out: str) -> None:
    """Prints the breakdown of every recovery of a saved run (its
    summary.json and logs/), e.g. `python3 docker/fault/breakdown.py target/fault-test`."""
    with open(os.path.join(out, "summary.json"), encoding="utf-8") as fh:
        summary = json.load(fh)
    lines = read_log_files(os.path.join(out, "logs"))
    day = dt.datetime.fromtimestamp(lines[0]["t"], dt.timezone.utc).strftime("%Y-%m-%d") if lines else ""
    for f in summary["fault_events"]:
        t0 = parse_time(f"{day}T{f['utc']}Z")
        for job, r in f["recovered"].items():
            a = f["affected"][job]
            steps = breakdown(lines, t0, f["target"], job, a.get("attempt") or 0, until=t0 + r["seconds"])
            print(f"{f['kind']:<16} {f['target']} {job} ({a['status']}, owner {a['owner']}): "
                  f"{r['seconds']}s, {r['how']}; " + ", ".join(f"{k} {v}" for k, v in steps.items()))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "target/fault-test")
