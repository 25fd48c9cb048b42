#!/usr/bin/env python3
"""Schemathesis against `capsule up`, over the document the service serves.

Starts `capsule up` on a fresh data directory (loopback, free ports, the hash
embedder and hash planner so no model is needed, no rate limit), then runs
the schemathesis CLI against http://ADDR/openapi.json with the operator token
and the checks

    not_a_server_error          no 5xx for any input
    status_code_conformance     every status is one the document lists
    content_type_conformance    every body has a documented media type
    response_schema_conformance every body matches its documented schema

over every operation, in the examples, coverage and fuzzing phases. The
run may arm the kill switch or change the mode; the answers that follow are
documented 4xx. Stops the service with SIGTERM and exits with schemathesis's
status (non-zero on any failure), or 1 if the service fails.

Usage: fuzz_api.py CAPSULE_BINARY SCHEMATHESIS_CLI
Environment: CAPSULE_SCHEMATHESIS_EXAMPLES (default 100) examples per
operation; CAPSULE_SCHEMATHESIS_SEED (default 1) for a reproducible run.
"""

import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time



def run_cli(binary, *args):
    proc = subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        sys.exit(f"`capsule {' '.join(args)}` exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def start_server(binary, data_dir):
    env = dict(os.environ)
    env.update({
        "CAPSULE_MEMORY__EMBEDDER": "hash",
        "CAPSULE_LLM__PLANNER": "hash",
        # 0 = no limit: the fuzzer sends far more than 120 requests a minute.
        "CAPSULE_AUTH__RATE_LIMIT_PER_MINUTE": "0",
        "CAPSULE_KERNEL__DIM": "8",
        # The remote planners read their keys from variables that are never
        # set here, so a think naming one is refused (400, field planner)
        # instead of calling a provider over the network.
        "CAPSULE_LLM__OPENAI__KEY_ENV": "CAPSULE_SCHEMATHESIS_NO_OPENAI_KEY",
        "CAPSULE_LLM__ANTHROPIC__KEY_ENV": "CAPSULE_SCHEMATHESIS_NO_ANTHROPIC_KEY",
    })
    env.pop("CAPSULE_SCHEMATHESIS_NO_OPENAI_KEY", None)
    env.pop("CAPSULE_SCHEMATHESIS_NO_ANTHROPIC_KEY", None)
    proc = subprocess.Popen(
        [binary, "up", "--data", data_dir,
         "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--metrics", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, env=env,
    )
    lines = queue.Queue()
    log = []

    def pump(stream, to_queue):
        for line in stream:
            log.append(line.rstrip("\n"))
            if to_queue:
                lines.put(line)
        if to_queue:
            lines.put(None)

    threading.Thread(target=pump, args=(proc.stdout, True), daemon=True).start()
    threading.Thread(target=pump, args=(proc.stderr, False), daemon=True).start()
    deadline = time.monotonic() + 60
    pat = re.compile(r"^http listening on (\S+)")
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        if line is None:
            break
        m = pat.search(line.strip())
        if m:
            return proc, m.group(1), log
    proc.kill()
    sys.exit("capsule up did not report its HTTP address:\n  " + "\n  ".join(log[-40:]))


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    binary, cli = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    examples = os.environ.get("CAPSULE_SCHEMATHESIS_EXAMPLES", "100")
    seed = os.environ.get("CAPSULE_SCHEMATHESIS_SEED", "1")
    with tempfile.TemporaryDirectory(prefix="capsule-schemathesis-") as tmp:
        data_dir = os.path.join(tmp, "data")
        token = json.loads(run_cli(binary, "init", data_dir, "--json"))["operator_token"]
        proc, addr, log = start_server(binary, data_dir)
        try:
            env = dict(os.environ)
            env["PYTHONDONTWRITEBYTECODE"] = "1"
            cmd = [
                cli, "run", f"http://{addr}/openapi.json",
                "--header", f"Authorization: Bearer {token}",
                "--checks", "not_a_server_error,status_code_conformance,"
                            "content_type_conformance,response_schema_conformance",
                "--phases", "examples,coverage,fuzzing",
                "--max-examples", examples,
                "--seed", seed,
                # One worker: with two, Hypothesis's lambda-source cache
                # (shared between threads) can fail with "AST constructor
                # recursion depth mismatch", an error of the tool, not of
                # the service.
                "--workers", "1",
                "--request-timeout", "30",
                "--suppress-health-check", "all",
                "--output-sanitize", "true",
            ]
            print("running:", " ".join(c if "Bearer" not in c else "Authorization: Bearer ***" for c in cmd),
                  flush=True)
            rc = subprocess.run(cmd, env=env, cwd=tmp).returncode
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = "killed after 30 s"
        if code != 0:
            print(f"capsule up exited {code}:\n  " + "\n  ".join(log[-40:]), file=sys.stderr)
            rc = rc or 1
        sys.exit(rc)


if __name__ == "__main__":
    main()
