//! Client-side traffic counters of the proxy: requests by method and status class, body
//! bytes received from and sent to clients, and the CONNECT tunnels open now.
//!
//! # Where it sits
//! The request path counts here ([`Traffic::request`] once a response head is ready, the
//! response body's bytes when it is done, the request body's when it is dropped, a tunnel's
//! bytes when it closes); the admin listener's collector ([`super::metrics`]) and `/stats`
//! read the counters at scrape time.
//!
//! # What it costs
//! Relaxed atomic additions only: one per request for its method and status class, one per
//! direction and body (bytes are summed in the body's own state and added once when it is
//! done), two per tunnel for the open gauge. No lock, no allocation.
//!
//! # How it fails
//! It cannot: counters wrap at `u64::MAX` bytes, which no process reaches.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

/// The methods counted by name; any other is counted as `other`.
pub const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "PATCH", "TRACE", "other",
];

/// Status classes, in the order of the counters: `1xx` to `5xx`.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The counters of one proxy.
#[derive(Debug, Default)]
pub struct Traffic {
    requests: [[AtomicU64; CLASSES.len()]; METHODS.len()],
    /// Body bytes received from clients: request bodies, and what clients sent into tunnels
    /// and WebSockets.
    pub bytes_in: AtomicU64,
    /// Body bytes sent to clients: response bodies (the proxy's own pages included), and
    /// what tunnels and WebSockets relayed to clients.
    pub bytes_out: AtomicU64,
    /// CONNECT tunnels open now, relayed or intercepted.
    open_tunnels: AtomicU64,
}

impl Traffic {
    /// Counts a request answered with `status` (its head; the body may still be under way).
    pub fn request(&self, method: &http::Method, status: http::StatusCode) {
        let m = METHODS[..METHODS.len() - 1]
            .iter()
            .position(|m| *m == method.as_str())
            .unwrap_or(METHODS.len() - 1);
        let c = usize::from(status.as_u16() / 100).clamp(1, CLASSES.len()) - 1;
        self.requests[m][c].fetch_add(1, Relaxed);
    }

    /// Each `(method, class, count)` with a count above zero, in a fixed order.
    pub fn requests(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        METHODS.iter().zip(&self.requests).flat_map(|(m, row)| {
            CLASSES
                .iter()
                .zip(row)
                .map(move |(c, n)| (*m, *c, n.load(Relaxed)))
                .filter(|(_, _, n)| *n > 0)
        })
    }

    /// Marks a tunnel open until the returned guard is dropped.
    pub fn tunnel_open(&self) -> OpenTunnel<'_> {
        self.open_tunnels.fetch_add(1, Relaxed);
        OpenTunnel(self)
    }

    /// CONNECT tunnels open now.
    pub fn open_tunnels(&self) -> u64 {
        self.open_tunnels.load(Relaxed)
    }

    /// The counters as the JSON of `/stats`' `traffic`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut by_method = serde_json::Map::new();
        for (m, c, n) in self.requests() {
            let row = by_method
                .entry(m.to_owned())
                .or_insert_with(|| serde_json::json!({}));
            row[c] = n.into();
        }
        serde_json::json!({
            "requests": by_method,
            "bytes_in": self.bytes_in.load(Relaxed),
            "bytes_out": self.bytes_out.load(Relaxed),
            "open_tunnels": self.open_tunnels(),
        })
    }
}

/// A tunnel counted as open while this lives.
#[derive(Debug)]
pub struct OpenTunnel<'a>(&'a Traffic);

impl Drop for OpenTunnel<'_> {
    fn drop(&mut self) {
        self.0.open_tunnels.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_method_and_class() {
        let t = Traffic::default();
        t.request(&http::Method::GET, http::StatusCode::OK);
        t.request(&http::Method::GET, http::StatusCode::NOT_FOUND);
        t.request(&http::Method::GET, http::StatusCode::NOT_FOUND);
        t.request(&"PROPFIND".parse().unwrap(), http::StatusCode::BAD_GATEWAY);
        t.request(&http::Method::CONNECT, http::StatusCode::CONTINUE);
        let got: Vec<_> = t.requests().collect();
        assert_eq!(
            got,
            [
                ("GET", "2xx", 1),
                ("GET", "4xx", 2),
                ("CONNECT", "1xx", 1),
                ("other", "5xx", 1)
            ]
        );
        {
            let _a = t.tunnel_open();
            let _b = t.tunnel_open();
            assert_eq!(t.open_tunnels(), 2);
        }
        assert_eq!(t.open_tunnels(), 0);
        assert_eq!(t.to_json()["requests"]["GET"]["4xx"], 2);
    }
}
