"""Schemathesis hooks for the Capsule run (loaded through SCHEMATHESIS_HOOKS).

The remote planners ("openai", "anthropic") call a provider over the
network with a key from the environment; CI has neither, and a failing
upstream is answered 502 planner_failed by design (the fault is not the
client's). A think that names one is sent with the hash planner instead, so
the run checks Capsule and not the reachability of a third party.
"""

import schemathesis

REMOTE_PLANNERS = ("openai", "anthropic")


@schemathesis.hook
def before_call(context, case, kwargs):
    body = case.body
    if isinstance(body, dict) and body.get("planner") in REMOTE_PLANNERS:
        body["planner"] = "hash"
        if isinstance(kwargs.get("json"), dict):
            kwargs["json"]["planner"] = "hash"
