//! The zero-copy relay (`proxy.splice`) through the real proxy: CONNECT tunnels to a raw TCP
//! origin moving megabytes both ways byte-exact, half-close, an origin that dies mid-body, a
//! WebSocket; each checks on the admin `/metrics` which path moved the bytes, so a silent
//! fall-back to copying fails the test.

use std::net::SocketAddr;

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::*;

/// A deterministic body of `len` bytes.
fn body(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(seed).rotate_left(7) >> 5) as u8)
        .collect()
}

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Bytes the proxy relayed by `path` ("splice" or "copy"), from its `/metrics`.
async fn relayed(proxy: &TestProxy, path: &str) -> u64 {
    let text = scrape(proxy.admin.unwrap()).await;
    sample(
        &text,
        &format!("webrep_tunnel_bytes_total{{path=\"{path}\"}}"),
    ) as u64
}

async fn proxy_with_splice(origin: SocketAddr, splice: bool) -> TestProxy {
    TestProxy::start_with(|c| {
        c.proxy.connect_ports = vec![443, origin.port()];
        c.proxy.splice = splice;
    })
    .await
}

/// Opens a tunnel to `origin`, with `early` sent in the same write as the `CONNECT` head
/// (so it sits in the proxy's HTTP read buffer when the tunnel starts).
async fn tunnel(proxy: &TestProxy, origin: SocketAddr, early: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let mut head = format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n").into_bytes();
    head.extend_from_slice(early);
    s.write_all(&head).await.unwrap();
    let answer = read_head(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    s
}

/// An origin that, on each connection, sends `down` while reading everything the client
/// sends, then closes its writing and reports what it read.
async fn exchange_origin(down: Vec<u8>) -> (SocketAddr, tokio::sync::mpsc::Receiver<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (tx, down) = (tx.clone(), down.clone());
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let send = async {
                    w.write_all(&down).await.unwrap();
                    w.shutdown().await.unwrap();
                };
                let mut got = Vec::new();
                let (_, read) = tokio::join!(send, r.read_to_end(&mut got));
                read.unwrap();
                let _ = tx.send(got).await;
            });
        }
    });
    (addr, rx)
}

/// Moves 3 MiB up and 2 MiB down at once through one tunnel and checks both byte-exact,
/// the access log's counts, and that the bytes went by `path`.
async fn megabytes_both_ways(splice: bool) {
    let down = body((2 << 20) + 4321, 2_654_435_761);
    let up = body(3 << 20, 40_503);
    let (origin, mut seen) = exchange_origin(down.clone()).await;
    let proxy = proxy_with_splice(origin, splice).await;
    let s = tunnel(&proxy, origin, b"early bytes|").await;
    let (mut r, mut w) = s.into_split();
    let up2 = up.clone();
    let send = async move {
        w.write_all(&up2).await.unwrap();
        w.shutdown().await.unwrap();
        w
    };
    let mut got = Vec::new();
    let (_w, read) = tokio::join!(send, r.read_to_end(&mut got));
    read.unwrap();
    assert_eq!(got.len(), down.len());
    assert!(sha(&got) == sha(&down), "the client got the origin's bytes");
    let at_origin = seen.recv().await.unwrap();
    assert_eq!(&at_origin[..12], b"early bytes|");
    assert!(
        sha(&at_origin[12..]) == sha(&up),
        "the origin got the client's bytes"
    );
    let line = proxy.wait_log(|v| v["kind"] == "tunnel").await;
    assert_eq!(line["bytes_in"], (up.len() + 12) as u64, "{line}");
    assert_eq!(line["bytes_out"], down.len() as u64, "{line}");
    assert!(line.get("error").is_none_or(|e| e.is_null()), "{line}");
    let total = (up.len() + 12 + down.len()) as u64;
    let (spliced, copied) = (
        relayed(&proxy, "splice").await,
        relayed(&proxy, "copy").await,
    );
    if splice {
        assert_eq!((spliced, copied), (total, 0));
    } else {
        assert_eq!((spliced, copied), (0, total));
    }
    proxy.stop().await;
}

#[tokio::test]
async fn a_tunnel_splices_megabytes_both_ways_byte_exact() {
    megabytes_both_ways(true).await;
}

#[tokio::test]
async fn with_splice_off_a_tunnel_copies_the_same_bytes() {
    megabytes_both_ways(false).await;
}

#[tokio::test]
async fn a_half_closed_client_still_receives_the_whole_answer() {
    // The origin reads the request to its end (the client's half-close), then answers.
    let answer = body((1 << 20) + 99, 97);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = l.local_addr().unwrap();
    let answer2 = answer.clone();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut req = Vec::new();
        s.read_to_end(&mut req).await.unwrap();
        assert_eq!(req, b"the whole request");
        s.write_all(&answer2).await.unwrap();
        s.shutdown().await.unwrap();
    });
    let proxy = proxy_with_splice(origin, true).await;
    let mut s = tunnel(&proxy, origin, b"").await;
    s.write_all(b"the whole request").await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    assert!(
        sha(&got) == sha(&answer),
        "{} bytes of {}",
        got.len(),
        answer.len()
    );
    let line = proxy.wait_log(|v| v["kind"] == "tunnel").await;
    assert_eq!(line["bytes_in"], 17);
    assert_eq!(line["bytes_out"], answer.len() as u64);
    assert_eq!(
        relayed(&proxy, "splice").await,
        17 + answer.len() as u64,
        "spliced, not copied"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn an_origin_that_dies_mid_body_ends_the_tunnel_and_the_proxy_serves_on() {
    let sent = body(600_000, 13);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = l.local_addr().unwrap();
    let sent2 = sent.clone();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        // Once the tunnel is up (the client's first bytes are through), the body.
        let mut go = [0u8; 2];
        s.read_exact(&mut go).await.unwrap();
        s.write_all(&sent2).await.unwrap();
        // Dies with bytes unsent (a body that was to be longer): an abortive close.
        s.set_zero_linger().unwrap();
        drop(s);
        // Then serves the next tunnel normally.
        let (mut s, _) = l.accept().await.unwrap();
        s.write_all(b"still here").await.unwrap();
    });
    let proxy = proxy_with_splice(origin, true).await;
    let mut s = tunnel(&proxy, origin, b"go").await;
    let mut got = Vec::new();
    // The client sees its connection end (closed or reset), not a hang.
    let _ = s.read_to_end(&mut got).await;
    assert!(got.len() <= sent.len() && got[..] == sent[..got.len()]);
    let line = proxy
        .wait_log(|v| v["kind"] == "tunnel" && v["error"] == "connection_terminated")
        .await;
    assert!(
        line["bytes_out"].as_u64().unwrap() <= sent.len() as u64,
        "{line}"
    );
    assert!(relayed(&proxy, "splice").await >= got.len() as u64);
    assert_eq!(relayed(&proxy, "copy").await, 0);
    // The proxy keeps serving.
    let mut s = tunnel(&proxy, origin, b"").await;
    let mut got = [0u8; 10];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"still here");
    drop(s);
    proxy.stop().await;
}

#[tokio::test]
async fn a_websocket_between_plain_tcp_ends_is_spliced() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let origin = Origin::http().await;
    let proxy = TestProxy::start_default().await;
    let (_, mut ws) = websocket_through(proxy.addr, &origin).await;
    let big = body(1 << 20, 31);
    ws.send(Message::binary(big.clone())).await.unwrap();
    let back = ws.next().await.unwrap().unwrap().into_data();
    assert!(sha(&back) == sha(&big));
    ws.send(Message::text("ping")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("ping"));
    ws.close(None).await.unwrap();
    drop(ws);
    let line = proxy.wait_log(|v| v["kind"] == "websocket").await;
    let total = line["bytes_in"].as_u64().unwrap() + line["bytes_out"].as_u64().unwrap();
    assert!(total > 2 << 20, "{line}");
    assert_eq!(
        relayed(&proxy, "splice").await,
        total,
        "spliced, not copied"
    );
    assert_eq!(relayed(&proxy, "copy").await, 0);
    proxy.stop().await;
}
