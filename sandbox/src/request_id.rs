//! The request ID: taken from `X-Request-ID` (or made up), attached to every log line through a
//! tracing span, echoed on the response and available to error bodies.

use std::future::Future;
use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// Header carrying the request ID between trine services.
pub const HEADER: &str = "x-request-id";

/// Longest caller-supplied ID kept; longer or non-printable ones are replaced.
const MAX_LEN: usize = 128;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The ID of the request being served by this task, or an empty string outside one.
pub fn current() -> String {
    REQUEST_ID.try_with(String::clone).unwrap_or_default()
}

/// Runs `future` with `id` as the current request ID.
pub async fn scope<F: Future>(id: String, future: F) -> F::Output {
    REQUEST_ID.scope(id, future).await
}

/// A fresh random ID.
pub fn generate() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Keeps a caller's ID only if it is safe to log and echo.
fn accept(value: Option<&HeaderValue>) -> Option<String> {
    let id = value?.to_str().ok()?;
    let printable = id.bytes().all(|b| b.is_ascii_graphic());
    (!id.is_empty() && id.len() <= MAX_LEN && printable).then(|| id.to_owned())
}

/// Middleware: establishes the request ID and span, logs one line per request, echoes the ID.
pub async fn propagate(request: Request, next: Next) -> Response {
    let id = accept(request.headers().get(HEADER)).unwrap_or_else(generate);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
        traceparent = tracing::field::Empty,
    );
    // The W3C trace context is only logged: the sandbox calls nothing downstream.
    if let Some(traceparent) = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        span.record("traceparent", traceparent);
    }
    let started = Instant::now();
    let echoed = HeaderValue::from_str(&id).expect("accepted IDs are visible ASCII");
    let mut response = scope(id, next.run(request)).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            duration_ms = started.elapsed().as_secs_f64() * 1e3,
            "request finished"
        );
    });
    response.headers_mut().insert(HEADER, echoed);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_ids_are_kept_only_when_safe() {
        let ok = HeaderValue::from_static("abc-123");
        assert_eq!(accept(Some(&ok)).as_deref(), Some("abc-123"));
        let spaced = HeaderValue::from_static("a b");
        assert_eq!(accept(Some(&spaced)), None);
        let long = HeaderValue::from_str(&"x".repeat(MAX_LEN + 1)).unwrap();
        assert_eq!(accept(Some(&long)), None);
        assert_eq!(accept(None), None);
    }

    #[tokio::test]
    async fn current_sees_the_scoped_id() {
        assert_eq!(current(), "");
        let seen = scope("r-1".into(), async { current() }).await;
        assert_eq!(seen, "r-1");
    }
}
