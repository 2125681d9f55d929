//! The validated `proxy:` section (with the top-level `pac:` section, which the proxy's own
//! pages serve): listeners, who may use the proxy and where it may go, static hosts and the
//! DNS cache, worker threads, connection and header limits, timeouts, and the `Via` name.
//!
//! Read by the proxy when it binds and by every connection it serves. Fails on listen
//! addresses that are not `ip:port` (or none), bad networks, bad `hosts` entries, port 0,
//! zero limits and timeouts, values outside their documented ranges, and a `via_name` that
//! is not a token; each error names its key.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::check::{InvalidValue, millis, parse_nets, socket_addr};
use super::dns::{DnsCacheConfig, StaticHosts};
use super::pac::PacConfig;
use super::raw::{RawPacConfig, RawProxyConfig};

/// Validated `proxy:` section. Field meanings are documented on [`RawProxyConfig`].
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen: Vec<SocketAddr>,
    pub allowed_clients: Vec<IpNet>,
    pub connect_ports: Vec<u16>,
    pub allow_internal_destinations: bool,
    pub refused_destinations: Vec<IpNet>,
    /// `proxy.hosts`, validated.
    pub static_hosts: StaticHosts,
    /// The `proxy.dns_*` keys.
    pub dns_cache: DnsCacheConfig,
    /// Resolved: never 0.
    pub workers: usize,
    pub max_connections: usize,
    /// 0: no per-client limit.
    pub max_connections_per_client: usize,
    pub max_header_bytes: usize,
    pub max_header_lines: usize,
    pub header_read_timeout: Duration,
    pub client_idle_timeout: Duration,
    /// `None`: idle keep-alive connections keep their HTTP buffers.
    pub client_park_after: Option<Duration>,
    pub upstream_connect_timeout: Duration,
    pub happy_eyeballs_delay: Duration,
    pub upstream_response_timeout: Duration,
    pub upstream_idle_timeout: Duration,
    pub upstream_max_idle_per_host: usize,
    /// Idle upstream connections in the whole process (split among the workers).
    pub upstream_max_idle: usize,
    pub upstream_read_buffer_bytes: usize,
    pub tunnel_idle_timeout: Duration,
    /// Relay plain TCP tunnels with `splice(2)` (Linux).
    pub splice: bool,
    pub shutdown_grace_period: Duration,
    pub preserve_header_case: bool,
    pub via_name: String,
    /// The top-level `pac:` section, validated (served by the proxy's own pages).
    pub pac: PacConfig,
}

impl ProxyConfig {
    /// Validates the `proxy:` section and the `pac:` section it carries.
    pub(super) fn validate(p: RawProxyConfig, pac: RawPacConfig) -> Result<Self, InvalidValue> {
        let listen = listen_addrs(&p.listen)?;
        let allowed_clients = parse_nets(&p.allowed_clients)
            .map_err(|r| InvalidValue::new("proxy.allowed_clients", r))?;
        let refused_destinations = parse_nets(&p.destinations.refuse)
            .map_err(|r| InvalidValue::new("proxy.destinations.refuse", r))?;
        let static_hosts =
            StaticHosts::parse(&p.hosts).map_err(|r| InvalidValue::new("proxy.hosts", r))?;
        check_limits(&p)?;
        let via_name = match &p.via_name {
            Some(name) => checked_via_name(name)?,
            None => default_via_name(),
        };
        let dns_cache = DnsCacheConfig::try_from(&p)?;
        let workers = match p.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n if n > 1024 => {
                return Err(InvalidValue::new(
                    "proxy.workers",
                    format!("{n} is more than 1024"),
                ));
            }
            n => n,
        };
        let max_header_lines = match p.max_header_lines {
            n @ 8..=10_000 => n,
            n => {
                return Err(InvalidValue::new(
                    "proxy.max_header_lines",
                    format!("{n} is outside 8 to 10000"),
                ));
            }
        };
        let t = Timeouts::try_from(&p)?;
        Ok(ProxyConfig {
            listen,
            allowed_clients,
            connect_ports: p.connect_ports,
            allow_internal_destinations: p.destinations.allow_internal,
            refused_destinations,
            static_hosts,
            dns_cache,
            workers,
            max_connections: p.max_connections,
            max_connections_per_client: p.max_connections_per_client,
            max_header_bytes: p.max_header_bytes,
            max_header_lines,
            header_read_timeout: t.header_read,
            client_idle_timeout: t.client_idle,
            client_park_after: (p.client_park_after_ms > 0)
                .then(|| Duration::from_millis(p.client_park_after_ms)),
            upstream_connect_timeout: t.upstream_connect,
            happy_eyeballs_delay: t.happy_eyeballs_delay,
            upstream_response_timeout: t.upstream_response,
            upstream_idle_timeout: t.upstream_idle,
            upstream_max_idle_per_host: p.upstream_max_idle_per_host,
            upstream_max_idle: within(
                "proxy.upstream_max_idle",
                p.upstream_max_idle,
                1..=1_000_000,
            )?,
            upstream_read_buffer_bytes: t.upstream_read_buffer_bytes,
            tunnel_idle_timeout: t.tunnel_idle,
            splice: p.splice,
            shutdown_grace_period: Duration::from_millis(p.shutdown_grace_period_ms),
            preserve_header_case: p.preserve_header_case,
            via_name,
            pac: PacConfig::try_from(pac)?,
        })
    }
}

impl ProxyConfig {
    /// This section with the settings a reload applies (the `proxy.*` and `pac` keys of
    /// [`super::live::PROXY_LIVE`]) taken from `new`; everything else as it runs.
    pub fn with_live(&self, new: &ProxyConfig) -> ProxyConfig {
        ProxyConfig {
            connect_ports: new.connect_ports.clone(),
            header_read_timeout: new.header_read_timeout,
            client_idle_timeout: new.client_idle_timeout,
            upstream_response_timeout: new.upstream_response_timeout,
            tunnel_idle_timeout: new.tunnel_idle_timeout,
            splice: new.splice,
            shutdown_grace_period: new.shutdown_grace_period,
            pac: new.pac.clone(),
            ..self.clone()
        }
    }
}

/// `n` when `range` holds it, else an error naming `key` and the range.
fn within<T: PartialOrd + std::fmt::Display>(
    key: &'static str,
    n: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, InvalidValue> {
    if range.contains(&n) {
        return Ok(n);
    }
    Err(InvalidValue::new(
        key,
        format!("{n} is outside {}..={}", range.start(), range.end()),
    ))
}

/// `proxy.listen`: at least one `ip:port`.
fn listen_addrs(listen: &[String]) -> Result<Vec<SocketAddr>, InvalidValue> {
    if listen.is_empty() {
        return Err(InvalidValue::new(
            "proxy.listen",
            "at least one address is needed",
        ));
    }
    listen
        .iter()
        .map(|s| socket_addr("proxy.listen", s))
        .collect()
}

/// The ports and sizes that have a floor.
fn check_limits(p: &RawProxyConfig) -> Result<(), InvalidValue> {
    if p.connect_ports.contains(&0) {
        return Err(InvalidValue::new(
            "proxy.connect_ports",
            "port 0 is not a port",
        ));
    }
    if p.max_connections == 0 {
        return Err(InvalidValue::new(
            "proxy.max_connections",
            "must be at least 1",
        ));
    }
    if p.max_header_bytes < 1024 {
        return Err(InvalidValue::new(
            "proxy.max_header_bytes",
            format!("{} is below the minimum of 1024", p.max_header_bytes),
        ));
    }
    Ok(())
}

/// The deadlines of the section (and the upstream read buffer, checked in the same pass so
/// that errors come in the order of the keys).
struct Timeouts {
    header_read: Duration,
    client_idle: Duration,
    upstream_connect: Duration,
    happy_eyeballs_delay: Duration,
    upstream_response: Duration,
    upstream_idle: Duration,
    upstream_read_buffer_bytes: usize,
    tunnel_idle: Duration,
}

impl TryFrom<&RawProxyConfig> for Timeouts {
    type Error = InvalidValue;

    fn try_from(p: &RawProxyConfig) -> Result<Self, InvalidValue> {
        Ok(Timeouts {
            header_read: millis("proxy.header_read_timeout_ms", p.header_read_timeout_ms)?,
            client_idle: millis("proxy.client_idle_timeout_ms", p.client_idle_timeout_ms)?,
            upstream_connect: millis(
                "proxy.upstream_connect_timeout_ms",
                p.upstream_connect_timeout_ms,
            )?,
            happy_eyeballs_delay: Duration::from_millis(within(
                "proxy.happy_eyeballs_delay_ms",
                p.happy_eyeballs_delay_ms,
                10..=60_000,
            )?),
            upstream_response: millis(
                "proxy.upstream_response_timeout_ms",
                p.upstream_response_timeout_ms,
            )?,
            upstream_idle: millis("proxy.upstream_idle_timeout_ms", p.upstream_idle_timeout_ms)?,
            upstream_read_buffer_bytes: within(
                "proxy.upstream_read_buffer_bytes",
                p.upstream_read_buffer_bytes,
                8192..=16_777_216,
            )?,
            tunnel_idle: millis("proxy.tunnel_idle_timeout_ms", p.tunnel_idle_timeout_ms)?,
        })
    }
}

/// A configured `proxy.via_name`: letters, digits, `-`, `.` and `_`.
fn checked_via_name(name: &str) -> Result<String, InvalidValue> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(InvalidValue::new(
            "proxy.via_name",
            format!("{name:?}: use letters, digits, '-', '.' and '_' only"),
        ));
    }
    Ok(name.to_owned())
}

/// `webrep-<hostname>`, or `webrep` when the host name is unknown or unusable.
fn default_via_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        });
    match host {
        Some(h) => format!("webrep-{h}"),
        None => "webrep".to_owned(),
    }
}
