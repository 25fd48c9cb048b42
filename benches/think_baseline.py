#!/usr/bin/env python3
"""A baseline for `capsule bench`-style comparisons of `POST /v1/think`.

This is NOT Capsule. It is a deliberately small FastAPI + NumPy service doing
the same work per request as Capsule's think endpoint, so that
`think_bench.sh` can put Capsule's throughput and latency next to what a
straightforward Python implementation achieves on the same machine:

  auth     `Authorization: Bearer <THINK_TOKEN>`, constant-time compare, 401 otherwise
  planner  SHA-256 of the text -> 60 values in [-1, 1], scaled to unit norm (gw);
           measure = lowest bit of the digest unless the request gives it
  critic   len(gw) <= 60 and every |x| <= 10 (finite), 400 {"error","field","reason"} otherwise
  kernel   one adaptive Lindblad step at d = 64, as crates/kernel does it:
           H = H0 + sum_j gw_j G_j, relaxation and dephasing jumps, degree-6
           Taylor step, step doubling (dt vs two dt/2, error in trace norm),
           trace renormalisation, observables, optional measurement; one global
           state behind a lock
  ledger   one JSON line per request, flushed and fsync'ed before the reply

The random matrices come from NumPy's generator, not Capsule's ChaCha20
streams, so the numbers differ from Capsule's; the amount of work does not.

  python3 think_baseline.py setup VENV   create VENV once (fastapi, uvicorn, numpy); print its python
  PY think_baseline.py serve PORT        serve on 127.0.0.1:PORT (uvicorn, one worker)

Environment: THINK_TOKEN (required to serve), THINK_BASELINE_LEDGER (the log
file, default ./think-baseline-ledger.jsonl).
"""
import hashlib
import hmac
import json
import math
import os
import subprocess
import sys
import threading
import venv

PACKAGES = ["fastapi", "uvicorn[standard]", "numpy"]


def setup(path):
    py = os.path.join(path, "bin", "python")
    if not os.path.exists(py):
        venv.create(path, with_pip=True)
    probe = subprocess.run([py, "-c", "import fastapi, uvicorn, numpy, httptools, uvloop"],
                           capture_output=True)
    if probe.returncode != 0:
        subprocess.run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        *PACKAGES], check=True, stdout=sys.stderr)
    print(py)


# Kernel constants, as KernelConfig::default() in crates/kernel/src/kernel.rs.
DIM, WORKSPACE_DIM, SEED = 64, 60, 0
RELAXATION, DEPHASING = 0.05, 0.1
TOLERANCE, DT_INITIAL, DT_MIN, DT_MAX, DEGREE = 1e-8, 0.05, 1e-6, 0.5, 6
MAX_ATTEMPTS = 64
VALIDITY_TOL, PROJECTION_FLOOR, PROJECTION_LIMIT = 1e-9, 1e-13, 1e-6
MAX_WORKSPACE_VALUE = 10.0


def plan(text, measure=None):
    """The hash planner: a deterministic plan from the text alone."""
    digest = hashlib.sha256(text.encode()).digest()
    # 60 bytes from SHA-256 in counter mode over the digest, each to [-1, 1].
    stream = b"".join(hashlib.sha256(digest + bytes([i])).digest() for i in range(2))
    gw = [b / 127.5 - 1.0 for b in stream[:WORKSPACE_DIM]]
    norm = math.sqrt(sum(x * x for x in gw)) or 1.0
    gw = [x / norm for x in gw]
    if measure is None:
        measure = bool(digest[-1] & 1)
    op = "brain.measure" if measure else "brain.step"
    rationale = f"hash planner: sha256 {digest.hex()[:16]} -> unit workspace of {len(gw)}; {op}"
    return {"gw": gw, "measure": measure, "op": op, "rationale": rationale}


def critic(gw):
    """None when the plan is acceptable, else (field, reason)."""
    if len(gw) > WORKSPACE_DIM:
        return "global_workspace", f"has {len(gw)} values; at most {WORKSPACE_DIM} are allowed"
    for j, x in enumerate(gw):
        if not math.isfinite(x) or abs(x) > MAX_WORKSPACE_VALUE:
            return f"global_workspace[{j}]", f"{x} is outside [-10, 10]"
    return None


class Kernel:
    """One density matrix stepped as crates/kernel's Kernel::step does."""

    def __init__(self, np, d=DIM, seed=SEED):
        self.np, self.d = np, d
        rng = np.random.default_rng(seed)
        a = rng.standard_normal((d, d)) + 1j * rng.standard_normal((d, d))
        self.h0 = (a + a.conj().T) * (0.25 / np.sqrt(d))
        # Sparse generators (d couplings of magnitude 1/2 each), stored dense so
        # H = H0 + sum gw_j G_j is one tensordot.
        self.gens = np.zeros((WORKSPACE_DIM, d, d), dtype=complex)
        for j in range(WORKSPACE_DIM):
            for _ in range(d):
                p, q = rng.integers(d), rng.integers(d)
                v = 0.5 * np.exp(1j * rng.uniform(0, 2 * np.pi))
                if p == q:
                    self.gens[j, p, p] += 2 * v.real
                else:
                    self.gens[j, p, q] += v
                    self.gens[j, q, p] += np.conj(v)
        self.ls = [np.diag(np.full(d - 1, np.sqrt(RELAXATION)), 1).astype(complex),
                   np.diag(np.sqrt(DEPHASING) * np.arange(d) / (d - 1)).astype(complex)]
        self.ldl = sum(l.conj().T @ l for l in self.ls)
        self.rho = np.zeros((d, d), dtype=complex)
        self.rho[0, 0] = 1.0
        self.step_count, self.t, self.dt = 0, 0.0, DT_INITIAL
        self.lock = threading.Lock()

    def _step_raw(self, g, rho, dt):
        np, ls = self.np, self.ls

        def gen(x):
            gx = g @ x
            return gx + gx.conj().T + sum(l @ x @ l.conj().T for l in ls)

        term, total = rho, rho.copy()
        for n in range(1, DEGREE + 1):
            term = gen(term) * (dt / n)
            total = total + term
        return total

    def _finalize(self, x):
        np = self.np
        tr = np.trace(x).real
        if math.isfinite(tr) and tr > 0:
            x = x / tr
        eig = np.linalg.eigvalsh(x)
        if -PROJECTION_LIMIT <= eig[0] < -PROJECTION_FLOOR:  # clip, renormalise
            w, u = np.linalg.eigh(x)
            w = np.clip(w, 0, None)
            x = (u * (w / w.sum())) @ u.conj().T
            x = (x + x.conj().T) / 2
            eig = np.linalg.eigvalsh(x)
        pos = eig[eig > 0]
        obs = {"entropy": max(float(-(pos * np.log(pos)).sum()), 0.0),
               "purity": float(np.vdot(x, x).real),
               "trace_error": float(abs(np.trace(x).real - 1.0))}
        valid = (obs["trace_error"] <= VALIDITY_TOL
                 and float(np.abs(x - x.conj().T).max()) <= VALIDITY_TOL
                 and eig[0] >= -VALIDITY_TOL and math.isfinite(obs["entropy"]))
        return x, obs, bool(valid)

    def step(self, gw, measure):
        np = self.np
        with self.lock:
            h = self.h0 + np.tensordot(np.asarray(gw), self.gens[:len(gw)], axes=1)
            g = -1j * h - 0.5 * self.ldl
            rejected = 0
            while True:
                dt = self.dt
                full = self._step_raw(g, self.rho, dt)
                two_halves = self._step_raw(g, self._step_raw(g, self.rho, dt / 2), dt / 2)
                err = float(np.abs(np.linalg.eigvalsh(full - two_halves)).sum())
                if not err <= TOLERANCE and dt > DT_MIN and rejected < MAX_ATTEMPTS:
                    self.dt = max(dt / 2, DT_MIN)
                    rejected += 1
                    continue
                if err < TOLERANCE / 10:
                    self.dt = min(dt * 2, DT_MAX)
                break
            x, obs, valid = self._finalize(two_halves)
            out = {**obs, "valid": valid, "measured_state": None,
                   "step": self.step_count + 1, "t": self.t + dt, "dt": dt}
            if not valid:  # Capsule halts here; the baseline keeps the old state
                return out
            self.rho, self.step_count, self.t = x, self.step_count + 1, self.t + dt
            if measure:
                p = np.clip(self.rho.diagonal().real, 0, None)
                rng = np.random.default_rng([SEED, self.step_count])
                i = int(min(np.searchsorted(np.cumsum(p), rng.random() * p.sum(), side="right"),
                            self.d - 1))
                self.rho = np.zeros_like(self.rho)
                self.rho[i, i] = 1.0
                out["measured_state"] = i
            return out


class Ledger:
    """Append-only JSON lines, each flushed and fsync'ed before it counts."""

    def __init__(self, path):
        self.lock = threading.Lock()
        self.f = open(path, "a+", encoding="utf-8")
        self.f.seek(0)
        self.seq = sum(1 for _ in self.f)

    def append(self, record):
        with self.lock:
            self.seq += 1
            self.f.write(json.dumps({"seq": self.seq, **record}) + "\n")
            self.f.flush()
            os.fsync(self.f.fileno())
            return self.seq


def build_app():
    import numpy as np
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse

    token = os.environ.get("THINK_TOKEN", "").encode()
    if not token:
        sys.exit("think_baseline: set THINK_TOKEN")
    kernel = Kernel(np)
    ledger = Ledger(os.environ.get("THINK_BASELINE_LEDGER", "think-baseline-ledger.jsonl"))
    app = FastAPI()

    def bad_request(field, reason, error="invalid request"):
        return JSONResponse({"error": error, "field": field, "reason": reason}, status_code=400)

    def step_and_log(text, p):  # blocking: NumPy and fsync, in the thread pool
        result = kernel.step(p["gw"], p["measure"])
        seq = ledger.append({"text": text, "plan": p, "result": result})
        return {**result, "op": p["op"], "rationale": p["rationale"], "ledger_seq": seq}

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    @app.post("/v1/think")
    async def think(request: Request):
        auth = request.headers.get("authorization", "")
        given = auth[7:].encode() if auth.startswith("Bearer ") else b""
        if not hmac.compare_digest(given, token):  # before the body is even read
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        try:
            body = json.loads(await request.body())
        except ValueError as e:
            return bad_request("body", f"not JSON: {e}")
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            return bad_request("text", "must be a string")
        measure = body.get("measure")
        if measure is not None and not isinstance(measure, bool):
            return bad_request("measure", "must be a boolean")
        p = plan(body["text"], measure)
        bad = critic(p["gw"])
        if bad:
            return bad_request(*bad, error="rejected by critic")
        return await run_in_threadpool(step_and_log, body["text"], p)

    return app


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "setup":
        setup(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "serve":
        import uvicorn
        uvicorn.run(build_app(), host="127.0.0.1", port=int(sys.argv[2]), workers=1,
                    log_level="warning", access_log=False)
    else:
        sys.exit("usage: think_baseline.py setup VENV | serve PORT")
