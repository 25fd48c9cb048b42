#!/usr/bin/env python3
"""Cold latency per bot, and bytes per mesh message (`POST /v1/tasks`).

    python3 benches/tasks_cold.py

Starts `capsule up` on fresh data (default embedder MiniLM, default models
directory, no rate limit), then for each bot (calc, medical, kernel, general)
submits N = 7 tasks with distinct queries and the domain given, one at a
time: the POST's client-side wall time and the server's latency_ms, then
GET /v1/tasks/{id} every 2 ms until done or failed (submit -> done wall time)
and the bot's own duration_ms. The first task of each bot is its cold run
(the first run of that bot since start: a model load, a first plan); the
other six are warm and reported as medians. Then 7 queries without a domain,
whose submit latency_ms includes the classification (one MiniLM embedding).

Bytes per message: capsule_mesh_envelope_bytes_{sum,count} from /metrics
(each router -> bot message carries IDs only), beside the mean size of what
the messages point to: GET /v1/objects/{task_id} (the spec) and
GET /v1/objects/{result_id} (the artifact) of every task.

Environment: CAPSULE (binary, default target/release/capsule), TASKS_COLD_N
(tasks per bot, default 7). Prints a markdown table; raw JSON lines go to
target/tasks-cold.jsonl. Exits non-zero when a task failed or timed out.
Python 3 standard library only.
"""

import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAPSULE = os.environ.get("CAPSULE", os.path.join(ROOT, "target", "release", "capsule"))
N = int(os.environ.get("TASKS_COLD_N", "7"))
OUT = os.path.join(ROOT, "target", "tasks-cold.jsonl")
POLL_S = 0.002
TASK_TIMEOUT_S = 300.0

GENERAL = [
    "name a colour of the rainbow",
    "what is the capital of Italy",
    "how many legs does a spider have",
    "what is the opposite of cold",
    "name a planet in the solar system",
    "what language is spoken in Brazil",
    "what do bees make",
    "name a fruit that is yellow",
    "what is the largest ocean",
    "how many days are in a week",
]


def queries(bot, n):
    if bot == "calc":
        return [f"{i} + 1/{i + 2}" for i in range(n)]
    if bot == "medical":
        return [f"BMI for {60 + i} kg, 1.7{i % 10} m" for i in range(n)]
    if bot == "kernel":
        return [f"step the brain {i}" for i in range(n)]
    return [GENERAL[i % len(GENERAL)] + ("" if i < len(GENERAL) else f" ({i})") for i in range(n)]


# Without a domain: the service classifies. Distinct from the queries above.
UNLABELLED = [
    "what is my BMI at 82 kg and 1.91 m",
    "compute 17 * 23 - 4",
    "who wrote the play Hamlet",
    "body mass index for 55 kg, 1.62 m",
    "compute 144 / 12 + 7",
    "what colour is the sky on a clear day",
    "BMI of a 95 kg adult 1.80 m tall",
]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def sh(args):
    try:
        return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def machine():
    model = "?"
    for line in sh(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
            break
    return model, sh(["nproc"])


class Client:
    """One keep-alive HTTP connection; reconnects once on a dropped one."""

    def __init__(self, port, token):
        self.port, self.token = port, token
        self.conn = None

    def request(self, method, path, body=None, auth=True):
        headers = {}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def json(self, method, path, body=None):
        status, raw = self.request(method, path, body)
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, {"raw": raw.decode(errors="replace")}


def start(tmp):
    if not os.access(CAPSULE, os.X_OK):
        sys.exit(f"no Capsule binary at {CAPSULE} (cargo build --release)")
    data = os.path.join(tmp, "data")
    subprocess.run([CAPSULE, "init", data, "--json"], check=True, capture_output=True)
    token = json.loads(subprocess.run(
        [CAPSULE, "tokens", "add", "--data", data, "--role", "agent", "--name", "bench", "--json"],
        check=True, capture_output=True, text=True).stdout)["token"]
    http_port, metrics_port = free_port(), free_port()
    log_path = os.path.join(tmp, "capsule.log")
    log = open(log_path, "wb")
    env = dict(os.environ, CAPSULE_AUTH__RATE_LIMIT_PER_MINUTE="0")
    proc = subprocess.Popen(
        [CAPSULE, "up", "--data", data, "--http", f"127.0.0.1:{http_port}",
         "--grpc", f"127.0.0.1:{free_port()}", "--metrics", f"127.0.0.1:{metrics_port}"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc, log, log_path, http_port, metrics_port, token


def wait_ready(proc, client, log_path, limit_s=120):
    t0 = time.monotonic()
    while True:
        if proc.poll() is not None:
            sys.stderr.write(open(log_path, errors="replace").read())
            sys.exit("capsule exited before it was ready")
        try:
            if client.request("GET", "/healthz", auth=False)[0] == 200:
                return time.monotonic() - t0
        except OSError:
            client.conn = None
        if time.monotonic() - t0 > limit_s:
            sys.stderr.write(open(log_path, errors="replace").read())
            sys.exit(f"capsule not ready after {limit_s} s")
        time.sleep(0.1)


def run_task(client, query, domain):
    body = {"query": query}
    if domain:
        body["domain"] = domain
    t0 = time.perf_counter()
    status, reply = client.json("POST", "/v1/tasks", body)
    t_submit = time.perf_counter()
    rec = {"bot": domain, "query": query, "http_status": status,
           "submit_ms": (t_submit - t0) * 1e3, "server_latency_ms": reply.get("latency_ms"),
           "submit_status": reply.get("status"), "task_id": reply.get("task_id"),
           "classification": reply.get("classification"), "reused_from": reply.get("reused_from")}
    if status != 202 or not rec["task_id"]:
        rec.update(status="failed", error=f"submit {status}: {reply}")
        return rec
    if rec["submit_status"] not in ("queued", "cache_hit"):
        rec.update(status="failed", error=f"submit status {rec['submit_status']}")
        return rec
    path = f"/v1/tasks/{rec['task_id']}"
    polls = 0
    while True:
        st, view = client.json("GET", path)
        polls += 1
        now = time.perf_counter()
        if st == 200 and view.get("status") in ("done", "failed"):
            break
        if st != 200 or view.get("status") not in ("queued", "running"):
            rec.update(status="failed", error=f"GET {st}: status {view.get('status')}")
            return rec
        if now - t0 > TASK_TIMEOUT_S:
            rec.update(status="timeout", error=f"not done after {TASK_TIMEOUT_S} s")
            return rec
        time.sleep(POLL_S)
    result = view.get("result") or {}
    rec.update(status=view["status"], done_ms=(now - t0) * 1e3, bot_ms=view.get("duration_ms"),
               polls=polls, result_id=view.get("result_id"), domain=view.get("domain"),
               error=view.get("error"), answer=str(result.get("answer", ""))[:120])
    return rec


def object_len(client, oid):
    if not oid:
        return None
    st, raw = client.request("GET", f"/v1/objects/{oid}")
    return len(raw) if st == 200 else None


def metrics(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    out = {}
    for line in text.splitlines():
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$', line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=1):
    return "n/a" if x is None else f"{x:.{nd}f}"


def main():
    cpu, nproc = machine()
    commit = sh(["git", "rev-parse", "--short", "HEAD"])
    print(f"machine: {nproc} CPUs, {cpu}; commit {commit}; binary {CAPSULE}")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    bots = ["calc", "medical", "kernel", "general"]
    records, unlabelled = [], []
    with tempfile.TemporaryDirectory(prefix="tasks-cold-") as tmp:
        proc, log, log_path, http_port, metrics_port, token = start(tmp)
        try:
            client = Client(http_port, token)
            ready_s = wait_ready(proc, client, log_path)
            print(f"ready after {ready_s:.2f} s at 127.0.0.1:{http_port}; N = {N} tasks per bot")
            for bot in bots:
                for i, q in enumerate(queries(bot, N)):
                    rec = run_task(client, q, bot)
                    rec.update(kind="cold" if i == 0 else "warm", index=i)
                    records.append(rec)
                    print(f"  {bot} #{i}: {rec['status']} submit {fmt(rec['submit_ms'], 2)} ms "
                          f"done {fmt(rec.get('done_ms'))} ms bot {fmt(rec.get('bot_ms'))} ms "
                          f"{rec.get('error') or ''}", file=sys.stderr)
            for q in UNLABELLED:
                rec = run_task(client, q, None)
                rec.update(kind="classify")
                unlabelled.append(rec)
                c = rec.get("classification") or {}
                print(f"  classify {q!r}: {c.get('domain')} ({c.get('method')}, "
                      f"{fmt(c.get('confidence'), 2)}) latency {fmt(rec['server_latency_ms'], 2)} ms, "
                      f"{rec['status']}", file=sys.stderr)
            for rec in records + unlabelled:
                rec["spec_bytes"] = object_len(client, rec.get("task_id"))
                rec["result_bytes"] = object_len(client, rec.get("result_id"))
            m = metrics(metrics_port)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()

    with open(OUT, "w") as f:
        for rec in records + unlabelled:
            f.write(json.dumps(dict(rec, cpu=cpu, nproc=nproc, commit=commit)) + "\n")
        f.write(json.dumps({"kind": "metrics", **{k: v for k, v in m.items()
                                                  if k.startswith("capsule_mesh_")}}) + "\n")

    bad = [r for r in records + unlabelled if r["status"] != "done"]
    hits = [r for r in records if r.get("submit_status") == "cache_hit"]
    print()
    print("| bot | cold submit→done ms | cold bot ms | warm median submit→done ms "
          "| warm median bot ms | failed |")
    print("|---|---:|---:|---:|---:|---:|")
    for bot in bots:
        rs = [r for r in records if r["bot"] == bot]
        cold = rs[0]
        warm = [r for r in rs[1:] if r["status"] == "done"]
        failed = sum(r["status"] != "done" for r in rs)
        print(f"| {bot} | {fmt(cold.get('done_ms'))} | {fmt(cold.get('bot_ms'), 2)} "
              f"| {fmt(med(r.get('done_ms') for r in warm))} | {fmt(med(r.get('bot_ms') for r in warm), 2)} "
              f"| {failed} |")
    print()
    lat = [r["server_latency_ms"] for r in unlabelled]
    doms = [(r.get("classification") or {}).get("domain") or "?" for r in unlabelled]
    spread = ", ".join(f"{d} {doms.count(d)}" for d in sorted(set(doms)))
    methods = sorted({(r.get("classification") or {}).get("method") for r in unlabelled} - {None})
    print(f"classification (no domain, {len(unlabelled)} submits): median server latency_ms "
          f"{fmt(med(lat), 2)} (first {fmt(lat[0] if lat else None, 2)}; methods {', '.join(methods) or '?'}; "
          f"domains: {spread})")
    print(f"submit latency, domain given ({len(records)} submits): median client {fmt(med(r['submit_ms'] for r in records), 2)} ms, "
          f"median server latency_ms {fmt(med(r['server_latency_ms'] for r in records), 2)}")
    all_recs = records + unlabelled
    spec = [r["spec_bytes"] for r in all_recs if r.get("spec_bytes") is not None]
    res = [r["result_bytes"] for r in all_recs if r.get("result_bytes") is not None]
    env_sum = m.get("capsule_mesh_envelope_bytes_sum")
    env_n = m.get("capsule_mesh_envelope_bytes_count")
    msg = env_sum / env_n if env_sum is not None and env_n else None
    mspec = statistics.mean(spec) if spec else None
    mres = statistics.mean(res) if res else None
    ratio = msg / (mspec + mres) if msg is not None and mspec and mres else None
    print(f"bytes per message: {fmt(msg)} B mean over {int(env_n or 0)} router→bot messages; "
          f"payloads they point to: spec {fmt(mspec)} B (n={len(spec)}), result {fmt(mres)} B "
          f"(n={len(res)}); message / (spec + result) = {fmt(ratio, 3)}")
    bot_secs = {re.search(r'domain="([^"]+)"', k).group(1): v for k, v in m.items()
                if k.startswith("capsule_mesh_bot_duration_seconds_sum{") and 'domain="' in k}
    bot_n = {re.search(r'domain="([^"]+)"', k).group(1): v for k, v in m.items()
             if k.startswith("capsule_mesh_bot_duration_seconds_count{") and 'domain="' in k}
    if bot_secs:
        print("bot duration (metrics, mean): " + ", ".join(
            f"{d} {bot_secs[d] / bot_n[d] * 1e3:.1f} ms (n={int(bot_n[d])})"
            for d in sorted(bot_secs) if bot_n.get(d)))
    if hits:
        print(f"note: {len(hits)} submit(s) answered cache_hit (reused), not a bot run: "
              + ", ".join(f"{r['bot']} {r['query']!r}" for r in hits))
    print(f"raw: {OUT}")
    if bad:
        for r in bad:
            print(f"FAILED: {r['bot']} {r['query']!r}: {r['status']} {r.get('error')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
