//! Everything a request can fail with, and the one place that turns it into the shared
//! error envelope `{"error": {"type", "message", "request_id"}}`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::request_id;

/// A request that could not be served. Guest outcomes (traps, timeouts, ...) are not errors:
/// they are reported in a 200 result.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed body, unknown language, invalid module, bad entrypoint or limits.
    #[error("{0}")]
    InvalidRequest(String),
    /// Missing or wrong internal credential.
    #[error("missing or invalid internal credential")]
    Unauthorized,
    /// No such route.
    #[error("no such route")]
    NotFound,
    /// The route exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Body over the size cap.
    #[error("request body is too large")]
    PayloadTooLarge,
    /// Body that is not declared as JSON.
    #[error("expected a JSON body with Content-Type: application/json")]
    UnsupportedMediaType,
    /// Every run slot and queue place is taken.
    #[error("the sandbox is at capacity; retry shortly")]
    Unavailable,
    /// The language's interpreter is not installed on this sandbox; retrying will not help.
    #[error("language '{0}' is not installed on this sandbox")]
    LanguageUnavailable(&'static str),
    /// A fault on our side; the detail goes to the log, never to the caller.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable | ApiError::LanguageUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `type` field of the envelope, shared by all trine services.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Unavailable | ApiError::LanguageUnavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// Logs the error: internal detail at error level, refusals at info.
    pub fn log(&self) {
        match self {
            ApiError::Internal(detail) => tracing::error!(detail, "internal error"),
            other => {
                tracing::info!(error.type = other.kind(), error.message = %other, "request refused")
            }
        }
    }

    /// The error envelope body.
    pub fn envelope(&self, request_id: &str) -> Value {
        json!({"error": {"type": self.kind(), "message": self.to_string(), "request_id": request_id}})
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
            _ => ApiError::InvalidRequest(rejection.body_text()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let body = self.envelope(&request_id::current());
        let mut response = (self.status(), Json(body)).into_response();
        if let ApiError::Unavailable = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
