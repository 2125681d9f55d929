//! What the proxy's and the reputation server's admin listeners share: encoding metric
//! families read at scrape time into a `prometheus-client` registry built once, and the small
//! HTTP/1.1 accept loop that serves it.
//!
//! # Where it sits
//! Outside every request path. The proxy ([`crate::proxy::metrics`]) and the server
//! ([`crate::repserver::metrics`]) keep relaxed atomics where the work happens and register,
//! once, a [`prometheus_client::collector::Collector`] that reads them; a scrape ([`encode`])
//! runs it, and it writes each family with these helpers (typed label sets, constant values)
//! in the OpenMetrics text format. [`ProcessCollector`] adds the standard `process_*`
//! metrics read from `/proc/self` at each scrape, [`build_info`] the running version.
//!
//! # What it costs
//! Nothing per request; a scrape writes a few dozen samples into one string.
//!
//! # How it fails
//! [`serve`] logs a failed accept and goes on; a connection that breaks is dropped alone. An
//! encoding error (a bug) is returned to the scrape, which answers 500.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The Content-Type of a scrape answer.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `registry` in the OpenMetrics text format.
///
/// # Errors
/// An encoding error, which would be a bug.
pub fn encode(registry: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

/// Writes a family with one sample per `(labels, metric)`; a family without samples is left
/// out, as a registry leaves out an empty `Family`. Every writer here takes the HELP text
/// without its final full stop, as [`Registry::register`] does.
///
/// # Errors
/// An encoding error, which would be a bug.
pub fn family<S: EncodeLabelSet, M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (S, M)>,
) -> fmt::Result {
    let mut samples = samples.into_iter().peekable();
    let Some((_, first)) = samples.peek() else {
        return Ok(());
    };
    let help = described(help);
    let mut family = enc.encode_descriptor(name, &help, None, first.metric_type())?;
    for (labels, metric) in samples {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes a counter family with one sample per `(labels, count)`.
///
/// # Errors
/// An encoding error, which would be a bug.
pub fn counters<S: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (S, u64)>,
) -> fmt::Result {
    family(
        enc,
        name,
        help,
        samples.into_iter().map(|(s, n)| (s, ConstCounter::new(n))),
    )
}

/// Writes one metric without labels (a counter, a gauge, a histogram).
///
/// # Errors
/// An encoding error, which would be a bug.
pub fn metric(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> fmt::Result {
    let help = described(help);
    metric.encode(enc.encode_descriptor(name, &help, None, metric.metric_type())?)
}

/// The HELP text of `help`, ended with a full stop as [`Registry::register`] ends it (a
/// collector's descriptor is written as given).
fn described(help: &str) -> String {
    format!("{help}.")
}

/// Writes a counter with the value `n`.
///
/// # Errors
/// An encoding error, which would be a bug.
pub fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, n: u64) -> fmt::Result {
    metric(enc, name, help, &ConstCounter::new(n))
}

/// Writes a gauge with the value `n`, clamped to `i64`.
///
/// # Errors
/// An encoding error, which would be a bug.
pub fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    n: impl TryInto<i64>,
) -> fmt::Result {
    let n = n.try_into().unwrap_or(i64::MAX);
    metric(enc, name, help, &ConstGauge::new(n))
}

/// Label set of `webrep_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Writes `build_info{version}` 1: the version of the running binary (Cargo's package
/// version), to join with other series or to see a rollout.
///
/// # Errors
/// An encoding error, which would be a bug.
pub fn build_info(enc: &mut DescriptorEncoder) -> fmt::Result {
    family(
        enc,
        "build_info",
        "The running binary's version, as a label (the value is always 1)",
        [(
            BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            },
            ConstGauge::new(1_i64),
        )],
    )
}

/// The Prometheus process metrics (`process_*`, no prefix), read from `/proc/self` at each
/// scrape: resident memory, CPU seconds, open file descriptors and their limit, start time.
/// Register it on a registry without a prefix. Outside Linux, or when `/proc` cannot be
/// read, the series it cannot read are left out.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        #[cfg(target_os = "linux")]
        if let Some(p) = process::read() {
            use prometheus_client::metrics::counter::ConstCounter;
            metric(
                &mut enc,
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                &ConstCounter::new(p.cpu_seconds),
            )?;
            gauge(
                &mut enc,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                p.resident_bytes,
            )?;
            gauge(
                &mut enc,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                p.virtual_bytes,
            )?;
            metric(
                &mut enc,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                &ConstGauge::new(p.start_time_seconds),
            )?;
            if let Some(n) = p.open_fds {
                gauge(
                    &mut enc,
                    "process_open_fds",
                    "Number of open file descriptors",
                    n,
                )?;
            }
            if let Some(n) = p.max_fds {
                gauge(
                    &mut enc,
                    "process_max_fds",
                    "Maximum number of open file descriptors",
                    n,
                )?;
            }
        }
        let _ = &mut enc;
        Ok(())
    }
}

/// Reading `/proc/self` for [`ProcessCollector`].
#[cfg(target_os = "linux")]
mod process {
    use nix::unistd::{SysconfVar, sysconf};

    /// What a scrape reports.
    pub(super) struct Process {
        pub cpu_seconds: f64,
        pub resident_bytes: u64,
        pub virtual_bytes: u64,
        pub start_time_seconds: f64,
        pub open_fds: Option<u64>,
        pub max_fds: Option<u64>,
    }

    /// The process's figures now; `None` when `/proc/self/stat` or `/proc/stat` cannot be
    /// read or parsed.
    pub(super) fn read() -> Option<Process> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let f = stat_fields(&stat)?;
        let ticks = sysconf(SysconfVar::CLK_TCK).ok()??;
        let page = sysconf(SysconfVar::PAGE_SIZE).ok()??;
        let (ticks, page) = (u64::try_from(ticks).ok()?, u64::try_from(page).ok()?);
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let btime: u64 = boot
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
        // Fields counted from the state (the third of stat(5)): utime 14, stime 15,
        // starttime 22, vsize 23, rss 24 in stat(5)'s numbering.
        let (utime, stime, start, vsize, rss) = (n(11)?, n(12)?, n(19)?, n(20)?, n(21)?);
        Some(Process {
            cpu_seconds: (utime + stime) as f64 / ticks as f64,
            resident_bytes: rss * page,
            virtual_bytes: vsize,
            start_time_seconds: btime as f64 + start as f64 / ticks as f64,
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as u64),
            max_fds: max_fds(),
        })
    }

    /// The fields of `/proc/self/stat` after the command name (which may hold spaces and
    /// parentheses, so it is skipped up to its last `)`), from the state on.
    fn stat_fields(stat: &str) -> Option<Vec<&str>> {
        let (_, rest) = stat.rsplit_once(')')?;
        Some(rest.split_ascii_whitespace().collect())
    }

    /// The soft limit of open files, from `/proc/self/limits`.
    fn max_fds() -> Option<u64> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_ascii_whitespace().nth(3)?.parse().ok()
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn this_process_reads_sensibly() {
            let p = super::read().expect("/proc/self is readable");
            assert!(p.resident_bytes > 1 << 20, "{}", p.resident_bytes);
            assert!(p.virtual_bytes >= p.resident_bytes);
            assert!(p.open_fds.unwrap() >= 3);
            assert!(p.max_fds.unwrap() >= p.open_fds.unwrap());
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            assert!(p.start_time_seconds <= now + 1.0 && p.start_time_seconds > now - 86400.0);
            assert!(super::stat_fields("1 (a) b) c) S 1 2").unwrap()[0] == "S");
        }
    }
}

/// Label set of `webrep_allocator_bytes`: which of jemalloc's totals.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AllocatorLabels {
    kind: &'static str,
}

/// Writes `allocator_bytes{kind}`: jemalloc's totals at scrape time (`allocated`: bytes the
/// program holds; `active`: pages holding them; `resident`: pages the allocator keeps
/// resident, metadata and not yet purged pages included; `retained`: address space given
/// back to the system but kept mapped; `metadata`: the allocator's own). Resident far above
/// allocated means memory held by the allocator; allocated near resident means live data.
/// Nothing is written where jemalloc is not the allocator in use (its totals would be zero),
/// as in the library's tests.
///
/// # Errors
/// An encoding error, which would be a bug.
pub fn allocator(enc: &mut DescriptorEncoder) -> fmt::Result {
    use tikv_jemalloc_ctl::{epoch, stats};
    if epoch::advance().is_err() {
        return Ok(());
    }
    let read = [
        ("allocated", stats::allocated::read()),
        ("active", stats::active::read()),
        ("resident", stats::resident::read()),
        ("retained", stats::retained::read()),
        ("metadata", stats::metadata::read()),
    ];
    if !matches!(read[0].1, Ok(n) if n > 0) {
        return Ok(());
    }
    family(
        enc,
        "allocator_bytes",
        "Memory by the allocator's accounting (jemalloc): allocated, active, resident, retained, metadata",
        read.into_iter().filter_map(|(kind, n)| {
            let n = i64::try_from(n.ok()?).unwrap_or(i64::MAX);
            Some((AllocatorLabels { kind }, ConstGauge::new(n)))
        }),
    )
}

/// A response with a fixed Content-Type.
pub fn reply(status: StatusCode, ctype: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

/// The answer to `GET /metrics` from an encoded registry (or its encoding error).
pub fn scrape_answer(
    method: &http::Method,
    text: Result<String, std::fmt::Error>,
) -> Response<Full<Bytes>> {
    match (method == http::Method::GET, text) {
        (true, Ok(text)) => reply(StatusCode::OK, OPENMETRICS, text),
        (true, Err(_)) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "metrics encoding failed\n".into(),
        ),
        (false, _) => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        ),
    }
}

/// A client that sends no complete request head within this is disconnected.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connections an admin listener serves at once; further clients wait in the backlog (or
/// an idle connection is closed for them).
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Connections one client address may hold open to an admin listener.
const ADMIN_MAX_CONNECTIONS_PER_CLIENT: usize = 16;

/// Serves HTTP/1.1 on `listener` with `handler` until `shutdown` is cancelled, at most
/// `ADMIN_MAX_CONNECTIONS` connections at once (`ADMIN_MAX_CONNECTIONS_PER_CLIENT` from
/// one address, 429 beyond). Connections still open at shutdown end with the runtime.
pub async fn serve<F, Fut>(listener: TcpListener, shutdown: CancellationToken, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let limits = crate::conns::ConnLimits::new(
        ADMIN_MAX_CONNECTIONS,
        ADMIN_MAX_CONNECTIONS_PER_CLIENT,
        "text/plain; charset=utf-8",
        "too many connections from your address\n",
    );
    let connections = tokio_util::task::TaskTracker::new();
    let serve = |conn: crate::conns::Admitted| {
        let handler = handler.clone();
        async move {
            let _permit = conn.permit;
            let svc = hyper::service::service_fn(move |req| {
                let fut = handler(req);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(conn.stream), svc)
                .await;
        }
    };
    crate::conns::accept_loop(&listener, &limits, &connections, &shutdown, serve).await;
}

/// The connection-limit families of one listener set ([`crate::conns::ConnLimits`]): a gauge
/// of open connections and the counters of refused and idle-closed ones, under `names`
/// (gauge, refused, closed idle) with the values `counts` (open, refused, closed idle);
/// `limit_keys` names the two config keys in the help texts.
///
/// # Errors
/// An encoding error, which would be a bug.
pub fn conn_limits(
    enc: &mut DescriptorEncoder,
    names: [&str; 3],
    what: &str,
    limit_keys: [&str; 2],
    counts: [u64; 3],
) -> fmt::Result {
    let [open, refused, closed] = names;
    let [per_client, total] = limit_keys;
    let [n_open, n_refused, n_closed] = counts;
    gauge(enc, open, &format!("{what} connections open"), n_open)?;
    counter(
        enc,
        refused,
        &format!(
            "{what} connections refused (429) because their client address had {per_client} open"
        ),
        n_refused,
    )?;
    counter(
        enc,
        closed,
        &format!("Idle {what} connections closed to make room for a new client at {total}"),
        n_closed,
    )
}

/// The values [`conn_limits`] writes, read now: open, refused, closed idle.
pub fn conn_counts(conns: &crate::conns::ConnLimits) -> [u64; 3] {
    use std::sync::atomic::Ordering::Relaxed;
    [
        u64::try_from(conns.open()).unwrap_or(u64::MAX),
        conns.stats.refused_per_client.load(Relaxed),
        conns.stats.closed_idle.load(Relaxed),
    ]
}

#[cfg(test)]
mod tests {
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::EncodeLabelSet;

    use super::*;

    #[derive(Debug, EncodeLabelSet)]
    struct Side {
        side: &'static str,
    }

    #[derive(Debug)]
    struct Writes;

    impl Collector for Writes {
        fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
            counters(&mut enc, "none", "Never written", Vec::<(Side, u64)>::new())?;
            counters(&mut enc, "sides", "By side", [(Side { side: "left" }, 2)])?;
            gauge(&mut enc, "big", "Clamped", u64::MAX)?;
            conn_limits(
                &mut enc,
                ["open", "refused", "idle"],
                "X",
                ["a", "b"],
                [1, 2, 3],
            )
        }
    }

    /// What a registry did for registered metrics, the writers do for a collector: the
    /// prefix, HELP ended with a full stop, no empty family.
    #[test]
    fn writers_answer_as_a_registry_would() {
        let mut r = Registry::with_prefix("p");
        r.register_collector(Box::new(Writes));
        let text = encode(&r).unwrap();
        for want in [
            "# HELP p_sides By side.\n# TYPE p_sides counter\np_sides_total{side=\"left\"} 2\n",
            "p_big 9223372036854775807\n",
            "# HELP p_open X connections open.\n",
            "p_refused_total 2\n",
            "# HELP p_idle Idle X connections closed to make room for a new client at b.\n",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
        assert!(!text.contains("p_none"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
