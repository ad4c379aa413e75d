#!/usr/bin/env python3
"""Workload, fault injector and checker of docker/fault-test.sh (issue 4).

Python 3.11, standard library only. It drives a running three-node vidpress
cluster (docker/compose.yaml, started by fault-test.sh) through rounds of
jobs, one fault kind per round, then checks every accepted job in the manner
of Jepsen's total-queue checker:

- accepted:   the submissions answered 202 (a 503, a timeout or a refused
              connection at submit is not an acceptance and is fine);
- completed / failed (with codes) / canceled: terminal, and answered the
              same way by every live node;
- lost:       accepted, but at the final check not terminal on every live
              node by the deadline: never terminal, or a node answering 404,
              or 503s/timeouts until the deadline;
- duplicated: one job reported completed with different results (or
              different terminal states) by different nodes, a job ID held
              (listed) by two nodes at the end, a job ID returned for two
              submissions, one submission that produced two jobs, or a job
              completed twice: seen completed by two different attempts (a
              new attempt seen running after a completion, e.g. the majority
              side of a partition re-running a job the cut-off owner finished,
              then stopped when the partition heals, produces no second
              result: it is the anomaly `rerun-after-done`, a failure only
              with FAULT_STRICT=1);
- invalid:    a completed output that is not H.264 + AAC of the input's
              duration (ffprobe).

Every submission carries a distinct trailing MP4 `free` box, so its size
(`input.bytes` of the status document) names the submission: jobs found in
the nodes' listings are traced back to the submission that made them.

Recovery time per fault: from the fault to each affected job (running on, or
owned by, the faulted node) running again elsewhere under a higher attempt,
or terminal, polled every 100 ms.

Writes <out>/summary.json, <out>/events.jsonl (every observation) and
<out>/timeline.txt (the same, readable); prints "N passed, M failed"; exits
1 when a job's check failed (lost, duplicated or invalid; with FAULT_STRICT=1
also a job that ended `failed` or a 404 from a live node), 2 when the harness
itself could not run.

Split jobs (issue 16): the nodes cut inputs longer than --segment-min-secs
into segments of about --segment-secs, each encoded as a fenced attempt on
any node's worker and joined by the owner. The kinds `kill-segment` and
`pause-segment` submit a long clip (--long-clip) that is split, wait until
some of its segments are done and one runs, 20-80 % encoded, on a node other
than its owner (read from the status document's `segments`), then kill or
pause that node.
Before the first such round, the same clip runs once split without a fault
(the unfaulted time) and once with parallel=off (the single pass's frame
count and time), each alone in the cluster. Every long-clip job's output is
checked frame by frame with ffprobe: as many decoded video frames as the
input (and the single pass), each frame's timestamp one frame duration after
the previous (within one tick), audio start and duration within one AAC
frame (1024 samples) of the video's; a failed frame check makes the output
invalid. Per faulted split job: the segments that were running on the hit
node and where they were encoded again, the segments done before the fault
(which must keep their node: a lost node costs only its segments), and its
time against the unfaulted split job's (the issue's target: under 1.6x).

Not counted as failures but reported (summary.json "anomalies"): a live node
answering 404 for an accepted job for a while, stale reads (a node answering
an older state after a newer one was seen), two live attempts of one job.

The nodes run with API keys and TLS (docker/compose.yaml): every request goes
over HTTPS trusting only --ca, with `Authorization: Bearer` and a key from
--tokens (files `admin`, `acme`, `globex`). Submissions alternate between the
tenants acme and globex; each job is polled and downloaded with its own
tenant's key, the cluster views and the listings with the admin key; the
final check also asks, for a sample of each tenant's jobs, every live node
with the other tenant's key, which must get 404 (else the job fails its
check: `isolation`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client
import json
import os
import random
import signal
import ssl
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction

import breakdown

NODES = ("node-a", "node-b", "node-c")
# FAULT_STRICT=1 also fails on anomalies the default reports only.
STRICT = os.environ.get("FAULT_STRICT") == "1"
# Submissions alternate between these tenants; `admin` reads views and listings.
TENANTS = ("acme", "globex")
KINDS = ("kill-worker", "kill-accepter", "pause", "partition", "restart", "rolling-restart",
         "kill-segment", "pause-segment")
# Kinds whose round runs one long job split into segments (issue 16).
SPLIT_KINDS = ("kill-segment", "pause-segment")
# The bound on a split job that lost a node: its time against the unfaulted one's.
SPLIT_SLOWDOWN_TARGET = 1.6
# An AAC frame: the bound on audio/video drift.
AAC_FRAME_SAMPLES = 1024
TERMINAL = ("completed", "failed", "canceled")

T0 = time.monotonic()
# now() + EPOCH0: the epoch time of a moment, to match against the nodes' logs.
EPOCH0 = time.time() - (time.monotonic() - T0)
LOCK = threading.RLock()
STOP = threading.Event()


def now() -> float:
    return time.monotonic() - T0


def wall() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%H:%M:%S.%f")[:-3]


# --------------------------------------------------------------------------
# Logging: every event as a JSON line and as a readable line.


class Log:
    def __init__(self, out: str):
        self.events = open(os.path.join(out, "events.jsonl"), "w", encoding="utf-8")
        self.timeline = open(os.path.join(out, "timeline.txt"), "w", encoding="utf-8")

    def __call__(self, _event: str, msg: str = "", echo: bool = False, **fields) -> None:
        t, w = now(), wall()
        record = {"t": round(t, 3), "utc": w, "event": _event, **fields}
        line = f"{w} +{t:8.3f}s {_event:<14} {msg}"
        with LOCK:
            self.events.write(json.dumps(record, default=str) + "\n")
            self.timeline.write(line + "\n")
            self.events.flush()
            self.timeline.flush()
        if echo:
            print(f"fault-test: {line}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.events.close()
        self.timeline.close()


LOG: Log


# --------------------------------------------------------------------------
# Job IDs name their owner and standby (see actors/src/job.rs).


def node_tag(name: str) -> int:
    h = 0x811C9DC5
    for b in name.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return (h ^ (h >> 16)) & 0xFFFF


TAGS = {node_tag(n): n for n in NODES}


def owner_of(job_id: str) -> str | None:
    hexid = job_id.replace("-", "")
    return TAGS.get(int(hexid[28:32], 16))


def standby_of(job_id: str) -> str | None:
    hexid = job_id.replace("-", "")
    return TAGS.get(int(hexid[24:28], 16))


# --------------------------------------------------------------------------
# HTTP


# The TLS context of every https:// request (trusting only the run's CA) and
# the bearer tokens by key name; set by main().
TLS: ssl.SSLContext | None = None
TOKENS: dict[str, str] = {}


def request(base: str, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None, timeout: float = 2.0,
            key: str | None = None) -> tuple[int, bytes, str]:
    """Returns (status, body, error); status 0 when no answer came. `key`
    names the API key sent (admin, acme, globex)."""
    u = urllib.parse.urlsplit(base)
    if u.scheme == "https":
        conn = http.client.HTTPSConnection(u.hostname, u.port, timeout=timeout, context=TLS)
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    headers = dict(headers or {})
    if key:
        headers["Authorization"] = f"Bearer {TOKENS[key]}"
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(), ""
    except (OSError, http.client.HTTPException) as e:
        return 0, b"", f"{type(e).__name__}: {e}"
    finally:
        conn.close()


def as_json(body: bytes):
    try:
        return json.loads(body)
    except ValueError:
        return None


def error_code(doc) -> str | None:
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        return doc["error"].get("code")
    return None


# --------------------------------------------------------------------------
# Frame-by-frame facts of a file (issue 16's check of a joined output).


def media_facts(path: str) -> dict:
    """What ffprobe finds in `path`: the video decoded frame by frame (how
    many, whether each timestamp is one frame duration after the previous
    within one tick, decode errors) and where the audio and the video start
    and how long each lasts."""
    out: dict = {}
    try:
        p = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                            "stream=index,codec_type,codec_name,time_base,r_frame_rate,start_time,duration,"
                            "sample_rate", "-of", "json", path],
                           capture_output=True, text=True, timeout=60)
        streams = json.loads(p.stdout or "{}").get("streams", [])
        v = next(s for s in streams if s.get("codec_type") == "video")
        a = next((s for s in streams if s.get("codec_type") == "audio"), None)
        tb = Fraction(v["time_base"])
        rate = Fraction(v["r_frame_rate"])
        tick = 1 / (rate * tb)  # one frame in time-base ticks
        q = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "frame=pts,best_effort_timestamp", "-of", "csv=p=0", path],
                           capture_output=True, text=True, timeout=300)
    except (subprocess.TimeoutExpired, ValueError, StopIteration, OSError, KeyError, ZeroDivisionError) as e:
        return {"error": f"ffprobe failed: {type(e).__name__}: {e}"}
    pts = []
    for line in q.stdout.split():
        fields = [f for f in line.split(",") if f not in ("", "N/A")]
        pts.append(int(fields[0]) if fields else None)
    gaps = []
    for i in range(1, len(pts)):
        if pts[i] is None or pts[i - 1] is None or abs(pts[i] - pts[i - 1] - tick) > 1:
            gaps.append((i, None if pts[i] is None or pts[i - 1] is None else pts[i] - pts[i - 1]))
    out.update({
        "video_frames": len(pts),
        "frame_rate": str(rate),
        "time_base": str(tb),
        "frame_ticks": float(tick),
        "timestamp_gaps": len(gaps),
        "first_gaps": gaps[:5],
        "decode_errors": [l for l in q.stderr.splitlines() if l.strip()][:5],
        "video_start_s": round(float(pts[0] * tb), 6) if pts and pts[0] is not None else None,
        "video_duration_s": round(float(len(pts) / rate), 6),
    })
    if a:
        out.update({
            "audio_start_s": float(a.get("start_time") or 0),
            "audio_duration_s": float(a.get("duration") or 0),
            "audio_sample_rate": int(a.get("sample_rate") or 0),
        })
    return out


def frame_problems(facts: dict, ref: dict) -> list[str]:
    """What is wrong with an output's `facts` against the input's `ref`: a
    frame count or rate unlike the input's, a timestamp that is not one frame
    after the previous, a frame that does not decode, audio that starts or
    lasts more than one AAC frame off the video."""
    if facts.get("error"):
        return [facts["error"]]
    why = []
    if ref.get("video_frames") is not None and facts["video_frames"] != ref["video_frames"]:
        why.append(f"{facts['video_frames']} video frames, the input has {ref['video_frames']}")
    if ref.get("frame_rate") and facts["frame_rate"] != ref["frame_rate"]:
        why.append(f"frame rate {facts['frame_rate']}, the input's is {ref['frame_rate']}")
    if facts["timestamp_gaps"]:
        why.append(f"{facts['timestamp_gaps']} timestamps not one frame ({facts['frame_ticks']:g} ticks) "
                   f"after the previous, first (frame, step): {facts['first_gaps']}")
    if facts["decode_errors"]:
        why.append(f"decode errors: {facts['decode_errors']}")
    if "audio_start_s" not in facts:
        why.append("no audio stream")
    else:
        bound = AAC_FRAME_SAMPLES / (facts["audio_sample_rate"] or 48000)
        if facts["video_start_s"] is None or abs(facts["audio_start_s"] - facts["video_start_s"]) > bound:
            why.append(f"audio starts at {facts['audio_start_s']:.4f}s, video at {facts['video_start_s']}s "
                       f"(more than one AAC frame, {bound * 1000:.1f} ms, apart)")
        if abs(facts["audio_duration_s"] - facts["video_duration_s"]) > bound:
            why.append(f"audio lasts {facts['audio_duration_s']:.4f}s, video {facts['video_duration_s']:.4f}s "
                       f"(more than one AAC frame, {bound * 1000:.1f} ms, apart)")
    return why


# --------------------------------------------------------------------------
# State


@dataclass
class Submission:
    index: int
    round: int
    node: str
    tenant: str
    body_bytes: int
    t_start: float
    t_end: float = 0.0
    code: int = 0
    error: str = ""
    job: str | None = None
    note: str = ""
    clip: str = "short"  # "short" (--clip) or "long" (--long-clip, split by the nodes)
    parallel: str = ""  # the parallel= query, when one was sent


@dataclass
class Job:
    id: str
    submission: int
    round: int
    node: str  # where it was submitted
    tenant: str  # whose key submitted it, and polls it
    t_accepted: float
    owner: str | None
    standby: str | None
    last: dict = field(default_factory=dict)  # last status document seen
    last_key: tuple = ()
    terminal_seen: dict = field(default_factory=dict)  # first terminal doc (status, result bytes)
    completed_attempts: dict = field(default_factory=dict)  # attempt -> node that reported it completed
    max_running_attempt: int = 0
    reexecuted: str = ""  # why the job counts as executed twice
    conflict: str = ""  # two different terminal answers
    clip: str = "short"  # which clip it encodes
    role: str = ""  # long-clip jobs: "unfaulted", "single-pass" or "faulted"
    segments_seen: list = field(default_factory=list)  # the last non-empty `segments` seen


@dataclass
class Fault:
    kind: str
    round: int
    target: str
    t0: float
    utc0: str
    affected: dict = field(default_factory=dict)  # job -> state at fault
    recovered: dict = field(default_factory=dict)  # job -> (seconds, how)
    t_heal: float | None = None
    notes: list = field(default_factory=list)
    answers: dict = field(default_factory=dict)  # status code -> count while tracking
    answerable: dict = field(default_factory=dict)  # job -> seconds to the first valid answer
    # False when docker could not inject it (e.g. the freezer refused a
    # pause): its jobs are tracked, but left out of the recovery figures.
    injected: bool = True


class Cluster:
    def __init__(self, args):
        self.url = dict(zip(NODES, args.urls.split(",")))
        self.cid = dict(zip(NODES, args.containers.split(",")))
        self.network = args.network
        self.faulted: dict[str, str] = {}  # node -> fault in force
        self.aliases = {n: self._aliases(n) for n in NODES}
        self.views: dict[str, str] = {}  # node -> "node-a:up,..." last seen
        self.rr = 0

    def _aliases(self, node: str) -> list[str]:
        out = subprocess.run(
            ["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", self.cid[node]],
            capture_output=True, text=True, check=True).stdout
        nets = json.loads(out)
        return [a for a in (nets.get(self.network, {}).get("Aliases") or [])]

    def live(self, exclude: tuple = ()) -> list[str]:
        with LOCK:
            return [n for n in NODES if n not in self.faulted and n not in exclude]

    def pick(self, exclude: tuple = ()) -> str | None:
        nodes = self.live(exclude)
        if not nodes:
            return None
        with LOCK:
            self.rr += 1
            return nodes[self.rr % len(nodes)]

    def docker(self, *argv: str, timeout: float = 90) -> bool:
        t = now()
        try:
            p = subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=timeout)
            ok = p.returncode == 0
            err = p.stderr.strip()
        except subprocess.TimeoutExpired:
            ok, err = False, "timed out"
        LOG("docker", f"docker {' '.join(argv)} -> {'ok' if ok else 'FAILED ' + err} ({now() - t:.2f}s)",
            argv=argv, ok=ok, error=err, took=round(now() - t, 3))
        return ok

    def inject(self, *argv: str, tries: int = 3) -> bool:
        """Runs a fault's docker command, again after a moment when docker
        refuses it (the cgroup freezer can fail to freeze a container
        whose processes are busy forking)."""
        for attempt in range(tries):
            if self.docker(*argv):
                return True
            if attempt + 1 < tries:
                time.sleep(0.3)
        return False

    def view(self, node: str) -> dict | None:
        code, body, _ = request(self.url[node], "GET", "/cluster", timeout=1.0, key="admin")
        doc = as_json(body) if code == 200 else None
        if not isinstance(doc, dict):
            return None
        return {m["name"]: m["state"] for m in doc.get("nodes", [])}

    def whole(self) -> bool:
        for n in NODES:
            v = self.view(n)
            if not v or sorted(k for k, s in v.items() if s == "up") != list(NODES):
                return False
        return True

    def wait_whole(self, timeout: float) -> bool:
        deadline = now() + timeout
        t = now()
        while now() < deadline and not STOP.is_set():
            if self.whole():
                LOG("whole", f"every node sees {len(NODES)} up ({now() - t:.1f}s)")
                return True
            time.sleep(0.2)
        LOG("not-whole", f"the cluster was not whole within {timeout:.0f}s: "
            + "; ".join(f"{n}: {self.view(n)}" for n in NODES), echo=True)
        return False


# --------------------------------------------------------------------------
# The harness


class Harness:
    def __init__(self, args):
        self.args = args
        self.cluster = Cluster(args)
        with open(args.clip, "rb") as f:
            self.clip = f.read()
        self.clip_duration = args.clip_duration
        # The clip the nodes split (issue 16), and what ffprobe finds in it.
        self.long_clip = b""
        self.long_facts: dict = {}
        if args.long_clip:
            with open(args.long_clip, "rb") as f:
                self.long_clip = f.read()
            self.long_facts = media_facts(args.long_clip)
        self.split_baseline_done = False
        self.split_runs: list[dict] = []  # one per faulted split job: the fault, its segments, its time
        self.submissions: list[Submission] = []
        self.jobs: dict[str, Job] = {}
        self.faults: list[Fault] = []
        self.anomalies: list[dict] = []
        self.id_twice: list[dict] = []
        self.kinds: list[str] = [k for k in args.rounds.split(",") if k]
        self.rounds_done: list[str] = []
        self.rounds_skipped: list[str] = []
        self.run_id = f"{int(time.time())}-{random.randrange(1 << 20):05x}"
        self.pool = ThreadPoolExecutor(max_workers=12)

    # ---- submissions ----------------------------------------------------

    def body(self, index: int, clip: str = "short") -> bytes:
        # A top-level `free` box after the movie: ignored by demuxers, and
        # its size (8 + 64 + index bytes) makes every submission's length unique.
        label = f"vidpress-fault {self.run_id} #{index:05d}".encode()[:64]
        payload = label.ljust(64 + index, b".")
        movie = self.long_clip if clip == "long" else self.clip
        return movie + struct.pack(">I", 8 + len(payload)) + b"free" + payload

    def submission_of_size(self, size: int) -> int | None:
        # The long clip is far longer than the short one plus any index.
        if self.long_clip and size >= len(self.long_clip) + 8 + 64:
            return size - len(self.long_clip) - 8 - 64
        extra = size - len(self.clip) - 8 - 64
        return extra if extra >= 0 else None

    def submit(self, node: str, round_no: int, timeout: float = 30.0, note: str = "",
               clip: str = "short", parallel: str = "", role: str = "") -> Submission:
        with LOCK:
            index = len(self.submissions)
            body = self.body(index, clip)
            tenant = TENANTS[index % len(TENANTS)]
            sub = Submission(index, round_no, node, tenant, len(body), now(), note=note, clip=clip,
                             parallel=parallel)
            self.submissions.append(sub)
        params = {"preset": self.args.preset, "crf": 28}
        if parallel:
            params["parallel"] = parallel
        query = urllib.parse.urlencode(params)
        code, resp, err = request(
            self.cluster.url[node], "POST", f"/jobs?{query}", body=body,
            headers={"Content-Type": "video/mp4", "Idempotency-Key": f"{self.run_id}-{index}"},
            timeout=timeout, key=tenant)
        sub.t_end, sub.code, sub.error = now(), code, err
        doc = as_json(resp)
        if code == 202 and isinstance(doc, dict) and doc.get("id"):
            jid = doc["id"]
            with LOCK:
                sub.job = jid
                if jid in self.jobs:
                    self.id_twice.append({"job": jid, "submissions": [self.jobs[jid].submission, index]})
                    LOG("DUPLICATE-ID", f"{jid} returned for submissions {self.jobs[jid].submission} and {index}",
                        echo=True, job=jid)
                else:
                    self.jobs[jid] = Job(jid, index, round_no, node, tenant, now(), owner_of(jid),
                                         standby_of(jid), last=doc, clip=clip, role=role)
            LOG("accepted", f"#{index} -> {node}: 202 {jid} tenant={tenant} owner={owner_of(jid)} "
                f"standby={standby_of(jid)} ({sub.t_end - sub.t_start:.2f}s)"
                f"{' clip=long' if clip == 'long' else ''}{' parallel=' + parallel if parallel else ''}"
                f"{' ' + note if note else ''}",
                submission=index, node=node, tenant=tenant, job=jid, owner=owner_of(jid),
                standby=standby_of(jid), clip=clip, parallel=parallel, role=role)
        else:
            sub.error = sub.error or (error_code(doc) or resp[:200].decode("utf-8", "replace"))
            LOG("not-accepted", f"#{index} -> {node}: {code or 'no answer'} {sub.error} "
                f"({sub.t_end - sub.t_start:.2f}s){' ' + note if note else ''}",
                submission=index, node=node, tenant=tenant, code=code, error=sub.error)
        return sub

    def submit_batch(self, round_no: int, count: int, offset: int) -> list[str]:
        futures = []
        for i in range(count):
            nodes = self.cluster.live() or list(NODES)
            node = nodes[(offset + i) % len(nodes)]
            futures.append(self.pool.submit(self.submit, node, round_no))
            time.sleep(0.05)
        subs = [f.result() for f in futures]
        return [s.job for s in subs if s.job]

    # ---- observing jobs -------------------------------------------------

    def status(self, jid: str, node: str, timeout: float = 2.0) -> tuple[int, dict | None, str]:
        """Polls a job on `node` with its own tenant's key and records what is seen."""
        code, body, err = request(self.cluster.url[node], "GET", f"/jobs/{jid}", timeout=timeout,
                                  key=self.jobs[jid].tenant)
        doc = as_json(body)
        self.observe(jid, node, code, doc if isinstance(doc, dict) else None, err)
        return code, doc if isinstance(doc, dict) else None, err

    def observe(self, jid: str, node: str, code: int, doc: dict | None, err: str) -> None:
        job = self.jobs.get(jid)
        if job is None:
            return
        if code == 404:
            view = self.cluster.views.get(node, "?")
            self.anomaly("404", jid, node, f"{node} answered 404 (unknown job) for an accepted job; "
                         f"its view: {view}")
            return
        if code not in (200, 202, 400) or not doc or doc.get("id") != jid:
            return
        st = doc.get("status")
        result = (doc.get("result") or {}).get("bytes")
        key = (st, doc.get("attempt"), doc.get("node"), result)
        attempt = doc.get("attempt") or 0
        with LOCK:
            first = job.terminal_seen
            if st == "completed":
                job.completed_attempts.setdefault(attempt, node)
                if len(job.completed_attempts) > 1 and not job.reexecuted:
                    job.reexecuted = (f"completed by attempts {sorted(job.completed_attempts)} "
                                      f"(attempt {attempt} seen on {node})")
                    self.anomaly("completed-twice", jid, node, job.reexecuted)
            if first and st not in TERMINAL:
                done = first.get("attempt") or 0
                if first["status"] == "completed" and st == "running" and attempt > done:
                    rerun = (f"re-run after it was completed by attempt {done}: "
                             f"{node} reports running attempt {attempt} on {doc.get('node')}")
                    if STRICT and not job.reexecuted:
                        job.reexecuted = rerun
                    self.anomaly("rerun-after-done", jid, node, rerun)
                else:
                    self.anomaly("stale-read", jid, node,
                                 f"{node} reports {st} (attempt {attempt} on {doc.get('node')}) "
                                 f"after {first['status']} (attempt {done}) was seen")
            elif first and st in TERMINAL and st != first["status"]:
                job.conflict = job.conflict or (f"{node} reports {st} after {first['status']} "
                                                f"was seen on {first['node']}")
                self.anomaly("terminal-differs", jid, node, job.conflict)
            elif first and st == "completed" and result != first["result"]:
                job.conflict = job.conflict or (f"{node} reports a result of {result} bytes after "
                                                f"{first['result']} bytes were seen on {first['node']}")
                self.anomaly("result-differs", jid, node, job.conflict)
            if st == "running" and not first:
                if attempt < job.max_running_attempt:
                    self.anomaly("older-attempt", jid, node,
                                 f"{node} reports attempt {attempt} running on {doc.get('node')} after attempt "
                                 f"{job.max_running_attempt} was seen running: two copies of the job, "
                                 f"each with its own live attempt")
                job.max_running_attempt = max(job.max_running_attempt, attempt)
            if st in TERMINAL and not first:
                job.terminal_seen = {"status": st, "result": result, "node": node, "t": now(),
                                     "error": error_code(doc), "attempt": attempt}
            if doc.get("segments"):
                job.segments_seen = doc["segments"]
            if key != job.last_key:
                job.last_key = key
                job.last = doc
                extra = f" error={error_code(doc)}" if st == "failed" else ""
                LOG("job", f"{jid} {st} attempt={doc.get('attempt')} on={doc.get('node')} "
                    f"progress={doc.get('progress', 0):.2f} (asked {node}){extra}",
                    job=jid, status=st, attempt=doc.get("attempt"), on=doc.get("node"), asked=node)
            else:
                job.last = doc

    def anomaly(self, kind: str, jid: str, node: str, msg: str) -> None:
        with LOCK:
            # One entry per (kind, job, node) burst: repeats within 5 s are counted.
            for a in reversed(self.anomalies[-50:]):
                if (a["kind"], a["job"], a["node"]) == (kind, jid, node) and now() - a["last_t"] < 5:
                    a["count"] += 1
                    a["last_t"] = round(now(), 3)
                    return
            self.anomalies.append({"kind": kind, "job": jid, "node": node, "t": round(now(), 3),
                                   "utc": wall(), "last_t": round(now(), 3), "count": 1, "message": msg})
        LOG("ANOMALY", f"{kind} {jid}: {msg}", echo=True, job=jid, node=node, kind=kind)

    def monitor(self) -> None:
        """Polls every job about once a second (terminal ones every few
        seconds, to catch regressions) on the live nodes, in turn; and
        records each node's view of the cluster."""
        rounds = 0
        while not STOP.is_set():
            t = now()
            for n in NODES:
                if n in self.cluster.faulted:
                    continue
                v = self.cluster.view(n)
                text = ",".join(f"{k}:{s}" for k, s in sorted(v.items())) if v else "unreachable"
                if self.cluster.views.get(n) != text:
                    self.cluster.views[n] = text
                    LOG("view", f"{n} sees {text}", node=n, view=text)
            with LOCK:
                jobs = list(self.jobs.values())
            todo = [j for j in jobs if not j.terminal_seen or rounds % 4 == 0]
            calls = []
            for j in todo:
                node = self.cluster.pick()
                if node:
                    calls.append(self.pool.submit(self.status, j.id, node, 2.0))
            for c in calls:
                c.result()
            rounds += 1
            STOP.wait(max(0.2, 1.0 - (now() - t)))

    # ---- faults ---------------------------------------------------------

    def snapshot_all(self, exclude: tuple = ()) -> dict[str, dict]:
        """A fresh status of every non-terminal job, from live nodes."""
        with LOCK:
            jobs = [j for j in self.jobs.values() if not j.terminal_seen]
        out = {}

        def one(j):
            for _ in range(3):
                node = self.cluster.pick(exclude)
                if not node:
                    return
                code, doc, _ = self.status(j.id, node, 1.5)
                if doc and code in (200, 202, 400):
                    out[j.id] = doc
                    return

        list(self.pool.map(one, jobs))
        return out

    def affected_by(self, target: str, docs: dict[str, dict]) -> dict[str, dict]:
        affected = {}
        for jid, doc in docs.items():
            if doc.get("status") in TERMINAL:
                continue
            owner = self.jobs[jid].owner
            if doc.get("node") == target or owner == target:
                affected[jid] = {"status": doc.get("status"), "attempt": doc.get("attempt") or 0,
                                 "node": doc.get("node"), "progress": doc.get("progress"),
                                 "owner": owner, "standby": self.jobs[jid].standby}
        return affected

    def start_fault(self, kind: str, round_no: int, target: str, affected: dict) -> Fault:
        f = Fault(kind, round_no, target, now(), wall(), affected=affected)
        with LOCK:
            self.faults.append(f)
        LOG("FAULT", f"{kind} {target}; affected jobs: "
            + (", ".join(f"{j}({a['status']} a{a['attempt']} on {a['node']}, owner {a['owner']})"
                         for j, a in affected.items()) or "none"),
            echo=True, kind=kind, target=target, affected=affected)
        threading.Thread(target=self.track, args=(f,), daemon=True).start()
        return f

    def track(self, f: Fault, timeout: float = 150.0) -> None:
        """Polls the affected jobs every 100 ms until each runs again
        elsewhere under a higher attempt, or is terminal. A job running at
        the fault that ends under that same attempt was never stopped (a
        drain let it finish, or only its owner was lost): its recovery is 0,
        and `how` says when it ended."""
        pending = set(f.affected)
        while pending and not STOP.is_set() and now() - f.t0 < timeout:
            for jid in list(pending):
                node = self.cluster.pick(exclude=(f.target,))
                if not node:
                    continue
                code, doc, _ = self.status(jid, node, 1.0)
                with LOCK:
                    f.answers[str(code)] = f.answers.get(str(code), 0) + 1
                if not doc or code not in (200, 202, 400) or doc.get("id") != jid:
                    continue
                if jid not in f.answerable:
                    f.answerable[jid] = round(now() - f.t0, 3)
                st, attempt, on = doc.get("status"), doc.get("attempt") or 0, doc.get("node")
                a0 = f.affected[jid]["attempt"]
                healed = f.t_heal is not None
                lost = f.affected[jid].get("lost_segments")
                how = None
                secs = now() - f.t0
                # Only a drain lets the faulted node's own attempt go on; of
                # another node's, only the owner was lost.
                kept = (f.affected[jid]["status"] == "running" and a0 > 0 and attempt == a0
                        and lost is None
                        and (f.affected[jid]["node"] != f.target
                             or f.kind in ("restart", "rolling-restart")))
                if st in TERMINAL and kept:
                    how = f"kept running: attempt {a0} {st} after {secs:.2f}s"
                    secs = 0.0
                elif st in TERMINAL:
                    how = st
                elif lost is not None:
                    # A split job: every piece dispatch raises the attempt, so
                    # it has recovered once each segment that ran on the
                    # faulted node runs again (or is done) elsewhere.
                    segs = {s.get("index"): s for s in doc.get("segments") or []}
                    again = {i: segs[i].get("node") for i in lost
                             if i in segs and segs[i].get("state") in ("running", "done")
                             and (segs[i].get("node") != f.target
                                  or (healed and segs[i].get("state") == "done"))}
                    if len(again) == len(lost):
                        how = "segments " + ", ".join(f"{i} {segs[i].get('state')} on {n}"
                                                      for i, n in sorted(again.items()))
                elif st == "running" and attempt > a0 and (on != f.target or healed):
                    how = f"running attempt {attempt} on {on}"
                if how:
                    f.recovered[jid] = (round(secs, 3), how)
                    pending.discard(jid)
                    LOG("recovered", f"{jid} after {f.kind} of {f.target}: {how} after {secs:.2f}s (asked {node})",
                        job=jid, kind=f.kind, seconds=round(secs, 3), how=how)
            time.sleep(0.1)
        for jid in pending:
            LOG("not-recovered", f"{jid} did not recover within {timeout:.0f}s of {f.kind} of {f.target}",
                echo=True, job=jid, kind=f.kind)

    def wait_tracked(self, f: Fault, timeout: float) -> None:
        deadline = now() + timeout
        while len(f.recovered) < len(f.affected) and now() < deadline and not STOP.is_set():
            time.sleep(0.1)

    def running_jobs(self, jids: list[str], min_progress: float, timeout: float) -> dict[str, dict]:
        """Waits until one of `jids` runs with at least `min_progress`;
        returns a fresh snapshot of the non-terminal jobs."""
        deadline = now() + timeout
        while now() < deadline and not STOP.is_set():
            docs = self.snapshot_all()
            if any(d.get("status") == "running" and (d.get("progress") or 0) >= min_progress
                   for jid, d in docs.items() if jid in jids):
                return docs
            time.sleep(0.3)
        LOG("no-trigger", f"no job reached progress {min_progress} within {timeout:.0f}s", echo=True)
        return self.snapshot_all()

    def choose_target(self, docs: dict[str, dict], round_no: int, remote_worker: bool = False) -> str:
        running = [(jid, d["node"]) for jid, d in docs.items() if d.get("status") == "running" and d.get("node")]
        if remote_worker:
            remote = [(j, n) for j, n in running if self.jobs[j].owner != n]
            running = remote or running
        nodes = [n for _, n in running]
        # Prefer a different node each round, among those running a job.
        order = [NODES[(round_no + i) % len(NODES)] for i in range(len(NODES))]
        for n in order:
            if n in nodes:
                return n
        return order[0]

    def restore(self, node: str) -> None:
        """Brings a node back whatever was done to it."""
        fault = self.cluster.faulted.get(node)
        cid = self.cluster.cid[node]
        if fault == "paused":
            self.cluster.docker("unpause", cid)
        elif fault == "disconnected":
            argv = ["network", "connect"]
            for a in self.cluster.aliases[node]:
                argv += ["--alias", a]
            self.cluster.docker(*argv, self.cluster.network, cid)
        elif fault == "killed":
            self.cluster.docker("start", cid)
        with LOCK:
            self.cluster.faulted.pop(node, None)

    def heal(self, f: Fault) -> None:
        self.restore(f.target)
        f.t_heal = now()
        LOG("HEAL", f"{f.kind} of {f.target} undone after {f.t_heal - f.t0:.1f}s", echo=True)

    # ---- rounds ---------------------------------------------------------

    def run_round(self, round_no: int, kind: str) -> None:
        c, per = self.cluster, self.args.jobs_per_round
        LOG("ROUND", f"round {round_no}: {kind}", echo=True, round=round_no, kind=kind)
        c.wait_whole(60)
        if kind not in SPLIT_KINDS:
            # (A split round submits its one long job itself.)
            batch = per - 1 if kind == "kill-accepter" else per
            jids = self.submit_batch(round_no, batch, offset=round_no)
            docs = self.running_jobs(jids, self.args.trigger_progress, 90)

        if kind == "kill-worker":
            target = self.choose_target(docs, round_no, remote_worker=True)
            c.faulted[target] = "killed"
            c.docker("kill", c.cid[target])
            f = self.start_fault(kind, round_no, target, self.affected_by(target, docs))
            # Leave it dead until the takeover and the reruns are done.
            self.wait_tracked(f, 30)
            time.sleep(1.0)
            self.heal(f)

        elif kind == "kill-accepter":
            target = self.choose_target(docs, round_no)
            sub = None
            for _ in range(3):
                sub = self.submit(target, round_no, note="(the accepter is killed at its 202)")
                if sub.job:
                    break
            c.faulted[target] = "killed"
            c.docker("kill", c.cid[target])
            t_kill = now()
            # The jobs as seen just before (the dead node's own cannot be
            # asked about until the standby has them).
            affected = self.affected_by(target, docs)
            if sub and sub.job:
                affected[sub.job] = {"status": "queued", "attempt": 0, "node": None, "progress": 0,
                                     "owner": target, "standby": self.jobs[sub.job].standby,
                                     "killed_after_202_s": round(t_kill - sub.t_end, 3)}
            f = self.start_fault(kind, round_no, target, affected)
            f.t0 = t_kill
            self.wait_tracked(f, 30)
            time.sleep(1.0)
            self.heal(f)

        elif kind in ("pause", "partition"):
            target = self.choose_target(docs, round_no)
            if kind == "pause":
                c.faulted[target] = "paused"
                injected = c.inject("pause", c.cid[target])
            else:
                c.faulted[target] = "disconnected"
                injected = c.inject("network", "disconnect", c.network, c.cid[target])
            f = self.start_fault(kind, round_no, target, self.affected_by(target, docs))
            if not injected:
                f.injected = False
                f.notes.append(f"docker could not {kind} {target}: not injected, left out of the recovery figures")
            # Submissions during the fault: to a live node (should be
            # accepted) and to the faulted one (cannot be; not a loss).
            live = c.live()
            extra = [self.pool.submit(self.submit, live[round_no % len(live)], round_no, 60.0,
                                      f"(during the {kind} of {target})"),
                     self.pool.submit(self.submit, target, round_no, 5.0,
                                      f"(to the node under {kind})")]
            time.sleep(self.args.hold)
            self.heal(f)
            for e in extra:
                e.result()

        elif kind == "restart":
            target = self.choose_target(docs, round_no)
            c.faulted[target] = "restarting"
            f = self.start_fault(kind, round_no, target, self.affected_by(target, docs))
            ok = c.docker("restart", c.cid[target], timeout=120)
            f.notes.append(f"docker restart {'returned' if ok else 'FAILED'} after {now() - f.t0:.1f}s")
            self.heal(f)

        elif kind in SPLIT_KINDS:
            self.split_round(round_no, kind)

        elif kind == "rolling-restart":
            for i, target in enumerate(NODES):
                if i:
                    # Fresh work for this node's restart to interrupt.
                    c.wait_whole(60)
                    more = self.submit_batch(round_no, 3, offset=round_no + i)
                    self.running_jobs(more, self.args.trigger_progress, 60)
                docs = self.snapshot_all(exclude=(target,))
                c.faulted[target] = "restarting"
                f = self.start_fault(kind, round_no, target, self.affected_by(target, docs))
                ok = c.docker("restart", c.cid[target], timeout=120)
                f.notes.append(f"docker restart {'returned' if ok else 'FAILED'} after {now() - f.t0:.1f}s")
                self.heal(f)
        else:
            raise ValueError(kind)

        c.wait_whole(90)
        # Let the round's jobs end before the next fault, within reason.
        deadline = now() + self.args.round_settle
        while now() < deadline and not STOP.is_set():
            with LOCK:
                left = [j for j in self.jobs.values() if j.round == round_no and not j.terminal_seen]
            if not left:
                break
            time.sleep(0.5)
        self.rounds_done.append(kind)

    # ---- split jobs (issue 16) -------------------------------------------

    def wait_terminal(self, jid: str, timeout: float, exclude: tuple = ()) -> dict | None:
        """Polls `jid` every 200 ms on the live nodes until it is terminal;
        returns its last document (the time it was first seen terminal is
        the job's `terminal_seen`)."""
        deadline = now() + timeout
        doc = None
        while now() < deadline and not STOP.is_set():
            node = self.cluster.pick(exclude)
            if node:
                code, d, _ = self.status(jid, node, 2.0)
                if d and code in (200, 202, 400) and d.get("id") == jid:
                    doc = d
                    if d.get("status") in TERMINAL:
                        return d
            time.sleep(0.2)
        LOG("not-terminal", f"{jid} not terminal within {timeout:.0f}s", echo=True, job=jid)
        return doc

    def wait_quiet(self, timeout: float) -> None:
        """Waits until no accepted job is running or queued (as last seen),
        so that a split job's time is its own."""
        deadline = now() + timeout
        while now() < deadline and not STOP.is_set():
            with LOCK:
                busy = [j.id for j in self.jobs.values() if not j.terminal_seen]
            if not busy:
                return
            time.sleep(0.5)
        LOG("not-quiet", f"jobs still unfinished after {timeout:.0f}s: {busy}", echo=True)

    def job_seconds(self, jid: str | None) -> float | None:
        """From the 202 to the first terminal answer seen."""
        job = self.jobs.get(jid) if jid else None
        if not job or not job.terminal_seen:
            return None
        return round(job.terminal_seen["t"] - job.t_accepted, 3)

    def split_baseline(self, round_no: int) -> None:
        """Once, before the first split round: the long clip split without a
        fault (the unfaulted time), then with parallel=off (the single
        pass's frame count and time), each alone in the cluster."""
        if self.split_baseline_done:
            return
        self.split_baseline_done = True
        for role, parallel in (("unfaulted", ""), ("single-pass", "off")):
            self.wait_quiet(60)
            self.cluster.wait_whole(60)
            node = self.cluster.pick() or NODES[0]
            sub = self.submit(node, round_no, 60.0, f"(the long clip, {role}, no fault)",
                              clip="long", parallel=parallel, role=role)
            if not sub.job:
                continue
            doc = self.wait_terminal(sub.job, 240)
            segments = len((doc or {}).get("segments") or [])
            LOG("split-ref", f"{role} job {sub.job}: {(doc or {}).get('status')} after "
                f"{self.job_seconds(sub.job)}s, {segments} segments", echo=True, job=sub.job, role=role,
                seconds=self.job_seconds(sub.job), segments=segments)

    def segment_target(self, jid: str, kind: str, timeout: float) -> tuple[dict | None, str | None]:
        """Polls the split job every 200 ms until at least one of its
        segments is done and one runs on a node other than its owner,
        between 20 % and 80 % encoded (any progress after half the
        timeout); returns the document and that node (for kill-segment
        preferably neither the owner nor the standby, for pause-segment
        preferably the standby)."""
        job = self.jobs[jid]
        deadline = now() + timeout
        midway_until = now() + timeout / 2
        doc = None
        while now() < deadline and not STOP.is_set():
            node = self.cluster.pick()
            code, d, _ = self.status(jid, node, 2.0) if node else (0, None, "")
            if d and code in (200, 202, 400) and d.get("id") == jid:
                doc = d
                if d.get("status") in TERMINAL:
                    return d, None
                segs = d.get("segments") or []
                midway = now() < midway_until
                running = [s.get("node") for s in segs if s.get("state") == "running"
                           and s.get("node") and s.get("node") != job.owner
                           and (not midway or 0.2 <= (s.get("progress") or 0) <= 0.8)]
                if running and any(s.get("state") == "done" for s in segs):
                    prefer = job.standby if kind == "pause-segment" else None
                    if prefer not in running:
                        prefer = next((n for n in running if n != job.standby), running[0])
                    return d, prefer
            time.sleep(0.2)
        return doc, None

    def split_round(self, round_no: int, kind: str) -> None:
        """kill-segment / pause-segment: one long job, split; the node running
        one of its segments (not its owner) is killed (started again once
        the job has ended) or paused for --hold seconds."""
        c = self.cluster
        if not self.long_clip:
            raise RuntimeError(f"{kind} needs --long-clip")
        self.split_baseline(round_no)
        self.wait_quiet(60)
        c.wait_whole(60)
        node = NODES[round_no % len(NODES)]
        if node in c.faulted:
            node = c.pick() or node
        sub = self.submit(node, round_no, 60.0, f"(the long clip, for {kind})", clip="long", role="faulted")
        run = {"kind": kind, "round": round_no, "job": sub.job, "submitted_to": node,
               "owner": self.jobs[sub.job].owner if sub.job else None,
               "standby": self.jobs[sub.job].standby if sub.job else None}
        with LOCK:
            self.split_runs.append(run)
        if not sub.job:
            run["note"] = f"not accepted: {sub.code} {sub.error}"
            return
        jid = sub.job
        doc, target = self.segment_target(jid, kind, 120)
        if not target:
            run["note"] = (f"no fault: no segment ran on a node other than the owner while another was done "
                           f"(status {(doc or {}).get('status')})")
            LOG("no-trigger", f"{kind}: {run['note']}", echo=True, job=jid)
            self.wait_terminal(jid, 240)
            return
        segs = doc.get("segments") or []
        at_fault = [{"index": s.get("index"), "state": s.get("state"), "node": s.get("node"),
                     "progress": round(s.get("progress") or 0, 3)} for s in segs]
        lost = [s["index"] for s in at_fault if s["state"] == "running" and s["node"] == target]
        job = self.jobs[jid]
        role = "standby" if target == job.standby else "third node"
        run.update({"target": target, "target_role": role, "segments_at_fault": at_fault,
                    "lost_segments": lost,
                    "done_before_fault": {str(s["index"]): s["node"] for s in at_fault if s["state"] == "done"},
                    "fault_after_s": round(now() - job.t_accepted, 3)})
        docs = self.snapshot_all()
        docs[jid] = doc
        affected = self.affected_by(target, docs)
        affected[jid] = {"status": doc.get("status"), "attempt": doc.get("attempt") or 0,
                         "node": doc.get("node"), "progress": doc.get("progress"),
                         "owner": job.owner, "standby": job.standby, "lost_segments": lost,
                         "segments_at_fault": " ".join(f"{s['index']}:{s['state']}@{s['node']}"
                                                       for s in at_fault)}
        if kind == "kill-segment":
            c.faulted[target] = "killed"
            injected = c.inject("kill", c.cid[target])
        else:
            c.faulted[target] = "paused"
            injected = c.inject("pause", c.cid[target])
        f = self.start_fault(kind, round_no, target, affected)
        if not injected:
            f.injected = False
            f.notes.append(f"docker could not {kind} {target}: not injected, left out of the recovery figures")
        f.notes.append(f"split job {jid}: segments {lost} were running on {target} ({role}); "
                       f"done before: {run['done_before_fault']}")
        if kind == "pause-segment":
            time.sleep(self.args.hold)
            self.heal(f)
            self.wait_terminal(jid, 240)
        else:
            # Dead until the job has ended: the lost segments must run elsewhere.
            self.wait_terminal(jid, 240, exclude=(target,))
            self.wait_tracked(f, 5)
            self.heal(f)
        run["seconds"] = self.job_seconds(jid)
        LOG("split-run", f"{kind} of {target} ({role}) during {jid}: lost segments {lost}; job "
            f"{(self.jobs[jid].terminal_seen or {}).get('status')} after {run['seconds']}s", echo=True,
            job=jid, **{k: v for k, v in run.items() if k not in ("job",)})

    # ---- the checker ----------------------------------------------------

    def final_check(self, deadline: float) -> dict:
        c = self.cluster
        LOG("CHECK", f"checking {len(self.jobs)} accepted jobs on every live node", echo=True)
        for n in list(c.faulted):
            self.restore(n)
        c.wait_whole(60)
        live = c.live()
        answers: dict[str, dict[str, tuple]] = {jid: {} for jid in self.jobs}
        pending = set(self.jobs)
        while pending and now() < deadline and not STOP.is_set():
            def one(jid):
                for n in live:
                    code, doc, err = self.status(jid, n, 3.0)
                    answers[jid][n] = (code, doc, err)
                return jid, all(answers[jid][n][0] in (200, 400) for n in live)
            for jid, done in self.pool.map(one, sorted(pending)):
                if done:
                    pending.discard(jid)
            if pending:
                time.sleep(1.0)
        LOG("check-polled", f"{len(self.jobs) - len(pending)} jobs terminal on every live node; "
            f"{len(pending)} not", echo=True)
        isolation = self.check_isolation(live)

        # Every node's own jobs. GET /jobs lists the whole cluster's jobs; a
        # request marked as forwarded by a node lists the answering node's
        # own, which is what tells a job held by two nodes.
        held: dict[str, list[str]] = {}
        listed_docs: dict[str, dict] = {}
        listing_ok = True
        for n in live:
            cursor = None
            while True:
                path = "/jobs?limit=1000" + (f"&cursor={cursor}" if cursor else "")
                code, body, err = request(c.url[n], "GET", path, timeout=10,
                                          headers={"x-vidpress-forwarded": "1"}, key="admin")
                doc = as_json(body)
                if code != 200 or not isinstance(doc, dict):
                    listing_ok = False
                    LOG("list-failed", f"GET /jobs on {n}: {code} {err}", echo=True)
                    break
                for j in doc.get("jobs", []):
                    held.setdefault(j["id"], []).append(n)
                    listed_docs[j["id"]] = j
                cursor = doc.get("next_cursor")
                if not cursor:
                    break

        out_dir = os.path.join(self.args.out, "outputs")
        os.makedirs(out_dir, exist_ok=True)
        per_job = {}
        for jid, job in sorted(self.jobs.items(), key=lambda kv: kv[1].submission):
            problems, dup = [], []
            seen = answers[jid]
            codes = {n: seen.get(n, (0, None, "not polled"))[0] for n in live}
            statuses = {n: (seen[n][1] or {}).get("status") if seen.get(n) and seen[n][1] else None
                        for n in live}
            results = {n: ((seen[n][1] or {}).get("result") or {}).get("bytes") if seen.get(n) and seen[n][1]
                       else None for n in live}
            state = "ok"
            for n, answer in isolation.get(jid, {}).items():
                if answer != 404:
                    problems.append(f"isolation: {answer} from {n} to the other tenant's key, not 404")
            if jid in pending:
                state = "lost"
                problems.append("not terminal on every live node by the deadline: "
                                + ", ".join(f"{n} {codes[n]} {statuses[n] or seen.get(n, (0, None, ''))[2][:80]}"
                                            for n in live))
            elif len(set(statuses.values())) > 1 or len(set(results.values())) > 1:
                state = "duplicated"
                dup.append(f"nodes disagree: {statuses} results {results}")
            if len(held.get(jid, [])) > 1:
                state = "duplicated"
                dup.append(f"held by {held[jid]} (listed by each)")
            if job.reexecuted and state != "lost":
                state = "duplicated"
                dup.append(f"executed twice: {job.reexecuted}")
            if job.conflict and state != "lost":
                state = "duplicated"
                dup.append(f"different outcomes reported: {job.conflict}")
            if listing_ok and state != "lost" and not held.get(jid):
                problems.append("listed by no node")
            status = next((s for s in statuses.values() if s), None)
            entry = {"submission": job.submission, "round": job.round, "submitted_to": job.node,
                     "tenant": job.tenant,
                     "owner": job.owner, "standby": job.standby, "status": status, "codes": codes,
                     "held_by": held.get(jid, []), "attempt": (job.last or {}).get("attempt"),
                     "ran_on": (job.last or {}).get("node")}
            if status == "failed":
                entry["error"] = error_code(seen[live[0]][1]) if seen.get(live[0]) and seen[live[0]][1] else None
            if state != "lost" and status == "completed":
                digests, valid = {}, None
                for n in live:
                    code, body, err = request(c.url[n], "GET", f"/jobs/{jid}/result", timeout=30,
                                              key=job.tenant)
                    if code != 200:
                        problems.append(f"result from {n}: {code} {err}")
                        continue
                    digest = hashlib.sha256(body).hexdigest()
                    digests[n] = digest
                    if results.get(n) is not None and len(body) != results[n]:
                        problems.append(f"result from {n} has {len(body)} bytes, its document says {results[n]}")
                    if valid is None:
                        path = os.path.join(out_dir, f"{jid}.mp4")
                        with open(path, "wb") as fh:
                            fh.write(body)
                        long = job.clip == "long"
                        valid, why = self.probe(path, self.args.long_clip_duration if long else None)
                        entry["probe"] = why
                        if long:
                            # Frame by frame (issue 16): count, timestamps, A/V sync.
                            facts = media_facts(path)
                            entry["frames"] = facts
                            why = frame_problems(facts, self.long_facts)
                            if why:
                                valid = False
                                entry["probe"] += "; frame check: " + "; ".join(why)
                        if valid:
                            os.remove(path)
                if len(set(digests.values())) > 1:
                    state = "duplicated"
                    dup.append(f"different result bytes across nodes: { {n: d[:12] for n, d in digests.items()} }")
                if valid is False:
                    entry["invalid"] = True
                    problems.append(f"invalid output: {entry['probe']}")
                elif valid is None:
                    problems.append("no result could be downloaded")
                    entry["invalid"] = True
            if job.clip == "long":
                self.split_entry(job, entry, seen, live, problems)
            entry["state"] = state
            entry["problems"] = problems
            entry["duplicates"] = dup
            entry["passed"] = state == "ok" and not problems
            per_job[jid] = entry

        # Every long-clip output has as many frames as the single pass's.
        single = next((e for e in per_job.values() if e.get("role") == "single-pass"
                       and (e.get("frames") or {}).get("video_frames")), None)
        for jid, e in per_job.items():
            frames = (e.get("frames") or {}).get("video_frames")
            if single is None or frames is None or e is single:
                continue
            if frames != single["frames"]["video_frames"]:
                e["invalid"] = True
                e["problems"].append(f"frame check: {frames} video frames, the single pass has "
                                     f"{single['frames']['video_frames']}")
                e["passed"] = False

        # Jobs the cluster holds that no 202 announced: trace them back to
        # their submission through the size of the input.
        extra = []
        for jid, nodes in held.items():
            if jid in self.jobs:
                continue
            size = (listed_docs[jid].get("input") or {}).get("bytes") or 0
            index = self.submission_of_size(size)
            sub = self.submissions[index] if index is not None and index < len(self.submissions) else None
            item = {"job": jid, "held_by": nodes, "status": listed_docs[jid].get("status"),
                    "input_bytes": size, "submission": index}
            if sub is not None and sub.job and sub.job != jid:
                item["kind"] = "second job of an accepted submission"
                per_job[sub.job]["state"] = "duplicated"
                per_job[sub.job]["passed"] = False
                per_job[sub.job]["duplicates"].append(f"submission #{index} also produced job {jid}")
            elif sub is not None:
                item["kind"] = f"from an unacknowledged submission (answered {sub.code or 'nothing'}: {sub.error[:80]})"
            else:
                item["kind"] = "unknown origin"
            extra.append(item)
            LOG("unacknowledged", f"{jid} held by {nodes}: {item['kind']}", echo=True, **item)
        for item in self.id_twice:
            if item["job"] in per_job:
                per_job[item["job"]]["state"] = "duplicated"
                per_job[item["job"]]["passed"] = False
                per_job[item["job"]]["duplicates"].append(f"returned for submissions {item['submissions']}")
        return {"jobs": per_job, "unacknowledged": extra, "listing_ok": listing_ok,
                "isolation": isolation}

    def check_isolation(self, live: list[str]) -> dict[str, dict[str, int]]:
        """Asks every live node about a sample of each tenant's jobs (the
        first, middle and last accepted) with the other tenant's key, for
        the status and the result: each answer must be 404. Returns, per
        sampled job and node, the first answer that was not 404, else 404."""
        sample = []
        for tenant in TENANTS:
            mine = sorted((j for j in self.jobs.values() if j.tenant == tenant), key=lambda j: j.submission)
            if mine:
                sample += list({id(j): j for j in (mine[0], mine[len(mine) // 2], mine[-1])}.values())
        out: dict[str, dict[str, int]] = {}
        for job in sample:
            other = next(t for t in TENANTS if t != job.tenant)
            out[job.id] = {}
            for n in live:
                answer = 404
                for path in (f"/jobs/{job.id}", f"/jobs/{job.id}/result"):
                    code, _, _ = request(self.cluster.url[n], "GET", path, timeout=10, key=other)
                    if code != 404:
                        answer = code
                        break
                out[job.id][n] = answer
        leaks = {j: a for j, a in out.items() if any(c != 404 for c in a.values())}
        LOG("isolation", f"{len(out)} jobs asked on {len(live)} nodes with the other tenant's key: "
            + (f"NOT 404: {leaks}" if leaks else "404 everywhere"), echo=True, answers=out)
        return out

    def split_entry(self, job: Job, entry: dict, seen: dict, live: list[str], problems: list[str]) -> None:
        """What the check says of a long-clip job: its segments as the nodes
        last answered (index:state@node), and for a faulted one, where the
        segments that ran on the faulted node were encoded again and whether
        the segments done before the fault kept their node."""
        entry["clip"] = "long"
        entry["role"] = job.role
        doc = next((seen[n][1] for n in live if seen.get(n) and seen[n][1]
                    and (seen[n][1].get("segments"))), None) or job.last or {}
        segs = doc.get("segments") or []
        if not segs and job.segments_seen:
            # Not a failure of the job, but of its status document: reported.
            entry["segments_note"] = ("the final answers have no segments: those shown are the last "
                                      "seen while it ran")
            segs = job.segments_seen
        entry["segments"] = [f"{s.get('index')}:{s.get('state')}@{s.get('node')}" for s in segs]
        entry["split"] = bool(segs)
        if entry["status"] == "completed" and job.role in ("unfaulted", "faulted") and not segs:
            problems.append("ran in one pass: the long clip was not split")
        if entry["status"] == "completed" and job.role == "single-pass" and segs:
            problems.append(f"parallel=off, yet split into {len(segs)} segments")
        run = next((r for r in self.split_runs if r.get("job") == job.id), None)
        if not run or not run.get("target"):
            return
        final = {s.get("index"): s.get("node") for s in segs}
        run["redone"] = {str(i): final.get(i) for i in run["lost_segments"]}
        run["finished_on_target"] = [i for i in run["lost_segments"] if final.get(i) == run["target"]]
        moved = {i: (n, final.get(int(i))) for i, n in run["done_before_fault"].items()
                 if final.get(int(i)) != n}
        run["done_before_fault_moved"] = moved
        entry["fault"] = {k: run.get(k) for k in ("kind", "target", "target_role", "lost_segments", "redone",
                                                  "done_before_fault", "done_before_fault_moved")}
        if segs and moved:
            problems.append("segments done before the fault were encoded again: "
                            + ", ".join(f"{i} ({a} -> {b})" for i, (a, b) in moved.items()))

    def probe(self, path: str, expected: float | None = None) -> tuple[bool, str]:
        try:
            p = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                                "stream=codec_type,codec_name:format=duration", "-of", "json", path],
                               capture_output=True, text=True, timeout=30)
            doc = json.loads(p.stdout or "{}")
        except (subprocess.TimeoutExpired, ValueError) as e:
            return False, f"ffprobe failed: {e}"
        streams = sorted((s.get("codec_type"), s.get("codec_name")) for s in doc.get("streams", []))
        duration = float((doc.get("format") or {}).get("duration") or 0)
        expected = self.clip_duration if expected is None else expected
        tolerance = max(0.5, 0.03 * expected)
        why = f"streams {streams}, duration {duration:.2f}s (input {expected:.2f}s)"
        ok = streams == [("audio", "aac"), ("video", "h264")] and abs(duration - expected) <= tolerance
        return ok, why


# --------------------------------------------------------------------------


def summarize(h: Harness, check: dict | None, started: float) -> dict:
    jobs = (check or {}).get("jobs", {})
    counts = {"completed": 0, "failed": 0, "canceled": 0}
    failed_codes: dict[str, int] = {}
    for e in jobs.values():
        if e["state"] != "lost" and e["status"] in counts:
            counts[e["status"]] += 1
        if e["state"] != "lost" and e["status"] == "failed":
            failed_codes[e.get("error") or "?"] = failed_codes.get(e.get("error") or "?", 0) + 1
    lost = [j for j, e in jobs.items() if e["state"] == "lost"]
    duplicated = [j for j, e in jobs.items() if e["state"] == "duplicated"]
    invalid = [j for j, e in jobs.items() if e.get("invalid")]
    not_accepted: dict[str, int] = {}
    for s in h.submissions:
        if not s.job:
            key = str(s.code) if s.code else "no answer"
            not_accepted[key] = not_accepted.get(key, 0) + 1

    # Each recovered job's recovery in steps, from the nodes' logs (breakdown.py).
    lines = breakdown.read_logs(h.cluster.cid)
    steps: dict[tuple[int, str], dict] = {}
    for i, f in enumerate(h.faults):
        for jid, r in f.recovered.items():
            steps[(i, jid)] = breakdown.breakdown(lines, EPOCH0 + f.t0, f.target, jid,
                                                  f.affected[jid].get("attempt") or 0,
                                                  until=EPOCH0 + f.t0 + r[0])

    def step_medians(fs_steps: list[dict]) -> dict:
        out = {}
        for step in breakdown.STEPS:
            xs = [b[step] for b in fs_steps if b.get(step) is not None]
            out[step] = {"median": round(statistics.median(xs), 3) if xs else None,
                         "worst": round(max(xs), 3) if xs else None, "samples": len(xs)}
        return out

    kinds = {}
    for k in KINDS:
        fs = [f for f in h.faults if f.kind == k]
        if not fs:
            continue
        fs_steps = [b for (i, _), b in steps.items() if h.faults[i].kind == k]
        injected = [f for f in fs if f.injected]
        samples = [r[0] for f in injected for r in f.recovered.values()]
        per_fault = [max((r[0] for r in f.recovered.values()), default=None) for f in injected]
        # Jobs the faulted node owned: how long until a live node answered
        # for them again (a takeover, or the node back).
        owned = [f.answerable[j] for f in fs for j, a in f.affected.items()
                 if a["owner"] == f.target and j in f.answerable]
        kinds[k] = {
            "faults": len(fs),
            "not_injected": len(fs) - len(injected),
            "rounds": h.rounds_done.count(k),
            "affected_jobs": sum(len(f.affected) for f in fs),
            "recovered_jobs": sum(len(f.recovered) for f in fs),
            "kept_running_jobs": sum(1 for f in injected for r in f.recovered.values()
                                     if r[1].startswith("kept running")),
            "unrecovered_jobs": sum(len(f.affected) - len(f.recovered) for f in fs),
            "accepted_in_rounds": sum(1 for j in h.jobs.values() if h.kinds[j.round] == k),
            "lost_in_rounds": sum(1 for j in lost if h.kinds[h.jobs[j].round] == k),
            "duplicated_in_rounds": sum(1 for j in duplicated if h.kinds[h.jobs[j].round] == k),
            "recovery_s": {
                "median": round(statistics.median(samples), 3) if samples else None,
                "worst": round(max(samples), 3) if samples else None,
                "per_fault_worst": per_fault,
                "samples": sorted(samples),
            },
            "breakdown_s": step_medians(fs_steps),
            "redispatch_waited_for_slot": sum(1 for b in fs_steps if b.get("waited_for_slot")),
            "owned_jobs_answerable_again_s": {
                "median": round(statistics.median(owned), 3) if owned else None,
                "worst": round(max(owned), 3) if owned else None,
                "samples": sorted(owned),
            },
        }
    passed = sum(1 for e in jobs.values() if e["passed"])
    failed_checks = len(jobs) - passed
    strict = os.environ.get("FAULT_STRICT") == "1"
    # Lost, duplicated and invalid jobs all fail their check.
    # FAULT_STRICT=1: a job that ended `failed`, or a live node that
    # answered 404 for an accepted job even once, fails the run too.
    transient_404 = sum(a["count"] for a in h.anomalies if a["kind"] == "404")
    ok = bool(check) and failed_checks == 0 and not (strict and (counts["failed"] or transient_404))
    return {
        "ok": ok,
        "duration_s": round(time.time() - started, 1),
        "rounds": h.rounds_done,
        "rounds_skipped": h.rounds_skipped,
        "submitted": len(h.submissions),
        "accepted": len(h.jobs),
        "not_accepted": not_accepted,
        "completed": counts["completed"],
        "failed": counts["failed"],
        "failed_codes": failed_codes,
        "canceled": counts["canceled"],
        "lost": len(lost),
        "duplicated": len(duplicated),
        "invalid_outputs": len(invalid),
        "checks": {"passed": passed, "failed": failed_checks},
        "unacknowledged_jobs": (check or {}).get("unacknowledged", []),
        "accepted_by_tenant": {t: sum(1 for j in h.jobs.values() if j.tenant == t) for t in TENANTS},
        "isolation": (check or {}).get("isolation", {}),
        "lost_jobs": {j: jobs[j] for j in lost},
        "duplicated_jobs": {j: jobs[j] for j in duplicated},
        "invalid_jobs": {j: jobs[j] for j in invalid},
        "failed_jobs": {j: e for j, e in jobs.items() if e["status"] == "failed"},
        "faults": kinds,
        "fault_events": [
            {"kind": f.kind, "round": f.round, "target": f.target, "utc": f.utc0, "t": round(f.t0, 3),
             "healed_after_s": round(f.t_heal - f.t0, 3) if f.t_heal is not None else None,
             "affected": f.affected,
             "recovered": {j: {"seconds": r[0], "how": r[1], "breakdown_s": steps.get((i, j))}
                           for j, r in f.recovered.items()},
             "answerable_again_s": f.answerable, "poll_answers": f.answers, "notes": f.notes}
            for i, f in enumerate(h.faults)],
        "anomaly_counts": {k: sum(1 for a in h.anomalies if a["kind"] == k)
                           for k in sorted({a["kind"] for a in h.anomalies})},
        "anomalies": h.anomalies,
        "config": {k: v for k, v in vars(h.args).items() if k not in ("containers",)},
        "split": summarize_split(h, jobs, lost, duplicated),
        "jobs": jobs,
    }


def summarize_split(h: Harness, jobs: dict, lost: list[str], duplicated: list[str]) -> dict:
    """The long-clip jobs (issue 16): how many were split, lost, duplicated,
    how many outputs passed the frame-by-frame check, and each faulted split
    job's time against the unfaulted split job's."""
    long_jobs = [j for j in h.jobs.values() if j.clip == "long"]
    if not long_jobs:
        return {}
    split_jobs = [j for j in long_jobs if j.role != "single-pass"]
    checked = [j for j in long_jobs if (jobs.get(j.id) or {}).get("frames")]
    failed = [j.id for j in checked if jobs[j.id].get("invalid")]
    by_role = {r: next((j for j in long_jobs if j.role == r), None) for r in ("unfaulted", "single-pass")}
    unfaulted = h.job_seconds(by_role["unfaulted"].id) if by_role["unfaulted"] else None

    def ref(job: Job | None) -> dict | None:
        if not job:
            return None
        e = jobs.get(job.id) or {}
        return {"job": job.id, "status": e.get("status"), "seconds": h.job_seconds(job.id),
                "segments": len(e.get("segments") or []),
                "video_frames": (e.get("frames") or {}).get("video_frames")}

    runs = []
    for r in h.split_runs:
        secs = h.job_seconds(r.get("job"))
        ratio = round(secs / unfaulted, 3) if secs and unfaulted else None
        runs.append({**r, "status": (jobs.get(r.get("job")) or {}).get("status"), "seconds": secs,
                     "unfaulted_seconds": unfaulted, "ratio_to_unfaulted": ratio,
                     "within_target": ratio is not None and ratio < SPLIT_SLOWDOWN_TARGET,
                     "frame_check": "passed" if (jobs.get(r.get("job")) or {}).get("frames")
                     and not (jobs.get(r.get("job")) or {}).get("invalid") else "failed or none"})
    return {
        "segment_secs": h.args.segment_secs,
        "segment_min_secs": h.args.segment_min_secs,
        "input": {"seconds": h.args.long_clip_duration, **{k: h.long_facts.get(k) for k in (
            "video_frames", "frame_rate", "video_duration_s", "audio_duration_s")}},
        "split_jobs": len(split_jobs),
        "split_jobs_split": sum(1 for j in split_jobs if (jobs.get(j.id) or {}).get("split")),
        "lost": sum(1 for j in long_jobs if j.id in lost),
        "duplicated": sum(1 for j in long_jobs if j.id in duplicated),
        "frame_checks": {"passed": len(checked) - len(failed), "failed": len(failed), "failed_jobs": failed},
        # Split jobs whose final status documents had an empty `segments`.
        "final_answers_without_segments": [j.id for j in split_jobs
                                           if (jobs.get(j.id) or {}).get("segments_note")],
        "unfaulted": ref(by_role["unfaulted"]),
        "single_pass": ref(by_role["single-pass"]),
        "slowdown_target": SPLIT_SLOWDOWN_TARGET,
        "faulted": runs,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--urls", required=True, help="node-a,node-b,node-c base URLs")
    p.add_argument("--containers", required=True, help="container IDs of node-a,node-b,node-c")
    p.add_argument("--network", required=True)
    p.add_argument("--ca", help="PEM CA certificate to trust for https:// URLs")
    p.add_argument("--tokens", required=True,
                   help="folder of API tokens, one file each: admin, " + ", ".join(TENANTS))
    p.add_argument("--clip", required=True)
    p.add_argument("--clip-duration", type=float, required=True)
    p.add_argument("--long-clip", help="the clip the nodes split (the kinds " + ", ".join(SPLIT_KINDS) + ")")
    p.add_argument("--long-clip-duration", type=float, default=0.0)
    p.add_argument("--segment-secs", type=float, default=0.0, help="the nodes' VIDPRESS_SEGMENT_SECS (reported)")
    p.add_argument("--segment-min-secs", type=float, default=0.0,
                   help="the nodes' VIDPRESS_SEGMENT_MIN_SECS: the long clip must be longer, the clip not")
    p.add_argument("--out", required=True)
    p.add_argument("--rounds", default=",".join(KINDS))
    p.add_argument("--jobs-per-round", type=int, default=6)
    p.add_argument("--preset", default="slow")
    p.add_argument("--hold", type=float, default=8.0, help="seconds a pause or partition lasts")
    p.add_argument("--trigger-progress", type=float, default=0.15)
    p.add_argument("--round-settle", type=float, default=60.0)
    p.add_argument("--check-timeout", type=float, default=300.0)
    p.add_argument("--deadline", type=float, required=True, help="Unix time by which to be done")
    args = p.parse_args()
    kinds = [k for k in args.rounds.split(",") if k]
    for k in kinds:
        if k not in KINDS:
            p.error(f"unknown fault kind {k}; kinds are {', '.join(KINDS)}")
        if k in SPLIT_KINDS and not args.long_clip:
            p.error(f"{k} needs --long-clip")
    if args.long_clip and args.segment_min_secs and not (
            args.clip_duration <= args.segment_min_secs < args.long_clip_duration):
        p.error(f"--segment-min-secs {args.segment_min_secs:g} must be at least the clip's "
                f"{args.clip_duration:g}s and under the long clip's {args.long_clip_duration:g}s")
    os.makedirs(args.out, exist_ok=True)
    global LOG, TLS
    LOG = Log(args.out)
    TLS = ssl.create_default_context(cafile=args.ca)
    for name in ("admin", *TENANTS):
        with open(os.path.join(args.tokens, name), encoding="utf-8") as fh:
            TOKENS[name] = fh.read().strip()
    started = time.time()

    def on_signal(signum, _frame):
        if STOP.is_set():
            return  # already stopping: let the summary be written
        STOP.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    h = Harness(args)
    check = None
    status = 2
    try:
        LOG("start", f"{len(kinds)} rounds ({', '.join(kinds)}), {args.jobs_per_round} jobs each, "
            f"preset {args.preset}, clip {len(h.clip)} bytes / {args.clip_duration:.1f}s; "
            + (f"long clip {len(h.long_clip)} bytes / {args.long_clip_duration:.1f}s "
               f"({h.long_facts.get('video_frames')} frames; segments of {args.segment_secs:g}s "
               f"above {args.segment_min_secs:g}s); " if h.long_clip else "")
            + f"aliases {h.cluster.aliases}", echo=True)
        if not h.cluster.wait_whole(90):
            raise RuntimeError("the cluster is not whole at the start")
        threading.Thread(target=h.monitor, daemon=True).start()
        # Keep time for the check: a round takes about 1-2 min.
        for r, kind in enumerate(kinds):
            left = args.deadline - time.time() - 150
            need = 150 if kind == "rolling-restart" else 90
            if kind in SPLIT_KINDS:
                # The long job, and before the first the unfaulted and single-pass ones.
                need = 120 if h.split_baseline_done else 200
            if left < need:
                LOG("skip", f"round {r} ({kind}) skipped: {left:.0f}s left before the check", echo=True)
                h.rounds_skipped.append(kind)
                continue
            h.run_round(r, kind)
        check_deadline = now() + min(args.check_timeout, max(60.0, args.deadline - time.time() - 30))
        check = h.final_check(check_deadline)
        status = 0
    except KeyboardInterrupt:
        LOG("interrupted", "interrupted", echo=True)
        status = 130
    except Exception as e:  # the harness failed: still write what is known
        LOG("harness-error", f"{type(e).__name__}: {e}", echo=True)
        import traceback
        traceback.print_exc()
        status = 2
    finally:
        STOP.set()
        summary = summarize(h, check, started)
        path = os.path.join(args.out, "summary.json")
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=2, default=str)
        LOG.close()
    if check is None:
        print(f"FAIL: the fault test did not reach its check (status {status}); see {path}")
        return status or 2
    c = summary
    for j, e in c["jobs"].items():
        if not e["passed"]:
            print(f"  FAILED {j} (#{e['submission']}, round {e['round']} {kinds[e['round']] if e['round'] < len(kinds) else ''}): "
                  f"{e['state']}; {'; '.join(e['problems'] + e['duplicates'])}")
    print(f"{c['checks']['passed']} passed, {c['checks']['failed']} failed")
    rec = "; ".join(f"{k} x{v['faults']}: median {v['recovery_s']['median']}s worst {v['recovery_s']['worst']}s"
                    f"{' (' + str(v['kept_running_jobs']) + ' of ' + str(v['recovered_jobs']) + ' kept running)' if v['kept_running_jobs'] else ''}"
                    f"{' (' + str(v['not_injected']) + ' not injected)' if v['not_injected'] else ''}"
                    f"{' (' + str(v['unrecovered_jobs']) + ' unrecovered)' if v['unrecovered_jobs'] else ''}"
                    for k, v in c["faults"].items())
    by_tenant = ", ".join(f"{t} {n}" for t, n in c["accepted_by_tenant"].items())
    isolated = sum(1 for a in c["isolation"].values() if all(v == 404 for v in a.values()))
    print(f"accepted {c['accepted']} of {c['submitted']} submitted ({by_tenant}); completed {c['completed']}, "
          f"failed {c['failed']} {c['failed_codes'] or ''}, lost {c['lost']}, duplicated {c['duplicated']}, "
          f"invalid outputs {c['invalid_outputs']}; unacknowledged jobs {len(c['unacknowledged_jobs'])}; "
          f"anomalies {c['anomaly_counts'] or 0}")
    print(f"isolation: {isolated} of {len(c['isolation'])} sampled jobs answered 404 to the other tenant "
          f"on every live node")
    print(f"recovery: {rec}")
    for k, v in c["faults"].items():
        b = v.get("breakdown_s") or {}
        print(f"  {k} median breakdown: " + ", ".join(
            f"{step} {b[step]['median']}s" for step in breakdown.STEPS if step in b)
            + f"; {v['redispatch_waited_for_slot']} of {v['recovered_jobs']} waited for a worker slot")
    sp = c["split"]
    if sp:
        fc = sp["frame_checks"]
        unf = sp["unfaulted"] or {}
        times = "; ".join(f"{r['kind']} of {r.get('target') or 'no node'} ({r.get('target_role', '-')}): "
                          f"{r['seconds']}s = {r['ratio_to_unfaulted']}x, segments {r.get('lost_segments')} "
                          f"redone on {r.get('redone')}" for r in sp["faulted"])
        print(f"split: {sp['split_jobs']} split jobs ({sp['split_jobs_split']} split), lost {sp['lost']}, "
              f"duplicated {sp['duplicated']}, frame checks {fc['passed']} passed {fc['failed']} failed; "
              f"unfaulted {unf.get('seconds')}s ({unf.get('segments')} segments), single pass "
              f"{(sp['single_pass'] or {}).get('seconds')}s; {times or 'no faulted split job'}")
    return 0 if c["ok"] else 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Pollers may still be waiting on a node: do not wait for them.
    os._exit(code)
