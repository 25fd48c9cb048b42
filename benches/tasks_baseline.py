#!/usr/bin/env python3
"""A baseline for `tasks_bench.sh`: `POST /v1/tasks` cache hits in FastAPI.

This is NOT Capsule. It is a deliberately small FastAPI + SQLite service doing
the same work per task submit as Capsule's task mesh, so that `tasks_bench.sh`
can put Capsule's throughput and latency next to what a straightforward Python
implementation achieves on the same machine:

  auth      `Authorization: Bearer <token>`: SHA-256 of the given token,
            constant-time compared with the stored hash; 401 otherwise
  body      {"query", "domain"?, "class_path"?, "params"?, "user_id"?, "lane"?};
            400 {"error", "field", "reason"} when malformed
  id        the query normalised (stripped, whitespace runs -> one space);
            canonical JSON of {"class_path", "domain", "params", "query"}
            (sorted keys, separators (",", ":"), ensure_ascii=False, UTF-8;
            class_path "" and params {} when absent); ID = "TASK_" + UTC
            YYYYMMDD + "_" + lower-case RFC 4648 base32, unpadded, of the first
            20 bytes of BLAKE3 of those bytes (32 characters)
  policy    kill-switch file absent (checked per submit), then the action
            "task.submit" -> level "minor" (a dict table), the mode
            ("supervised") allows trivial and minor -> "allowed"; a level the
            mode does not allow -> "pending_approval"; the kill switch ->
            "blocked" (both still 202)
  cache     SQLite (WAL): tasks(task_id -> status, result_id). A task with a
            result answers "cache_hit"; a miss inserts a queued row, answers
            "queued", and runs the task in the background (calc: the
            arithmetic is evaluated; other domains: an echo), which writes a
            result row and marks the task done
  ledger    one JSON line per submit (cache hits included), written with
            O_APPEND and os.fsync'ed before the reply. Group commit: requests
            that arrive while an fsync is in flight wait for the next one and
            share it; no reply leaves before its own record is fsync'ed. The
            sequence number is global across the workers (a counter file
            under flock)

  python3 tasks_baseline.py setup VENV   create VENV once (fastapi, uvicorn, blake3); print its python
  PY tasks_baseline.py serve PORT        serve on 127.0.0.1:PORT (uvicorn, TASKS_WORKERS processes)

Environment: TASKS_TOKEN (required to serve), TASKS_BASELINE_DIR (the SQLite
database, the ledger, the kill-switch file KILL; default ./tasks-baseline),
TASKS_WORKERS (uvicorn worker processes, default 2).
"""
import ast
import asyncio
import base64
import datetime
import fcntl
import hashlib
import hmac
import json
import operator
import os
import re
import sqlite3
import subprocess
import sys
import time
import venv
from concurrent.futures import ThreadPoolExecutor

PACKAGES = ["fastapi", "uvicorn[standard]", "blake3"]
DOMAINS = ("calc", "medical", "kernel", "general")
ACTION_LEVELS = {"task.submit": "minor", "task.read": "trivial", "kernel.reset": "major"}
MODE = "supervised"
MODE_ALLOWS = {"manual": {"trivial"}, "supervised": {"trivial", "minor"},
               "autonomous": {"trivial", "minor", "major"}}
_WS = re.compile(r"\s+")


def setup(path):
    py = os.path.join(path, "bin", "python")
    if not os.path.exists(py):
        venv.create(path, with_pip=True)
    probe = subprocess.run([py, "-c", "import fastapi, uvicorn, blake3, httptools, uvloop"],
                           capture_output=True)
    if probe.returncode != 0:
        subprocess.run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        *PACKAGES], check=True, stdout=sys.stderr)
    print(py)


def normalise(query):
    return _WS.sub(" ", query.strip())


def canonical(obj):
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def task_id(query, domain, class_path=None, params=None, now=None):
    import blake3
    body = canonical({"class_path": class_path or "", "domain": domain,
                      "params": params if params is not None else {}, "query": normalise(query)})
    digest = blake3.blake3(body).digest()[:20]
    day = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y%m%d")
    return "TASK_" + day + "_" + base64.b32encode(digest).decode().lower().rstrip("=")


def classify(query):
    """Only for bodies without a domain (the benchmark always names one)."""
    q = query.lower()
    if any(w in q for w in ("brain", "kernel", "density matrix", "workspace")):
        return "kernel"
    if any(w in q for w in ("bmi", "egfr", "creatinine", "anion gap", "qtc", "cha2ds2",
                            "arterial pressure", "surface area", "corrected calcium")):
        return "medical"
    if re.search(r"\d", q) and re.fullmatch(r"[\d\s.+\-*/^()%a-z,]*", q):
        return "calc"
    return "general"


def decide(kill_path, action="task.submit"):
    level = ACTION_LEVELS.get(action, "major")
    if os.path.exists(kill_path):
        return "blocked", {"outcome": "denied", "action": action, "level": level, "mode": MODE,
                           "reason": "kill_switch: the emergency stop is armed"}
    if level not in MODE_ALLOWS[MODE]:
        return "pending_approval", {"outcome": "needs_approval", "action": action,
                                    "level": level, "mode": MODE,
                                    "reason": f"mode {MODE} does not allow {level} actions"}
    return None, {"outcome": "allowed", "action": action, "level": level, "mode": MODE,
                  "reason": f"mode {MODE} allows {level} actions"}


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv, ast.Pow: operator.pow, ast.Mod: operator.mod,
        ast.FloorDiv: operator.floordiv, ast.USub: operator.neg, ast.UAdd: operator.pos}


def evaluate(expr):
    """Plain arithmetic on numbers, for calc tasks; None when it is not that."""
    def ev(n):
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)):
            return n.value
        if isinstance(n, ast.BinOp) and type(n.op) in _OPS:
            left, right = ev(n.left), ev(n.right)
            if isinstance(n.op, ast.Pow) and abs(right) > 10000:
                raise ValueError("exponent too large")
            return _OPS[type(n.op)](left, right)
        if isinstance(n, ast.UnaryOp) and type(n.op) in _OPS:
            return _OPS[type(n.op)](ev(n.operand))
        raise ValueError("not arithmetic")
    try:
        return ev(ast.parse(expr.replace("^", "**"), mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, TypeError):
        return None


class Ledger:
    """Append-only JSON lines with group commit, shared by the worker processes.

    Records wait in `pending`; one flush at a time per process takes them all,
    assigns sequence numbers under an flock on the counter file (so the
    numbers are global and in file order), writes them with one O_APPEND
    write, releases the lock and fsyncs. A record's future resolves only
    after the fsync that covers it has returned.
    """

    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.seq_fd = os.open(path + ".seq", os.O_RDWR | os.O_CREAT, 0o644)
        self.pending = []
        self.flushing = False
        self.io = ThreadPoolExecutor(1, thread_name_prefix="ledger")

    async def append(self, record):
        fut = asyncio.get_running_loop().create_future()
        self.pending.append((record, fut))
        if not self.flushing:
            self.flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        return await fut

    async def _flush(self):
        loop = asyncio.get_running_loop()
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                try:
                    first = await loop.run_in_executor(self.io, self._write,
                                                       [r for r, _ in batch])
                except Exception as e:  # every waiter hears of it; none is answered 202
                    for _, f in batch:
                        f.set_exception(e)
                    continue
                for i, (_, f) in enumerate(batch):
                    f.set_result(first + i)
        finally:
            self.flushing = False

    def _write(self, records):
        fcntl.flock(self.seq_fd, fcntl.LOCK_EX)
        try:
            raw = os.pread(self.seq_fd, 8, 0)
            first = (int.from_bytes(raw, "little") if len(raw) == 8 else 0) + 1
            data = "".join(json.dumps({"seq": first + i, **r}, ensure_ascii=False,
                                      separators=(",", ":")) + "\n"
                           for i, r in enumerate(records)).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
            os.pwrite(self.seq_fd, (first + len(records) - 1).to_bytes(8, "little"), 0)
        finally:
            fcntl.flock(self.seq_fd, fcntl.LOCK_UN)
        os.fsync(self.fd)
        return first


def open_db(path):
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=10000")
    return db


def init_dir(base):
    """Once, in the parent, before the workers start."""
    os.makedirs(base, exist_ok=True)
    db = open_db(os.path.join(base, "tasks.db"))
    db.executescript("""
        CREATE TABLE IF NOT EXISTS tasks (
            task_id TEXT PRIMARY KEY, status TEXT NOT NULL, domain TEXT NOT NULL,
            query TEXT NOT NULL, class_path TEXT, params TEXT NOT NULL,
            user_id TEXT, lane TEXT, result_id TEXT, created_at REAL NOT NULL,
            updated_at REAL NOT NULL);
        CREATE TABLE IF NOT EXISTS results (
            result_id TEXT PRIMARY KEY, task_id TEXT NOT NULL, body TEXT NOT NULL,
            created_at REAL NOT NULL);
    """)
    db.close()
    ledger = os.path.join(base, "ledger.jsonl")
    lines = 0
    if os.path.exists(ledger):
        with open(ledger, "rb") as f:
            lines = sum(1 for _ in f)
    # The counter is a cache of the line count; a crash may leave it behind
    # the file, and a restart recounts.
    with open(ledger + ".seq", "wb") as f:
        f.write(lines.to_bytes(8, "little"))


def build_app():
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    token = os.environ.get("TASKS_TOKEN", "")
    if not token:
        sys.exit("tasks_baseline: set TASKS_TOKEN")
    token_hash = hashlib.sha256(token.encode()).digest()  # only the hash is kept
    del token
    base = os.environ.get("TASKS_BASELINE_DIR", "tasks-baseline")
    kill_path = os.path.join(base, "KILL")
    db = open_db(os.path.join(base, "tasks.db"))
    ledger = Ledger(os.path.join(base, "ledger.jsonl"))
    app = FastAPI()
    background = set()

    def authorised(request):
        auth = request.headers.get("authorization", "")
        given = auth[7:].encode() if auth.startswith("Bearer ") else b""
        return hmac.compare_digest(hashlib.sha256(given).digest(), token_hash)

    def unauthorised():
        return JSONResponse({"error": "unauthorized"}, status_code=401)

    def bad_request(field, reason):
        return JSONResponse({"error": "invalid request", "field": field, "reason": reason},
                            status_code=400)

    async def execute(tid, domain, query):
        """The worker, for misses: run the task, store a result, mark it done."""
        await asyncio.sleep(0)
        db.execute("UPDATE tasks SET status = 'running', updated_at = ? WHERE task_id = ?",
                   (time.time(), tid))
        if domain == "calc" and (value := evaluate(query)) is not None:
            result = {"value": value, "text": str(value)}
        else:
            result = {"text": f"baseline: no {domain} runner; echo: {query}"}
        body = canonical(result).decode()
        rid = "RES_" + base64.b32encode(hashlib.sha256(body.encode()).digest()[:20]) \
            .decode().lower().rstrip("=")
        now = time.time()
        db.execute("INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?)", (rid, tid, body, now))
        db.execute("UPDATE tasks SET status = 'done', result_id = ?, updated_at = ? "
                   "WHERE task_id = ?", (rid, now, tid))
        await ledger.append({"ts": now, "kind": "task.done", "task_id": tid, "result_id": rid})

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    @app.post("/v1/tasks")
    async def submit(request: Request):
        started = time.perf_counter()
        if not authorised(request):  # before the body is even read
            return unauthorised()
        try:
            body = json.loads(await request.body())
        except ValueError as e:
            return bad_request("body", f"not JSON: {e}")
        if not isinstance(body, dict):
            return bad_request("body", "must be a JSON object")
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            return bad_request("query", "must be a non-empty string")
        for field in ("class_path", "user_id", "lane"):
            if body.get(field) is not None and not isinstance(body[field], str):
                return bad_request(field, "must be a string")
        params = body.get("params", {})
        if not isinstance(params, dict):
            return bad_request("params", "must be an object")
        domain = body.get("domain")
        if domain is None:
            domain = classify(query)
            classification = {"domain": domain, "confidence": 0.5, "method": "keyword"}
        elif domain not in DOMAINS:
            return bad_request("domain", f"must be one of {', '.join(DOMAINS)}")
        else:
            classification = {"domain": domain, "confidence": 1.0, "method": "given"}
        query = normalise(query)
        class_path = body.get("class_path")
        tid = task_id(query, domain, class_path, params)

        status, decision = decide(kill_path)
        run = False
        if status is None:
            row = db.execute("SELECT status, result_id FROM tasks WHERE task_id = ?",
                             (tid,)).fetchone()
            if row is None:
                now = time.time()
                cur = db.execute(
                    "INSERT OR IGNORE INTO tasks VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                    (tid, domain, query, class_path, canonical(params).decode(),
                     body.get("user_id"), body.get("lane"), now, now))
                status, run = "queued", cur.rowcount == 1
            elif row[0] == "done" and row[1] is not None:
                status = "cache_hit"
            else:
                status = row[0]
        seq = await ledger.append({
            "ts": time.time(), "kind": "task.submit", "task_id": tid, "domain": domain,
            "status": status, "decision": decision["outcome"], "level": decision["level"],
            "user_id": body.get("user_id"), "lane": body.get("lane")})
        if run:  # only once the submit is durable
            t = asyncio.get_running_loop().create_task(execute(tid, domain, query))
            background.add(t)
            t.add_done_callback(background.discard)
        return JSONResponse({
            "task_id": tid, "status": status, "domain": domain,
            "classification": classification, "policy_decision": decision,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3), "ledger_seq": seq,
        }, status_code=202)

    @app.get("/v1/tasks/{tid}")
    async def get_task(tid: str, request: Request):
        if not authorised(request):
            return unauthorised()
        row = db.execute(
            "SELECT t.task_id, t.status, t.domain, t.query, t.class_path, t.params, t.user_id, "
            "t.lane, t.result_id, t.created_at, t.updated_at, r.body FROM tasks t "
            "LEFT JOIN results r ON r.result_id = t.result_id WHERE t.task_id = ?",
            (tid,)).fetchone()
        if row is None:
            return JSONResponse({"error": "not found", "task_id": tid}, status_code=404)
        return {"task_id": row[0], "status": row[1], "domain": row[2], "query": row[3],
                "class_path": row[4], "params": json.loads(row[5]), "user_id": row[6],
                "lane": row[7], "result_id": row[8], "created_at": row[9],
                "updated_at": row[10], "result": json.loads(row[11]) if row[11] else None}

    return app


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "setup":
        setup(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "serve":
        import uvicorn
        init_dir(os.environ.get("TASKS_BASELINE_DIR", "tasks-baseline"))
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        uvicorn.run("tasks_baseline:build_app", factory=True, host="127.0.0.1",
                    port=int(sys.argv[2]), workers=int(os.environ.get("TASKS_WORKERS", "2")),
                    log_level="warning", access_log=False)
    else:
        sys.exit("usage: tasks_baseline.py setup VENV | serve PORT")
