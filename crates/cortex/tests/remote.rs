//! The remote chat models against a loopback server that speaks the real
//! wire formats: what is sent, what is read back, and every failure path
//! (timeout, retries, provider errors, bad bodies, missing key, no server).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use capsule_cortex::{
    parse_choice, AnthropicChat, ChatModel, ChatPrompt, OpenAiChat, PlanError, RemoteConfig,
    RemoteConfigError,
};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Value,
}

/// One scripted answer; the last one repeats.
#[derive(Clone)]
struct Answer {
    status: u16,
    retry_after: Option<&'static str>,
    body: String,
    delay: Duration,
}

fn answer(status: u16, body: Value) -> Answer {
    Answer {
        status,
        retry_after: None,
        body: body.to_string(),
        delay: Duration::ZERO,
    }
}

#[derive(Clone)]
struct Script {
    answers: Arc<Vec<Answer>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn respond(
    State(script): State<Script>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let n = {
        let mut seen = script.seen.lock().unwrap();
        seen.push(Seen {
            path: uri.path().to_string(),
            headers,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        seen.len()
    };
    let a = script.answers[(n - 1).min(script.answers.len() - 1)].clone();
    tokio::time::sleep(a.delay).await;
    let mut response = (
        StatusCode::from_u16(a.status).unwrap(),
        [("content-type", "application/json")],
        a.body,
    )
        .into_response();
    if let Some(after) = a.retry_after {
        response
            .headers_mut()
            .insert("retry-after", after.parse().unwrap());
    }
    response
}

/// A loopback HTTP server on its own thread and runtime; dropping it stops
/// the runtime, which cancels requests still in flight.
struct Server {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(answers: Vec<Answer>) -> Server {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Script {
            answers: Arc::new(answers),
            seen: seen.clone(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(respond).with_state(script);
                tokio::spawn(async move { axum::serve(listener, app).await });
                let _ = stopped.await;
            });
        });
        Server {
            url,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sets a key in a variable no other test uses, so tests never race on
/// the environment.
fn key_env(test: &str) -> String {
    let name = format!("CAPSULE_TEST_KEY_{test}");
    std::env::set_var(&name, format!("key-{test}"));
    name
}

fn openai_config(server_url: &str, key_env: String) -> RemoteConfig {
    RemoteConfig {
        base_url: format!("{server_url}/v1"),
        model: "test-model".into(),
        api_key_env: key_env,
        timeout: Duration::from_secs(5),
        max_retries: 2,
        backoff: Duration::from_millis(10),
        ..RemoteConfig::openai()
    }
}

fn anthropic_config(server_url: &str, key_env: String) -> RemoteConfig {
    RemoteConfig {
        base_url: server_url.into(),
        model: "claude-test".into(),
        api_key_env: key_env,
        timeout: Duration::from_secs(5),
        max_retries: 2,
        backoff: Duration::from_millis(10),
        ..RemoteConfig::anthropic()
    }
}

fn prompt() -> ChatPrompt {
    ChatPrompt {
        system: "Answer with one JSON object.".into(),
        user: "evolve the state".into(),
    }
}

const CHOICE: &str = r#"{"op":"brain.step","measure":false,"rationale":"evolve"}"#;

fn completion(content: &str) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "test-model",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}
    })
}

fn openai(server: &Server, test: &str) -> OpenAiChat {
    OpenAiChat::new(openai_config(&server.url, key_env(test))).unwrap()
}

fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.headers.get(name).map(|v| v.to_str().unwrap())
}

fn err(result: Result<String, PlanError>) -> PlanError {
    match result {
        Ok(reply) => panic!("expected an error, got the reply {reply:?}"),
        Err(e) => e,
    }
}

#[test]
fn openai_sends_the_chat_completions_wire_format_and_returns_the_content() {
    let server = Server::start(vec![answer(200, completion(CHOICE))]);
    let model = openai(&server, "openai_success");
    let reply = model.complete(&prompt()).unwrap();
    assert_eq!(reply, CHOICE);
    let choice = parse_choice(model.name(), &reply).unwrap();
    assert_eq!(choice.rationale, "evolve");
    assert_eq!(model.name(), "openai");
    assert_eq!(model.model_id(), "test-model");

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(
        header(request, "authorization"),
        Some("Bearer key-openai_success")
    );
    assert_eq!(header(request, "content-type"), Some("application/json"));
    let body = &request.body;
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["temperature"], 0);
    assert_eq!(body["max_tokens"], 256);
    assert_eq!(body["response_format"], json!({"type": "json_object"}));
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "Answer with one JSON object."},
            {"role": "user", "content": "evolve the state"}
        ])
    );
}

#[test]
fn openai_times_out_after_the_configured_timeout_without_retrying() {
    let server = Server::start(vec![Answer {
        delay: Duration::from_secs(3),
        ..answer(200, completion(CHOICE))
    }]);
    let model = OpenAiChat::new(RemoteConfig {
        timeout: Duration::from_millis(300),
        ..openai_config(&server.url, key_env("openai_timeout"))
    })
    .unwrap();
    let started = Instant::now();
    let e = err(model.complete(&prompt()));
    let elapsed = started.elapsed();
    assert!(e.reason.contains("timed out after 0.3 s"), "{e}");
    assert!(e.reason.contains("/v1/chat/completions"), "{e}");
    assert!(elapsed < Duration::from_millis(1200), "took {elapsed:?}");
    assert_eq!(server.seen().len(), 1);
}

#[test]
fn openai_retries_a_429_after_the_retry_after_it_was_given() {
    let server = Server::start(vec![
        Answer {
            retry_after: Some("0"),
            ..answer(429, json!({"error": {"message": "slow down"}}))
        },
        answer(200, completion(CHOICE)),
    ]);
    // A 20 s backoff would outlast the test; `Retry-After: 0` must win.
    let model = OpenAiChat::new(RemoteConfig {
        backoff: Duration::from_secs(20),
        ..openai_config(&server.url, key_env("openai_retry_after"))
    })
    .unwrap();
    let started = Instant::now();
    assert_eq!(model.complete(&prompt()).unwrap(), CHOICE);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(server.seen().len(), 2);
}

#[test]
fn openai_gives_up_on_endless_429_after_max_retries_and_names_the_status() {
    let server = Server::start(vec![answer(
        429,
        json!({"error": {"message": "Rate limit reached", "type": "requests"}}),
    )]);
    let model = openai(&server, "openai_429_forever");
    let e = err(model.complete(&prompt()));
    assert!(e.reason.contains("HTTP 429"), "{e}");
    assert!(e.reason.contains("after 3 attempts"), "{e}");
    assert!(e.reason.contains("Rate limit reached (requests)"), "{e}");
    assert_eq!(server.seen().len(), 3);
}

#[test]
fn openai_retries_5xx_with_doubling_backoff() {
    let overloaded = answer(503, json!({"error": {"message": "overloaded"}}));
    let server = Server::start(vec![
        answer(500, json!({"error": {"message": "boom"}})),
        overloaded,
        answer(200, completion(CHOICE)),
    ]);
    let model = OpenAiChat::new(RemoteConfig {
        backoff: Duration::from_millis(150),
        ..openai_config(&server.url, key_env("openai_5xx"))
    })
    .unwrap();
    let started = Instant::now();
    assert_eq!(model.complete(&prompt()).unwrap(), CHOICE);
    // 150 ms, then 300 ms.
    assert!(started.elapsed() >= Duration::from_millis(450));
    assert_eq!(server.seen().len(), 3);
}

#[test]
fn openai_does_not_retry_a_400_and_surfaces_the_provider_message() {
    let server = Server::start(vec![answer(
        400,
        json!({"error": {
            "message": "The model `nope` does not exist",
            "type": "invalid_request_error",
            "param": null,
            "code": "model_not_found"
        }}),
    )]);
    let model = openai(&server, "openai_400");
    let e = err(model.complete(&prompt()));
    assert_eq!(e.planner, "openai");
    assert!(e.reason.contains("HTTP 400 Bad Request"), "{e}");
    assert!(
        e.reason
            .contains("The model `nope` does not exist (invalid_request_error)"),
        "{e}"
    );
    assert!(!e.reason.contains("attempts"), "{e}");
    assert_eq!(server.seen().len(), 1);
}

#[test]
fn openai_401_points_at_the_key_variable_without_revealing_the_key() {
    let server = Server::start(vec![answer(
        401,
        json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}),
    )]);
    let model = openai(&server, "openai_401");
    let e = err(model.complete(&prompt()));
    assert!(e.reason.contains("HTTP 401"), "{e}");
    assert!(e.reason.contains("CAPSULE_TEST_KEY_openai_401"), "{e}");
    assert!(!e.reason.contains("key-openai_401"), "{e}");
    assert_eq!(server.seen().len(), 1);
}

#[test]
fn openai_model_reply_that_is_not_json_is_left_to_parse_choice() {
    let server = Server::start(vec![answer(200, completion("not json {"))]);
    let model = openai(&server, "openai_bad_model_json");
    let reply = model.complete(&prompt()).unwrap();
    assert_eq!(reply, "not json {");
    let e = parse_choice(model.name(), &reply).unwrap_err();
    assert!(e.reason.contains("is not JSON"), "{e}");
}

#[test]
fn openai_body_that_is_not_a_chat_completion_is_an_error() {
    let server = Server::start(vec![answer(200, json!({"result": "ok"}))]);
    let model = openai(&server, "openai_wrong_shape");
    let e = err(model.complete(&prompt()));
    assert!(e.reason.contains("is not a chat completion"), "{e}");
    assert!(e.reason.contains("missing field `choices`"), "{e}");
    assert_eq!(server.seen().len(), 1);
}

#[test]
fn openai_body_that_is_not_json_is_an_error() {
    let server = Server::start(vec![Answer {
        body: "<html>gateway</html>".into(),
        ..answer(200, Value::Null)
    }]);
    let model = openai(&server, "openai_html");
    let e = err(model.complete(&prompt()));
    assert!(e.reason.contains("is not a chat completion"), "{e}");
    assert!(e.reason.contains("<html>gateway</html>"), "{e}");
}

#[test]
fn openai_null_content_is_an_error() {
    let mut body = completion("");
    body["choices"][0]["message"]["content"] = Value::Null;
    body["choices"][0]["finish_reason"] = json!("content_filter");
    let server = Server::start(vec![answer(200, body)]);
    let model = openai(&server, "openai_null_content");
    let e = err(model.complete(&prompt()));
    assert!(e.reason.contains("content is null"), "{e}");
    assert!(e.reason.contains("content_filter"), "{e}");
}

#[test]
fn openai_missing_or_empty_key_names_the_variable_and_sends_nothing() {
    let server = Server::start(vec![answer(200, completion(CHOICE))]);
    let name = "CAPSULE_TEST_KEY_openai_missing".to_string();
    std::env::remove_var(&name);
    let model = OpenAiChat::new(openai_config(&server.url, name.clone())).unwrap();
    let e = err(model.complete(&prompt()));
    assert!(e.reason.contains(&format!("{name} is not set")), "{e}");
    std::env::set_var(&name, "");
    let e = err(model.complete(&prompt()));
    assert!(e.reason.contains(&format!("{name} is not set")), "{e}");
    assert_eq!(server.seen().len(), 0);
}

#[test]
fn openai_unreachable_server_is_named_with_its_url() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let model = OpenAiChat::new(openai_config(&url, key_env("openai_unreachable"))).unwrap();
    let started = Instant::now();
    let e = err(model.complete(&prompt()));
    assert!(
        e.reason.contains(&format!(
            "openai at {url}/v1/chat/completions cannot be reached"
        )),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn anthropic_sends_the_messages_wire_format_and_joins_text_blocks() {
    let server = Server::start(vec![answer(
        200,
        json!({
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": [
                {"type": "text", "text": "{\"op\":\"brain.measure\","},
                {"type": "tool_use", "id": "t1", "name": "x", "input": {}},
                {"type": "text", "text": "\"measure\":true,\"rationale\":\"look\"}"}
            ],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 10, "output_tokens": 10}
        }),
    )]);
    let model =
        AnthropicChat::new(anthropic_config(&server.url, key_env("anthropic_success"))).unwrap();
    let reply = model.complete(&prompt()).unwrap();
    assert_eq!(
        reply,
        r#"{"op":"brain.measure","measure":true,"rationale":"look"}"#
    );
    assert!(parse_choice(model.name(), &reply).unwrap().measure);
    assert_eq!(model.name(), "anthropic");

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.path, "/v1/messages");
    assert_eq!(header(request, "x-api-key"), Some("key-anthropic_success"));
    assert_eq!(header(request, "anthropic-version"), Some("2023-06-01"));
    assert_eq!(header(request, "authorization"), None);
    let body = &request.body;
    assert_eq!(body["model"], "claude-test");
    assert_eq!(body["temperature"], 0);
    assert_eq!(body["max_tokens"], 256);
    assert_eq!(body["system"], "Answer with one JSON object.");
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "evolve the state"}])
    );
}

#[test]
fn anthropic_surfaces_the_error_type_and_message() {
    let server = Server::start(vec![answer(
        400,
        json!({"type": "error", "error": {
            "type": "invalid_request_error",
            "message": "max_tokens: 999999 > 8192"
        }}),
    )]);
    let model =
        AnthropicChat::new(anthropic_config(&server.url, key_env("anthropic_error"))).unwrap();
    let e = err(model.complete(&prompt()));
    assert_eq!(e.planner, "anthropic");
    assert!(e.reason.contains("HTTP 400"), "{e}");
    assert!(
        e.reason
            .contains("max_tokens: 999999 > 8192 (invalid_request_error)"),
        "{e}"
    );
    assert_eq!(server.seen().len(), 1);
}

#[test]
fn anthropic_missing_key_names_the_variable_and_sends_nothing() {
    let server = Server::start(vec![answer(200, json!({}))]);
    let name = "CAPSULE_TEST_KEY_anthropic_missing".to_string();
    std::env::remove_var(&name);
    let model = AnthropicChat::new(anthropic_config(&server.url, name.clone())).unwrap();
    let e = err(model.complete(&prompt()));
    assert!(e.reason.contains(&format!("{name} is not set")), "{e}");
    assert_eq!(server.seen().len(), 0);
}

#[test]
fn provider_defaults_are_valid_and_point_at_the_providers() {
    let openai = RemoteConfig::openai();
    openai.validate().unwrap();
    assert_eq!(openai.base_url, "https://api.openai.com/v1");
    assert_eq!(openai.api_key_env, "OPENAI_API_KEY");
    assert_eq!(openai.model, "gpt-4o-mini");
    let anthropic = RemoteConfig::anthropic();
    anthropic.validate().unwrap();
    assert_eq!(anthropic.base_url, "https://api.anthropic.com");
    assert_eq!(anthropic.api_key_env, "ANTHROPIC_API_KEY");
    for config in [&openai, &anthropic] {
        assert_eq!(config.timeout, Duration::from_secs(30));
        assert_eq!(config.max_retries, 2);
        assert_eq!(config.backoff, Duration::from_millis(500));
    }
}

#[test]
fn validate_names_the_field_it_rejects() {
    let field = |config: RemoteConfig| match OpenAiChat::new(config) {
        Err(RemoteConfigError::Field { field, .. }) => field,
        Err(other) => panic!("expected a field error, got {other}"),
        Ok(_) => panic!("expected a field error, got a backend"),
    };
    let base = RemoteConfig::openai;
    assert_eq!(
        field(RemoteConfig {
            model: " ".into(),
            ..base()
        }),
        "model"
    );
    for url in ["ftp://example.com", "example.com/v1", "http://", ""] {
        assert_eq!(
            field(RemoteConfig {
                base_url: url.into(),
                ..base()
            }),
            "base_url",
            "{url:?}"
        );
    }
    assert_eq!(
        field(RemoteConfig {
            timeout: Duration::ZERO,
            ..base()
        }),
        "timeout"
    );
    assert_eq!(
        field(RemoteConfig {
            api_key_env: String::new(),
            ..base()
        }),
        "api_key_env"
    );
    assert_eq!(
        field(RemoteConfig {
            max_retries: capsule_cortex::remote::MAX_RETRIES + 1,
            ..base()
        }),
        "max_retries"
    );
    assert_eq!(
        field(RemoteConfig {
            max_tokens: 0,
            ..base()
        }),
        "max_tokens"
    );
    let e = RemoteConfig {
        model: String::new(),
        ..base()
    }
    .validate()
    .unwrap_err();
    assert!(
        e.to_string().contains("field model: must not be empty"),
        "{e}"
    );
}
