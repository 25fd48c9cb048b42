//! The OpenAPI 3.1 document served at `/openapi.json`, built from one
//! route table (which is also the documentation of the roles each route
//! needs), and a docs page that renders it without any external script.

use serde_json::{json, Value};

/// One route: method, path (OpenAPI form), roles, summary, request schema.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub roles: &'static str,
    pub summary: &'static str,
    pub body: Option<&'static str>,
}

const fn r(
    method: &'static str,
    path: &'static str,
    roles: &'static str,
    summary: &'static str,
    body: Option<&'static str>,
) -> Route {
    Route {
        method,
        path,
        roles,
        summary,
        body,
    }
}

pub const ROUTES: &[Route] = &[
    r("post", "/v1/think", "agent, operator", "Think: plan, critic, policy, kernel step, memory, audit. Reply has entropy, measured_state, trace_error, valid, rationale, recall (top-k earlier thinks with scores), decision and ledger_seq. 400 critic_rejected names the field; 403 policy_denied explains; 423 kill_switch.", Some("ThinkRequest")),
    r("post", "/v1/memory/search", "any", "Semantic search of episodic memory: the k (1..=100, default 5) events nearest to query by embedding cosine, optionally filtered by kind and lane; each hit has event_id, score, kind, lane, glyph, ts and text.", Some("SearchRequest")),
    r("get", "/v1/state", "any", "Kernel observables, kill switch, mode, policy version, ledger and memory sizes.", None),
    r("get", "/v1/kernel/state", "any", "Kernel observables (SPEC K4).", None),
    r("post", "/v1/kernel/step", "agent, operator", "One kernel step under gw, checked by policy and recorded.", Some("StepRequest")),
    r("post", "/v1/kernel/reset", "operator", "Reset the kernel to its ground state (clears a halt); recorded.", None),
    r("get", "/v1/kernel/dump", "operator", "The kernel snapshot (SPEC K7), base64.", None),
    r("get", "/v1/kill", "any", "Kill-switch state, confirmed against its state file.", None),
    r("post", "/v1/kill", "operator", "Arm the kill switch.", Some("ArmRequest")),
    r("delete", "/v1/kill", "operator", "Disarm with operator signatures over the arming's nonce (text: \"capsule kill disarm\\n<nonce>\\n\").", Some("DisarmRequest")),
    r("get", "/v1/audit", "any", "Ledger entries; query from (default: the last page) and limit (1..=audit_page_max).", None),
    r("get", "/v1/audit/checkpoint", "any", "A fresh signed checkpoint (C2SP signed note).", None),
    r("get", "/v1/audit/proof/{seq}", "any", "RFC 9162 inclusion proof of entry seq; query size (default: now).", None),
    r("get", "/v1/audit/consistency/{old}/{new}", "any", "RFC 9162 consistency proof between two tree sizes.", None),
    r("get", "/v1/objects/{id}", "any", "The verified bytes of a stored object.", None),
    r("get", "/v1/policy", "any", "Active policy version, mode, guardian, quorums and keys.", None),
    r("put", "/v1/policy/mode", "operator", "Set the autonomy mode (supervised, semi_autonomous, autonomous); recorded.", Some("ModeRequest")),
    r("post", "/v1/policy/evaluate", "agent, approver, operator", "Decide a request without recording it.", Some("DecisionRequest")),
    r("get", "/v1/approvals", "any", "Approvals; query status (pending by default, or all).", None),
    r("post", "/v1/approvals/{id}/sign", "approver, operator", "Sign an approval (Ed25519 over \"capsule approval\\n<id>\\n<digest>\\n\").", Some("SignRequest")),
    r("get", "/healthz", "none", "Liveness.", None),
    r("get", "/readyz", "none", "Readiness: 200 once serving, 503 before and while shutting down.", None),
];

fn schemas() -> Value {
    let unit = json!({ "type": "number", "minimum": 0, "maximum": 1 });
    let affect = json!({
        "type": "object", "additionalProperties": false,
        "description": "Affect parameters for the policy decision (default: security.default_affect)",
        "properties": { "confidence": unit, "empathy": unit, "safety": unit }
    });
    let num_array = json!({ "type": "array", "items": { "type": "number", "minimum": -10, "maximum": 10 }, "maxItems": 60 });
    json!({
        "ThinkRequest": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "text": { "type": "string", "maxLength": 8192 },
                "gw": num_array,
                "measure": { "type": "boolean" },
                "lane": { "enum": ["experimental", "candidate", "prod"] },
                "planner": { "enum": ["hash", "local", "openai", "anthropic"] },
                "affect": affect
            }
        },
        "SearchRequest": {
            "type": "object", "additionalProperties": false, "required": ["query"],
            "properties": {
                "query": { "type": "string", "minLength": 1, "maxLength": 8192 },
                "k": { "type": "integer", "minimum": 1, "maximum": 100 },
                "filter": {
                    "type": "object", "additionalProperties": false,
                    "properties": { "kind": { "type": "string" }, "lane": { "type": "string" } }
                }
            }
        },
        "StepRequest": {
            "type": "object", "additionalProperties": false,
            "properties": { "gw": num_array, "measure": { "type": "boolean" }, "affect": affect }
        },
        "ArmRequest": {
            "type": "object", "additionalProperties": false,
            "properties": { "reason": { "type": "string" } }
        },
        "DisarmRequest": {
            "type": "object", "additionalProperties": false, "required": ["signatures"],
            "properties": {
                "signatures": { "type": "array", "items": {
                    "type": "object", "required": ["key", "signature"],
                    "properties": { "key": { "type": "string" }, "signature": { "type": "string", "contentEncoding": "base64" } }
                }},
                "reason": { "type": "string" }
            }
        },
        "ModeRequest": {
            "type": "object", "additionalProperties": false, "required": ["mode"],
            "properties": { "mode": { "enum": ["supervised", "semi_autonomous", "autonomous"] } }
        },
        "DecisionRequest": {
            "type": "object", "additionalProperties": false, "required": ["principal", "action", "resource"],
            "properties": {
                "principal": { "type": "string", "examples": ["agent:alice"] },
                "action": { "type": "string", "examples": ["fs.write"] },
                "resource": { "type": "string", "examples": ["path:/etc/passwd"] },
                "lane": { "enum": ["experimental", "candidate", "prod"] },
                "level": { "enum": ["low", "medium", "high", "critical"] },
                "affect": { "type": "object" },
                "risk": { "type": "number" },
                "drift": { "type": "number" },
                "args": { "type": "object" }
            }
        },
        "SignRequest": {
            "type": "object", "additionalProperties": false, "required": ["key", "signature"],
            "properties": { "key": { "type": "string" }, "signature": { "type": "string" } }
        },
        "Error": {
            "type": "object", "required": ["error", "reason"],
            "properties": {
                "error": { "type": "string" },
                "field": { "type": ["string", "null"] },
                "reason": { "type": "string" }
            }
        }
    })
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for route in ROUTES {
        let mut op = json!({
            "summary": route.summary,
            "description": format!("Roles: {}.", route.roles),
            "responses": {
                "200": { "description": "OK" },
                "default": { "description": "Error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }
            }
        });
        if route.roles != "none" {
            op["security"] = json!([{ "bearer": [] }]);
        }
        if let Some(schema) = route.body {
            op["requestBody"] = json!({
                "required": true,
                "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
            });
        }
        let params: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        entry[route.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Capsule API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A governed runtime for AI agents: every kernel step is checked by policy and recorded in a signed Merkle ledger. The kernel is a numerical simulation of an open quantum system used as state; it does not think or feel."
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        }
    })
}

/// `/docs`: renders `/openapi.json` as a table; no external resources.
pub const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Capsule API</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.4rem;vertical-align:top;text-align:left}
code{background:#f4f4f4;padding:0 .2rem}.m{font-weight:600;text-transform:uppercase}
</style></head><body>
<h1>Capsule API</h1><p id="desc"></p>
<p>The machine-readable document is <a href="/openapi.json">/openapi.json</a>. Send <code>Authorization: Bearer &lt;token&gt;</code> on every <code>/v1</code> call; errors are JSON <code>{error, field, reason}</code>.</p>
<table><thead><tr><th>method</th><th>path</th><th>what it does</th></tr></thead><tbody id="rows"></tbody></table>
<script>
fetch('/openapi.json').then(r=>r.json()).then(doc=>{
  document.getElementById('desc').textContent=doc.info.description;
  const rows=document.getElementById('rows');
  for(const [path,ops] of Object.entries(doc.paths)){
    for(const [method,op] of Object.entries(ops)){
      const tr=document.createElement('tr');
      for(const [cls,text] of [['m',method],['',path],['',op.summary+' '+op.description]]){
        const td=document.createElement('td');td.className=cls;
        if(cls===''&&text===path){const c=document.createElement('code');c.textContent=text;td.appendChild(c);}else{td.textContent=text;}
        tr.appendChild(td);
      }
      rows.appendChild(tr);
    }
  }
});
</script></body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_document_with_its_method() {
        let doc = document();
        for route in ROUTES {
            assert!(
                doc["paths"][route.path][route.method].is_object(),
                "{} {}",
                route.method,
                route.path
            );
        }
    }

    #[test]
    fn every_referenced_schema_exists() {
        let doc = document();
        for route in ROUTES {
            if let Some(s) = route.body {
                assert!(doc["components"]["schemas"][s].is_object(), "{s}");
            }
        }
    }
}
