#!/usr/bin/env python3
"""NumPy and QuTiP references for `capsule bench kernel`.

`python3 kernel_reference.py setup VENV` creates VENV (once) with numpy,
scipy and qutip and prints its interpreter path. `PY kernel_reference.py
serve` answers one JSON request per stdin line with one JSON reply per line,
so the Rust runner can interleave its own timings with these.

Requests (every op times `reps` calls and replies with the median in ns):
  {"op": "kraus",    "d": D, "k": K, "reps": N}   sum(K @ rho @ K^H)
  {"op": "entropy",  "d": D, "reps": N}           -sum(l log l), l = eigvalsh(rho)
  {"op": "lindblad", "d": D, "dt": DT, "degree": M, "reps": N}
        the kernel's Lindblad step written in NumPy: M Taylor terms of the
        generator, trace renormalisation, eigvalsh for the validity check
  {"op": "zgemm",    "d": D, "reps": N}           A @ B (peak GFLOP/s probe)
  {"op": "evolve",   "problem": PATH, "reps": N}  QuTiP mesolve, see below
"""
import json
import os
import subprocess
import sys
import time
import venv


def setup(path):
    py = os.path.join(path, "bin", "python")
    if not os.path.exists(py):
        venv.create(path, with_pip=True)
    probe = subprocess.run([py, "-c", "import numpy, scipy, qutip"], capture_output=True)
    if probe.returncode != 0:
        subprocess.run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "numpy", "scipy", "qutip"], check=True, stdout=sys.stderr)
    print(py)


WARMUP_S = 0.15  # untimed runs first, as the Rust side does (see bench.rs WARMUP)


def median_ns(fn, reps):
    start = time.perf_counter()
    while time.perf_counter() - start < WARMUP_S:
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    times.sort()
    return times[len(times) // 2]


def serve():
    import warnings
    warnings.filterwarnings("ignore")
    import numpy as np

    rng = np.random.default_rng(2026)

    def gaussian(*shape):
        return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)

    def state(d):
        a = gaussian(d, d)
        rho = a @ a.conj().T
        return rho / np.trace(rho).real

    def kraus_set(d, k):
        q, _ = np.linalg.qr(gaussian(k * d, d))
        return [q[i * d:(i + 1) * d] for i in range(k)]

    def entropy(rho):
        w = np.linalg.eigvalsh(rho)
        w = w[w > 0]
        return float(-(w * np.log(w)).sum())

    def handle(req):
        op, reps = req["op"], int(req.get("reps", 10))
        if op == "kraus":
            rho, ks = state(req["d"]), kraus_set(req["d"], req.get("k", 4))
            return {"median_ns": median_ns(lambda: sum(K @ rho @ K.conj().T for K in ks), reps)}
        if op == "entropy":
            rho = state(req["d"])
            return {"median_ns": median_ns(lambda: entropy(rho), reps)}
        if op == "zgemm":
            a, b = gaussian(req["d"], req["d"]), gaussian(req["d"], req["d"])
            return {"median_ns": median_ns(lambda: a @ b, reps)}
        if op == "lindblad":
            d, dt, degree = req["d"], req["dt"], req["degree"]
            a = gaussian(d, d)
            h = (a + a.conj().T) * (0.25 / np.sqrt(d))
            ls = [np.diag(np.full(d - 1, np.sqrt(0.05)), 1).astype(complex),
                  np.diag(np.sqrt(0.1) * np.arange(d) / (d - 1)).astype(complex)]
            g = -1j * h - 0.5 * sum(l.conj().T @ l for l in ls)
            rho = state(d)

            def gen(x):
                gx = g @ x
                return gx + gx.conj().T + sum(l @ x @ l.conj().T for l in ls)

            def step():
                term, total = rho, rho.copy()
                for n in range(1, degree + 1):
                    term = gen(term) * (dt / n)
                    total = total + term
                total = total / np.trace(total).real
                np.linalg.eigvalsh(total)
                return total

            return {"median_ns": median_ns(step, reps)}
        if op == "evolve":
            return evolve(req, reps)
        raise ValueError(f"unknown op {op!r}")

    def evolve(req, reps):
        import qutip
        with open(req["problem"]) as f:
            p = json.load(f)
        mat = lambda m: np.array(m["re"]) + 1j * np.array(m["im"])
        h, rho0, t = mat(p["hamiltonian"]), mat(p["rho"]), p["t"]
        ls = [mat(m) for m in p["jump_ops"]]
        H, R, C = qutip.Qobj(h), qutip.Qobj(rho0), [qutip.Qobj(l) for l in ls]

        def solve(atol, rtol):
            opts = {"matrix_form": True, "atol": atol, "rtol": rtol, "store_states": False,
                    "store_final_state": True, "progress_bar": ""}
            return qutip.mesolve(H, R, [0.0, t], C, options=opts).final_state.full()

        exact = solve(1e-14, 1e-13)
        # The loosest tolerance ladder step whose error is within the target.
        target = p.get("target_error", 1e-8)
        for atol, rtol in [(1e-8, 1e-6), (1e-9, 1e-7), (1e-10, 1e-8), (1e-11, 1e-9), (1e-12, 1e-10)]:
            err = float(np.abs(solve(atol, rtol) - exact).max())
            if err <= target:
                break
        ns = median_ns(lambda: solve(atol, rtol), reps)
        ours = mat(p["capsule_result"])
        return {"median_ns": ns, "reference_error": err, "capsule_error": float(np.abs(ours - exact).max()),
                "qutip": qutip.__version__, "atol": atol, "rtol": rtol}

    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            reply = handle(json.loads(line))
        except Exception as e:  # reported to the runner, which names the request
            reply = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "setup":
        setup(sys.argv[2])
    elif len(sys.argv) == 2 and sys.argv[1] == "serve":
        serve()
    else:
        sys.exit("usage: kernel_reference.py setup VENV | serve")
