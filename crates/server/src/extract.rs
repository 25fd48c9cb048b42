//! Request extractors and response plumbing that hold the HTTP API to one
//! error contract: every rejection is JSON `{error, field, reason}` with a
//! 4xx status, and names the path parameter, query parameter or body field
//! that was wrong. axum's own extractors answer plain text (and its router
//! answers an empty 404 or 405), so the handlers use these instead, and
//! [`json_errors`] turns whatever else would leave without a JSON body into
//! one.

use crate::http::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::value::{Error as ValueError, MapDeserializer};
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;

/// Path parameters, parsed; a bad one is 400 naming the parameter.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => {
                let names: Vec<String> = RawPathParams::from_request_parts(parts, state)
                    .await
                    .map(|raw| raw.iter().map(|(k, _)| k.to_string()).collect())
                    .unwrap_or_default();
                Err(path_error(rejection, &names))
            }
        }
    }
}

/// Words for the Rust type axum names when a path parameter does not parse.
fn expected(type_name: &str) -> &'static str {
    match type_name {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a non-negative integer",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer",
        "f32" | "f64" => "a number",
        "bool" => "true or false",
        _ => "of the expected form",
    }
}

fn path_error(rejection: axum::extract::rejection::PathRejection, names: &[String]) -> ApiError {
    use axum::extract::path::ErrorKind;
    use axum::extract::rejection::PathRejection;
    let bad = |field: &str, reason: String| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", reason).field(field)
    };
    let only = || names.first().map_or("path", String::as_str);
    match rejection {
        PathRejection::FailedToDeserializePathParams(e) => match e.into_kind() {
            ErrorKind::ParseErrorAtKey {
                key,
                value,
                expected_type,
            } => bad(
                &key,
                format!("{value:?} is not {}", expected(expected_type)),
            ),
            ErrorKind::ParseErrorAtIndex {
                index,
                value,
                expected_type,
            } => bad(
                names.get(index).map_or("path", String::as_str),
                format!("{value:?} is not {}", expected(expected_type)),
            ),
            ErrorKind::ParseError {
                value,
                expected_type,
            } => bad(
                only(),
                format!("{value:?} is not {}", expected(expected_type)),
            ),
            ErrorKind::InvalidUtf8InPathParam { key } => {
                bad(&key, "is not valid UTF-8 once percent-decoded".into())
            }
            ErrorKind::DeserializeError {
                key,
                value,
                message,
            } => bad(&key, format!("{value:?}: {message}")),
            other => bad(only(), other.to_string()),
        },
        other => bad(only(), other.body_text()),
    }
}

/// A query string, parsed strictly (unknown parameters are refused); a bad
/// parameter is 400 naming it.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // axum percent-decodes the pairs; the typed parse is ours, so that
        // the error can name the parameter.
        let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.body_text())
                    .field("query")
            })?;
        parse_query(pairs).map(ApiQuery)
    }
}

/// Deserialize decoded query pairs into `T`, naming the failing parameter.
pub fn parse_query<T: DeserializeOwned>(pairs: Vec<(String, String)>) -> Result<T, ApiError> {
    let de =
        MapDeserializer::<_, ValueError>::new(pairs.into_iter().map(|(k, v)| (k, QueryValue(v))));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let reason = e.inner().to_string();
        let path = e.path().to_string();
        let field = if path != "." {
            path
        } else {
            named_field(&reason).unwrap_or("query").to_string()
        };
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", reason).field(field)
    })
}

/// One query value: text that becomes the type the target field asks for.
struct QueryValue(String);

impl<'de> IntoDeserializer<'de, ValueError> for QueryValue {
    type Deserializer = QueryValue;

    fn into_deserializer(self) -> QueryValue {
        self
    }
}

impl QueryValue {
    fn parse<T: std::str::FromStr>(&self, what: &str) -> Result<T, ValueError> {
        self.0
            .parse()
            .map_err(|_| de::Error::custom(format!("{:?} is not {what}", self.0)))
    }
}

impl<'de> de::Deserializer<'de> for QueryValue {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_string(self.0)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_some(self)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_bool(self.parse("true or false")?)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_u64(self.parse("a non-negative integer below 2^64")?)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_u32(self.parse("a non-negative integer below 2^32")?)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_i64(self.parse("an integer in the 64-bit range")?)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_f64(self.parse("a number")?)
    }

    forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u128 f32 char str string bytes byte_buf unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

/// The request body as bytes, within `limits.max_body_bytes`; over it is
/// 413, other read failures 400, both JSON naming `body`.
async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        let status = e.status();
        let (code, reason) = if status == StatusCode::PAYLOAD_TOO_LARGE {
            (
                "body_too_large",
                "the request body is larger than the server accepts (limits.max_body_bytes)"
                    .to_string(),
            )
        } else {
            ("invalid_body", e.body_text())
        };
        ApiError::new(status, code, reason).field("body")
    })
}

/// A JSON body, size-limited, parsed strictly; errors name the field.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A JSON body that may be absent (an empty body is `None`); otherwise as
/// [`JsonBody`].
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state).await?;
        if bytes.is_empty() {
            return Ok(OptionalJsonBody(None));
        }
        parse_json(&bytes).map(|v| OptionalJsonBody(Some(v)))
    }
}

/// The field serde's message names when it fails before any path exists
/// ("unknown field `x`, expected ...", "missing field `x`"): the one to fix.
fn named_field(reason: &str) -> Option<&str> {
    reason
        .strip_prefix("unknown field `")
        .or_else(|| reason.strip_prefix("missing field `"))
        .and_then(|rest| rest.split('`').next())
}

/// Parse with the path of the failing field (`gw[3]`, `lane`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let reason = e.inner().to_string();
        let field = match (path.as_str(), named_field(&reason)) {
            (".", Some(named)) => named.to_string(),
            (".", None) => "body".into(),
            _ => path,
        };
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            e.inner().to_string(),
        )
        .field(field)
    })
}

/// The router's fallback: an unknown path is 404 naming it.
pub async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route {}; /openapi.json lists the routes",
            req.uri().path()
        ),
    )
    .field("path")
}

/// Largest non-JSON error body [`json_errors`] reads to quote as a reason.
const MAX_PLAIN_ERROR_BYTES: usize = 4096;

/// Middleware over every route: an error response that is not already the
/// JSON error body (axum's 405 with its `Allow` header, a rejection from a
/// layer) is rewritten into one, keeping the status and headers. So no
/// client input gets a plain-text or empty error.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, MAX_PLAIN_ERROR_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let error = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            ApiError::new(
                status,
                "method_not_allowed",
                format!("{method} is not allowed on {path}; allowed: {allowed}"),
            )
            .field("method")
        }
        StatusCode::NOT_FOUND => {
            ApiError::new(status, "not_found", format!("no route {path}")).field("path")
        }
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            status,
            "body_too_large",
            "the request body is larger than the server accepts (limits.max_body_bytes)",
        )
        .field("body"),
        s if s.is_server_error() => ApiError::new(s, "internal", text),
        s => ApiError::new(s, "invalid_request", text),
    };
    let mut fresh = error.into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (name, value) in fresh.headers().iter() {
        parts.headers.insert(name.clone(), value.clone());
    }
    let body = std::mem::replace(fresh.body_mut(), Body::empty());
    Response::from_parts(parts, body)
}
