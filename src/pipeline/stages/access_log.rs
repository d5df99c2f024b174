//! Writes each request's access log line (`crate::access_log`).
//!
//! Phase 1 (`request_filter`) captures what the line needs from the request head before any
//! stage changes it — the authority (`Host` on HTTP/1.1, `:authority` on HTTP/2) and the
//! headers the format names — into `RequestCtx::captured`. Phase 5 (`logging`) renders the
//! line from the final context and hands it to the shard's buffer; it never waits.

use std::time::SystemTime;

use http::{header, request, HeaderValue};

use crate::access_log::render::{request_line, Captured};
use crate::access_log::ShardLog;
use crate::pipeline::{ProxyError, RequestCtx, Stage};

pub(in crate::pipeline) struct AccessLog {
    pub(in crate::pipeline) log: ShardLog,
}

impl Stage for AccessLog {
    fn request_filter(
        &self,
        ctx: &mut RequestCtx,
        request: &mut request::Parts,
    ) -> Result<(), ProxyError> {
        let authority = match request.uri.authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => request.headers.get(header::HOST).cloned(),
        };
        let names = self.log.headers();
        let mut captured = Vec::with_capacity(names.len() + 1);
        captured.push(authority);
        captured.extend(names.iter().map(|name| request.headers.get(name).cloned()));
        ctx.captured = captured;
        Ok(())
    }

    fn logging(&self, ctx: &RequestCtx) {
        let captured = Captured {
            names: self.log.headers(),
            values: &ctx.captured,
        };
        let line = request_line(self.log.format(), &captured, ctx, SystemTime::now());
        self.log.write(line);
    }
}
