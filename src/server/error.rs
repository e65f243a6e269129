//! Errors as OpenAI's API gives them: a status and `{"error": {"message", "type", "param",
//! "code"}}`, so that OpenAI's clients raise their usual exceptions. A 500 says only that the
//! server failed; its cause goes to the server's log, not to the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// One failed request.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault, when there is one.
    pub param: Option<&'static str>,
    /// A machine-readable reason (`model_not_found`, `queue_full`, …).
    pub code: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// 400: the request is malformed or a field is out of range.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 400 naming the field at fault.
    pub fn bad_field(param: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            param: Some(param),
            ..Self::bad_request(message)
        }
    }

    pub fn unauthorized() -> Self {
        ApiError {
            code: Some("invalid_api_key"),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API key: send the key given to --api-key as 'Authorization: Bearer KEY'",
            )
        }
    }

    pub fn not_found(message: impl Into<String>, code: &'static str) -> Self {
        ApiError {
            code: Some(code),
            ..Self::new(StatusCode::NOT_FOUND, message)
        }
    }

    /// 413: the body, or an image in it, is over a limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    /// 503 with `Retry-After`: every slot is busy and the queue is full.
    pub fn queue_full(waiting: usize) -> Self {
        ApiError {
            code: Some("queue_full"),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the server is busy: {waiting} requests are running or waiting; retry later"
                ),
            )
        }
    }

    /// 503: the request ran past `--timeout`.
    pub fn timed_out(seconds: u64) -> Self {
        ApiError {
            code: Some("timeout"),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the request ran past the server's time limit of {seconds} s"),
            )
        }
    }

    /// 503: the server is shutting down.
    pub fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        )
    }

    /// 500: logged here with its cause; the client learns nothing of the internals.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        eprintln!("latte serve: internal error: {cause}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the server failed to answer this request (see its log)",
        )
    }

    /// OpenAI's `type` for the status.
    fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::NOT_FOUND => "not_found_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// The error object (also sent as a server-sent event when a stream fails midway).
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind(),
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
