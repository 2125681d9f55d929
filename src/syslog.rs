//! Syslog messages as RFC 5424 defines them, sent one per datagram to a Unix datagram socket
//! (the local syslog daemon or journald on `/dev/log`) or over UDP (RFC 5426).
//!
//! Where it sits: the access log's writer thread ([`crate::accesslog`]) holds a [`Sender`]
//! when `access_log.syslog.enabled` is on and hands it each line; [`Target`] and
//! [`facility`] are what the config section is checked with.
//!
//! A message is `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [origin ...] BOM MSG`: the
//! priority is the configured facility with severity `info`, the timestamp is when the line
//! is sent (UTC, milliseconds; the line carries the request's own time), MSGID is `access`,
//! the `origin` structured data element (IANA-registered) names the software and its
//! version, and the message is the UTF-8 line, after the byte order mark RFC 5424 asks for.
//!
//! Cost: one small allocation and one `send` per line, on the writer thread, never on the
//! request path. Failure: a send that fails (no daemon listening, a full socket buffer past
//! [`SEND_TIMEOUT`]) is an error for the caller to count; a Unix socket is connected again
//! on the next send, so a restarted daemon is found again.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How long one send may block on a full socket buffer before the line counts as lost.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Severity `info` (RFC 5424, 6.2.1).
const SEVERITY_INFO: u8 = 6;

/// Where messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Unix datagram socket (`/dev/log`).
    Unix(PathBuf),
    /// A syslog receiver over UDP.
    Udp(SocketAddr),
}

impl Target {
    /// An absolute path is a Unix socket, `ip:port` is UDP.
    ///
    /// # Errors
    /// Anything else, with what is expected.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.starts_with('/') {
            return Ok(Target::Unix(PathBuf::from(s)));
        }
        s.parse::<SocketAddr>().map(Target::Udp).map_err(|_| {
            format!("{s:?} is neither an absolute path (Unix socket) nor ip:port (UDP)")
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Unix(p) => write!(f, "unixgram:{}", p.display()),
            Target::Udp(a) => write!(f, "udp:{a}"),
        }
    }
}

/// The facility code of a facility name (RFC 5424, 6.2.1); `None` for an unknown name.
pub fn facility(name: &str) -> Option<u8> {
    Some(match name {
        "user" => 1,
        "daemon" => 3,
        "auth" => 4,
        "authpriv" => 10,
        "local0" => 16,
        "local1" => 17,
        "local2" => 18,
        "local3" => 19,
        "local4" => 20,
        "local5" => 21,
        "local6" => 22,
        "local7" => 23,
        _ => return None,
    })
}

/// Whether `s` is a valid APP-NAME: 1 to 48 printable ASCII characters, no space.
pub fn is_app_name(s: &str) -> bool {
    (1..=48).contains(&s.len()) && s.bytes().all(|b| (33..=126).contains(&b))
}

/// What every message of a sender shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub target: Target,
    /// A code [`facility`] returned.
    pub facility: u8,
    /// Checked with [`is_app_name`].
    pub app_name: String,
}

enum Socket {
    Unix(Option<std::os::unix::net::UnixDatagram>, PathBuf),
    Udp(std::net::UdpSocket),
}

/// Sends lines as RFC 5424 messages (see the module docs).
pub struct Sender {
    socket: Socket,
    /// `<PRI>1 ` up to the timestamp.
    head: String,
    /// ` HOSTNAME APP-NAME PROCID MSGID SD BOM`, after the timestamp.
    tail: Vec<u8>,
}

impl Sender {
    /// A sender to `settings.target`. A Unix socket is connected at the first send; a UDP
    /// socket is bound (to an ephemeral port) and connected now.
    ///
    /// # Errors
    /// When the UDP socket cannot be bound or connected.
    pub fn new(settings: &Settings) -> io::Result<Self> {
        let socket = match &settings.target {
            Target::Unix(p) => Socket::Unix(None, p.clone()),
            Target::Udp(addr) => {
                let any: SocketAddr = if addr.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let s = std::net::UdpSocket::bind(any)?;
                s.connect(addr)?;
                s.set_write_timeout(Some(SEND_TIMEOUT))?;
                Socket::Udp(s)
            }
        };
        let head = format!("<{}>1 ", settings.facility * 8 + SEVERITY_INFO);
        let mut tail = format!(
            " {} {} {} access [origin software=\"webrep\" swVersion=\"{}\"] ",
            hostname(),
            settings.app_name,
            std::process::id(),
            env!("CARGO_PKG_VERSION"),
        )
        .into_bytes();
        tail.extend_from_slice(b"\xEF\xBB\xBF");
        Ok(Self { socket, head, tail })
    }

    /// Sends `line` (without its newline) as one message.
    ///
    /// # Errors
    /// When the datagram cannot be sent (see the module docs).
    pub fn send(&mut self, line: &[u8]) -> io::Result<()> {
        let mut msg = String::with_capacity(self.head.len() + 24);
        msg.push_str(&self.head);
        let _ = write!(msg, "{:.3}", jiff::Timestamp::now());
        let mut msg = msg.into_bytes();
        msg.extend_from_slice(&self.tail);
        msg.extend_from_slice(line);
        match &mut self.socket {
            Socket::Udp(s) => s.send(&msg).map(drop),
            Socket::Unix(s, path) => send_unix(s, path, &msg),
        }
    }
}

/// Sends on the connected Unix socket, connecting (again) first when there is none or the
/// last send found the receiver gone.
fn send_unix(
    slot: &mut Option<std::os::unix::net::UnixDatagram>,
    path: &std::path::Path,
    msg: &[u8],
) -> io::Result<()> {
    if let Some(s) = slot.as_ref() {
        match s.send(msg) {
            Ok(_) => return Ok(()),
            // The daemon restarted: its socket is a new one.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::NotConnected
                        | io::ErrorKind::NotFound
                ) => {}
            Err(e) => return Err(e),
        }
    }
    *slot = None;
    let s = std::os::unix::net::UnixDatagram::unbound()?;
    s.connect(path)?;
    s.set_write_timeout(Some(SEND_TIMEOUT))?;
    let sent = s.send(msg).map(drop);
    *slot = Some(s);
    sent
}

/// This host's name for the HOSTNAME field, `-` when it is unknown or unusable.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| (1..=255).contains(&h.len()) && h.bytes().all(|b| (33..=126).contains(&b)))
        .unwrap_or_else(|| "-".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_absolute_paths_or_socket_addresses() {
        assert_eq!(
            Target::parse("/dev/log"),
            Ok(Target::Unix("/dev/log".into()))
        );
        assert_eq!(
            Target::parse("192.0.2.1:514"),
            Ok(Target::Udp("192.0.2.1:514".parse().unwrap()))
        );
        assert_eq!(
            Target::parse("[2001:db8::1]:514"),
            Ok(Target::Udp("[2001:db8::1]:514".parse().unwrap()))
        );
        for bad in ["dev/log", "loghost:514", "192.0.2.1", ""] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn facilities_and_app_names() {
        assert_eq!(facility("local0"), Some(16));
        assert_eq!(facility("daemon"), Some(3));
        assert_eq!(facility("kern"), None);
        assert!(is_app_name("webrep"));
        assert!(!is_app_name("web rep"));
        assert!(!is_app_name(""));
        assert!(!is_app_name(&"a".repeat(49)));
    }

    #[test]
    fn a_udp_message_is_one_rfc_5424_frame() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tx = Sender::new(&Settings {
            target: Target::Udp(rx.local_addr().unwrap()),
            facility: 16,
            app_name: "webrep-test".into(),
        })
        .unwrap();
        tx.send(b"{\"a\":\"\xc3\xa9\"}").unwrap();
        let mut buf = [0u8; 2048];
        let n = rx.recv(&mut buf).unwrap();
        let msg = &buf[..n];
        let bom = msg.windows(3).position(|w| w == b"\xEF\xBB\xBF").unwrap();
        assert_eq!(&msg[bom + 3..], "{\"a\":\"é\"}".as_bytes());
        let head = std::str::from_utf8(&msg[..bom]).unwrap();
        let f: Vec<&str> = head.splitn(7, ' ').collect();
        assert_eq!(f[0], "<134>1", "local0.info");
        assert!(f[1].parse::<jiff::Timestamp>().is_ok(), "{head}");
        assert!(f[1].ends_with('Z'));
        assert_eq!(f[3], "webrep-test");
        assert_eq!(f[4], std::process::id().to_string());
        assert_eq!(f[5], "access");
        assert_eq!(
            f[6],
            format!(
                "[origin software=\"webrep\" swVersion=\"{}\"] ",
                env!("CARGO_PKG_VERSION")
            )
        );
    }
}
