#!/usr/bin/env python3
"""Third-party gRPC client test for Capsule.

Generates Python stubs from proto/capsule/brain/v1/brain.proto with grpcio-tools
at run time (someone else's tooling, not the server's), starts `capsule up` on a
fresh data directory and drives the BrainAI service, the standard health
service and server reflection through them.

Usage: python3 tests/grpc/client_test.py [CAPSULE_BINARY]
(binary: argv[1], else $CAPSULE, else target/debug/capsule; run from the repo
root, or anywhere: the proto path is found relative to this file).

Prints one "ok: ..." line per check and exits non-zero at the first failure.
"""

import json
import math
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PROTO_ROOT = os.path.join(REPO, "proto")
PROTO_FILE = os.path.join(PROTO_ROOT, "capsule", "brain", "v1", "brain.proto")
SERVICE = "capsule.brain.v1.BrainAI"
HEALTH_SERVICE = "grpc.health.v1.Health"
RPC_TIMEOUT = 15.0


class CheckFailed(Exception):
    pass


def ok(msg):
    print(f"ok: {msg}", flush=True)


def check(cond, msg):
    if not cond:
        raise CheckFailed(msg)
    ok(msg)


def run_cli(binary, *args):
    """Run a capsule subcommand; return stdout, fail with its stderr on a non-zero exit."""
    proc = subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise CheckFailed(
            f"`capsule {' '.join(args)}` exited {proc.returncode}\n"
            f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}"
        )
    return proc.stdout


def generate_stubs(out_dir):
    from grpc_tools import protoc  # noqa: F401  (fail early with a clear import error)

    os.makedirs(out_dir, exist_ok=True)

    cmd = [
        sys.executable, "-m", "grpc_tools.protoc",
        "-I", PROTO_ROOT,
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        PROTO_FILE,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CheckFailed(f"grpc_tools.protoc failed ({proc.returncode}): {proc.stderr.strip()}")
    sys.path.insert(0, out_dir)
    from capsule.brain.v1 import brain_pb2, brain_pb2_grpc

    ok(f"generated Python stubs from {os.path.relpath(PROTO_FILE, REPO)} with grpcio-tools")
    return brain_pb2, brain_pb2_grpc


class Server:
    """`capsule up` as a subprocess; stdout is read by a thread into a queue."""

    def __init__(self, binary, data_dir):
        self.proc = subprocess.Popen(
            [binary, "up", "--data", data_dir,
             "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--metrics", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.lines = queue.Queue()
        self.stdout_log = []
        self.stderr_log = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout_log, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr_log, False), daemon=True).start()

    def _pump(self, stream, log, to_queue):
        for line in stream:
            log.append(line.rstrip("\n"))
            if to_queue:
                self.lines.put(line.rstrip("\n"))
        if to_queue:
            self.lines.put(None)

    def wait_ready(self, timeout=60.0):
        addrs = {}
        deadline = time.monotonic() + timeout
        pat = re.compile(r"^(http|grpc|metrics) listening on (\S+)")
        while len(addrs) < 3:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CheckFailed(f"server not ready within {timeout:.0f}s; got {addrs}\n{self.logs()}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait(timeout=5)
                raise CheckFailed(f"server exited ({self.proc.returncode}) before it was ready\n{self.logs()}")
            m = pat.search(line.strip())
            if m:
                addrs[m.group(1)] = m.group(2)
        return addrs

    def logs(self):
        return ("server stdout:\n  " + "\n  ".join(self.stdout_log[-40:]) +
                "\nserver stderr:\n  " + "\n  ".join(self.stderr_log[-40:]))

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


def meta(token):
    return (("authorization", f"Bearer {token}"),)


def expect_rpc_error(grpc, fn, code, what, detail_contains=None):
    try:
        fn()
    except grpc.RpcError as e:
        got = e.code()
        details = e.details() or ""
        if got != code:
            raise CheckFailed(f"{what}: expected {code.name}, got {got.name}: {details!r}")
        if detail_contains is not None and detail_contains not in details:
            raise CheckFailed(f"{what}: {code.name} details {details!r} do not mention {detail_contains!r}")
        ok(f"{what} -> {code.name} ({details})")
        return e
    raise CheckFailed(f"{what}: expected {code.name}, but the call succeeded")


def list_services_via_reflection(grpc, channel, token):
    """List services with server reflection v1.

    grpcio-reflection ships only v1alpha stubs; the v1 messages are wire-identical,
    so the v1alpha message types are sent to the v1 method path.
    """
    from grpc_reflection.v1alpha import reflection_pb2 as rpb

    def ask(method):
        call = channel.stream_stream(
            method,
            request_serializer=rpb.ServerReflectionRequest.SerializeToString,
            response_deserializer=rpb.ServerReflectionResponse.FromString,
        )
        req = rpb.ServerReflectionRequest(host="", list_services="")
        replies = list(call(iter([req]), metadata=meta(token), timeout=RPC_TIMEOUT))
        if len(replies) != 1:
            raise CheckFailed(f"reflection {method}: expected 1 reply, got {len(replies)}")
        r = replies[0]
        if r.HasField("error_response"):
            raise CheckFailed(
                f"reflection {method}: error {r.error_response.error_code}: {r.error_response.error_message}")
        if not r.HasField("list_services_response"):
            raise CheckFailed(f"reflection {method}: no list_services_response in {r}")
        return [s.name for s in r.list_services_response.service]

    return ask("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")


def run_checks(binary, work):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    brain_pb2, brain_pb2_grpc = generate_stubs(os.path.join(work, "stubs"))

    data_dir = os.path.join(work, "data")
    init = json.loads(run_cli(binary, "init", data_dir, "--json"))
    operator = init["operator_token"]
    check(bool(operator) and os.path.isdir(init["data_dir"]), f"capsule init {init['data_dir']}")
    agent_j = json.loads(run_cli(binary, "tokens", "add", "--data", data_dir, "--role", "agent", "--name", "py", "--json"))
    check(agent_j.get("role") == "agent" and agent_j.get("name") == "py" and agent_j.get("token"),
          "capsule tokens add agent token 'py'")
    agent = agent_j["token"]
    reader_j = json.loads(run_cli(binary, "tokens", "add", "--data", data_dir, "--role", "reader", "--name", "viewer", "--json"))
    check(reader_j.get("role") == "reader" and reader_j.get("token"), "capsule tokens add reader token 'viewer'")
    reader = reader_j["token"]

    server = Server(binary, data_dir)
    try:
        addrs = server.wait_ready(60.0)
        grpc_addr = addrs["grpc"]
        ok(f"capsule up ready: grpc {grpc_addr}, http {addrs['http']}, metrics {addrs['metrics']}")

        channel = grpc.insecure_channel(grpc_addr)
        try:
            grpc.channel_ready_future(channel).result(timeout=20)
        except grpc.FutureTimeoutError:
            raise CheckFailed(f"gRPC channel to {grpc_addr} not ready in 20s")
        ok("gRPC channel connected")

        health = health_pb2_grpc.HealthStub(channel)
        for svc in ("", SERVICE):
            r = health.Check(health_pb2.HealthCheckRequest(service=svc), metadata=meta(agent), timeout=RPC_TIMEOUT)
            check(r.status == health_pb2.HealthCheckResponse.SERVING,
                  f"Health.Check({svc!r}) -> {health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)}")

        services = list_services_via_reflection(grpc, channel, agent)
        for want in (SERVICE, HEALTH_SERVICE):
            if want not in services:
                raise CheckFailed(f"reflection v1 list_services lacks {want}: {services}")
        ok(f"reflection v1 list_services: {sorted(services)}")

        stub = brain_pb2_grpc.BrainAIStub(channel)

        st = stub.GetState(brain_pb2.GetStateRequest(), metadata=meta(agent), timeout=RPC_TIMEOUT)
        check(st.dimension == 64 and st.step == 0,
              f"GetState: dimension {st.dimension}, step {st.step}, valid {st.is_valid}, purity {st.purity:.6f}")

        gw = [1.0 / math.sqrt(60)] * 60
        r1 = stub.Step(brain_pb2.StepRequest(global_workspace=gw, measure=False), metadata=meta(agent), timeout=RPC_TIMEOUT)
        if not (r1.is_valid and r1.step == 1 and r1.trace_error < 1e-9 and not r1.HasField("measured_state")
                and r1.ledger_seq > 0):
            raise CheckFailed(f"Step(measure=False) reply unexpected: {r1}")
        ok(f"Step(measure=False): valid, step {r1.step}, trace_error {r1.trace_error:.3g}, "
           f"no measured_state, ledger_seq {r1.ledger_seq}, entropy {r1.entropy:.6f}")

        r2 = stub.Step(brain_pb2.StepRequest(global_workspace=gw, measure=True), metadata=meta(agent), timeout=RPC_TIMEOUT)
        if not (r2.HasField("measured_state") and 0 <= r2.measured_state < 64 and r2.step == 2 and r2.is_valid):
            raise CheckFailed(f"Step(measure=True) reply unexpected: {r2}")
        ok(f"Step(measure=True): step {r2.step}, measured_state {r2.measured_state}, ledger_seq {r2.ledger_seq}")

        # StreamSteps(limit=2) in a background thread while this thread steps twice.
        stream_result = {"replies": [], "error": None}
        subscribed = threading.Event()

        def consume():
            try:
                call = stub.StreamSteps(brain_pb2.StreamStepsRequest(limit=2), metadata=meta(reader), timeout=60)
                # Headers arrive once the server accepted the stream (its subscription is live).
                call.initial_metadata()
                subscribed.set()
                for rep in call:
                    stream_result["replies"].append(rep)
            except Exception as e:  # noqa: BLE001
                stream_result["error"] = e
            finally:
                subscribed.set()

        t = threading.Thread(target=consume, daemon=True)
        t.start()
        subscribed.wait(20)
        time.sleep(0.3)  # let the subscription settle even if headers came early
        if stream_result["error"] is not None:
            raise CheckFailed(f"StreamSteps failed before any step: {stream_result['error']}")
        r3 = stub.Step(brain_pb2.StepRequest(global_workspace=gw), metadata=meta(agent), timeout=RPC_TIMEOUT)
        r4 = stub.Step(brain_pb2.StepRequest(global_workspace=gw), metadata=meta(agent), timeout=RPC_TIMEOUT)
        t.join(30)
        if t.is_alive():
            raise CheckFailed(f"StreamSteps(limit=2) did not end within 30s; got {len(stream_result['replies'])} replies")
        if stream_result["error"] is not None:
            e = stream_result["error"]
            detail = f"{e.code().name}: {e.details()}" if isinstance(e, grpc.RpcError) else repr(e)
            raise CheckFailed(f"StreamSteps(limit=2) failed: {detail}")
        got = [rep.step for rep in stream_result["replies"]]
        check(got == [r3.step, r4.step] == [3, 4],
              f"StreamSteps(limit=2) yielded steps {got} matching Step replies {[r3.step, r4.step]}, then ended")

        expect_rpc_error(grpc, lambda: stub.DumpState(brain_pb2.DumpStateRequest(), metadata=meta(agent), timeout=RPC_TIMEOUT),
                         grpc.StatusCode.PERMISSION_DENIED, "DumpState with agent token")
        d = stub.DumpState(brain_pb2.DumpStateRequest(), metadata=meta(operator), timeout=RPC_TIMEOUT)
        check(len(d.snapshot) > 0 and d.step == 4,
              f"DumpState with operator token: {len(d.snapshot)}-byte snapshot at step {d.step}")

        expect_rpc_error(grpc, lambda: stub.GetState(brain_pb2.GetStateRequest(), timeout=RPC_TIMEOUT),
                         grpc.StatusCode.UNAUTHENTICATED, "GetState without token")
        expect_rpc_error(grpc, lambda: stub.GetState(brain_pb2.GetStateRequest(), metadata=meta("not-a-real-token"),
                                                     timeout=RPC_TIMEOUT),
                         grpc.StatusCode.UNAUTHENTICATED, "GetState with unknown token")
        expect_rpc_error(grpc, lambda: stub.Step(brain_pb2.StepRequest(global_workspace=[0.1] * 61), metadata=meta(agent),
                                                 timeout=RPC_TIMEOUT),
                         grpc.StatusCode.INVALID_ARGUMENT, "Step with 61 values", detail_contains="gw")
        expect_rpc_error(grpc, lambda: stub.Step(brain_pb2.StepRequest(global_workspace=gw), metadata=meta(reader),
                                                 timeout=RPC_TIMEOUT),
                         grpc.StatusCode.PERMISSION_DENIED, "Step with reader token")

        st = stub.GetState(brain_pb2.GetStateRequest(), metadata=meta(reader), timeout=RPC_TIMEOUT)
        check(st.step == 4 and st.is_valid, f"GetState after the refused calls: step {st.step} (refused calls did not step)")

        channel.close()

        server.proc.send_signal(signal.SIGTERM)
        try:
            rc = server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"server did not exit within 30s of SIGTERM\n{server.logs()}")
        if rc != 0:
            raise CheckFailed(f"server exited {rc} after SIGTERM (want 0)\n{server.logs()}")
        ok("SIGTERM -> server exited 0")
    finally:
        server.kill()

    out = run_cli(binary, "audit", "verify", os.path.join(data_dir, "ledger"))
    ok(f"capsule audit verify {os.path.join(data_dir, 'ledger')}: {out.strip().splitlines()[-1] if out.strip() else 'exit 0'}")


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CAPSULE") or os.path.join(REPO, "target", "debug", "capsule")
    binary = os.path.abspath(binary)
    if not os.access(binary, os.X_OK):
        print(f"FAIL: capsule binary not found or not executable: {binary}", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="capsule-grpc-test-")
    try:
        run_checks(binary, work)
    except CheckFailed as e:
        print(f"FAIL: {e}", file=sys.stderr, flush=True)
        return 1
    except Exception as e:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        print(f"FAIL: unexpected {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("all gRPC client checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
