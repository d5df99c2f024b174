//! `POST /reload`: reads the configuration file again and applies it (`crate::app::reload`),
//! behind the admin token like every page but the probes.
//!
//! The reload blocks until every shard has applied the new generation, and this endpoint runs
//! on shard 0, which must keep applying it meanwhile: the reload runs on a plain thread and
//! the answer comes back on a oneshot. Answers, in JSON: 200 `{"generation": N, "applied":
//! [...], "restart_required": [...]}`; 400 `{"error": "FILE:LINE:COLUMN: ..."}` for a file
//! that does not load (the running configuration is kept); 409 while another reload runs;
//! 503 while the process drains (or when it was started without a file); 500 when a shard did
//! not apply the generation in time. Any other method is 405.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

use crate::app::reload::{ReloadError, Reloader};

/// The longest a reload may take: loading, then the shards' deadline to apply it.
const ANSWER_DEADLINE: Duration = Duration::from_secs(30);

/// Runs a reload off the shard and answers with its report.
pub(super) async fn serve(
    reloader: Option<Arc<Reloader>>,
    method: &Method,
) -> Response<Full<Bytes>> {
    if method != Method::POST {
        let mut reply = json(
            StatusCode::METHOD_NOT_ALLOWED,
            error("use POST /reload".into()),
        );
        reply
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return reply;
    }
    let Some(reloader) = reloader else {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            error(ReloadError::NoFile.to_string()),
        );
    };
    let (tx, rx) = futures_channel::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("rtun-reload".into())
        .spawn(move || {
            let _ = tx.send(reloader.reload_logged("POST /reload"));
        });
    if let Err(e) = spawned {
        tracing::error!("POST /reload: cannot start the reload thread: {e}");
        return json(
            StatusCode::INTERNAL_SERVER_ERROR,
            error("cannot start the reload".into()),
        );
    }
    match monoio::time::timeout(ANSWER_DEADLINE, rx).await {
        Ok(Ok(Ok(report))) => json(StatusCode::OK, report.to_json()),
        Ok(Ok(Err(e))) => {
            let status = match e {
                ReloadError::Invalid(_) => StatusCode::BAD_REQUEST,
                ReloadError::Busy => StatusCode::CONFLICT,
                ReloadError::Draining | ReloadError::NoFile => StatusCode::SERVICE_UNAVAILABLE,
                ReloadError::Incomplete(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            json(status, error(e.to_string()))
        }
        Ok(Err(_canceled)) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            error("the reload stopped without an answer".into()),
        ),
        Err(_elapsed) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            error(format!("no answer within {ANSWER_DEADLINE:?}")),
        ),
    }
}

fn error(message: String) -> String {
    serde_json::json!({ "error": message }).to_string()
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut reply = Response::new(Full::new(Bytes::from(body + "\n")));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    reply
}
