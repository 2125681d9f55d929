//! `/proxy.pac` and `/wpad.dat` fetched from the real proxy and evaluated by a real JavaScript
//! engine (node), with the standard PAC helper functions defined here and a fixed resolver
//! stub. Skipped, saying so, where node is missing, unless `WEBREP_REQUIRE_NODE` is set
//! (`.ci/run` installs Debian's nodejs and sets it).

use std::process::Command;

use crate::harness::*;

/// The PAC helpers browsers provide (the subset our files may use, and a few more), with
/// `dnsResolve` answering from a fixed table so that nothing is looked up.
const PAC_HELPERS: &str = r#"
var RESOLVER = { "db.internal.test": "10.9.9.9", "www.example.com": "93.184.215.14" };
function dnsResolve(host) {
  if (/^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$/.test(host)) return host;
  return Object.prototype.hasOwnProperty.call(RESOLVER, host) ? RESOLVER[host] : null;
}
function myIpAddress() { return "127.0.0.1"; }
function isPlainHostName(host) { return host.indexOf(".") < 0; }
function dnsDomainIs(host, domain) {
  return host.length >= domain.length && host.substring(host.length - domain.length) == domain;
}
function localHostOrDomainIs(host, hostdom) {
  return host == hostdom || hostdom.lastIndexOf(host + ".", 0) == 0;
}
function isResolvable(host) { return dnsResolve(host) !== null; }
function dnsDomainLevels(host) { return host.split(".").length - 1; }
function shExpMatch(str, pattern) {
  var re = pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
  return new RegExp("^" + re + "$").test(str);
}
function ipToInt(ip) {
  var p = ip.split(".");
  return ((+p[0] << 24) | (+p[1] << 16) | (+p[2] << 8) | +p[3]) >>> 0;
}
function isInNet(host, pattern, mask) {
  var ip = dnsResolve(host);
  if (ip === null) return false;
  var m = ipToInt(mask);
  return ((ipToInt(ip) & m) >>> 0) == ((ipToInt(pattern) & m) >>> 0);
}
"#;

/// `node`, or `None` (after saying so) when it is missing and not required.
fn node() -> Option<&'static str> {
    if Command::new("node").arg("--version").output().is_ok() {
        return Some("node");
    }
    assert!(
        std::env::var_os("WEBREP_REQUIRE_NODE").is_none(),
        "node is not installed but WEBREP_REQUIRE_NODE is set (Debian: apt-get install nodejs)"
    );
    eprintln!("SKIPPED: node is not installed (Debian: apt-get install nodejs)");
    None
}

/// Evaluates `FindProxyForURL` of `pac` in node for each URL, returning the answers.
fn evaluate(node: &str, pac: &str, urls: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let cases = serde_json::to_string(
        &urls
            .iter()
            .map(|u| {
                let host = u
                    .split("://")
                    .nth(1)
                    .unwrap()
                    .split(['/', ':'])
                    .next()
                    .unwrap();
                [u.to_string(), host.to_string()]
            })
            .collect::<Vec<_>>(),
    )
    .unwrap();
    // The PAC file runs in its own context with only the helpers, as in a browser.
    let script = format!(
        "const vm = require('vm');\n\
         const ctx = vm.createContext({{}});\n\
         vm.runInContext({helpers}, ctx, {{ filename: 'helpers.js' }});\n\
         vm.runInContext(require('fs').readFileSync(process.argv[2], 'utf8'), ctx, {{ filename: 'proxy.pac' }});\n\
         const out = {cases}.map(([u, h]) => ctx.FindProxyForURL(u, h));\n\
         console.log(JSON.stringify(out));\n",
        helpers = serde_json::to_string(PAC_HELPERS).unwrap(),
    );
    let js = dir.path().join("eval.js");
    let pac_path = dir.path().join("proxy.pac");
    std::fs::write(&js, script).unwrap();
    std::fs::write(&pac_path, pac).unwrap();
    let out = Command::new(node).arg(&js).arg(&pac_path).output().unwrap();
    assert!(
        out.status.success(),
        "node failed: {}\nPAC:\n{pac}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "node printed {:?}: {e}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

async fn fetch(url: String) -> (String, String) {
    let resp = plain_get(url).await.unwrap();
    assert_eq!(resp.status(), 200);
    let ctype = resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    (ctype, resp.text().await.unwrap())
}

#[tokio::test]
async fn pac_file_sends_intranet_direct_and_the_rest_through_the_proxy() {
    let proxy = TestProxy::start_with(|c| {
        c.pac.bypass = [
            "<local>",
            ".corp.example",
            "*.lab.test",
            "intranet.test",
            "10.0.0.0/8",
            "192.168.1.7",
        ]
        .map(String::from)
        .into();
    })
    .await;
    let (ctype, pac) = fetch(format!("{}/proxy.pac", proxy.url())).await;
    assert_eq!(ctype, "application/x-ns-proxy-autoconfig");
    let (ctype, wpad) = fetch(format!("{}/wpad.dat", proxy.url())).await;
    assert_eq!(ctype, "application/x-ns-proxy-autoconfig");
    assert_eq!(pac, wpad);
    // The index page links the PAC file and the CA page.
    let index = plain_text(format!("{}/", proxy.url())).await;
    assert!(index.contains("href=\"/proxy.pac\""), "{index}");
    assert!(index.contains("href=\"/ca\""), "{index}");

    let Some(node) = node() else { return };
    let via = format!("PROXY {}", proxy.addr);
    let cases = [
        ("http://wiki.corp.example/page", "DIRECT"),
        ("https://corp.example/", "DIRECT"),
        ("http://a.b.corp.example:8080/", "DIRECT"),
        ("http://WIKI.Corp.Example./", "DIRECT"),
        ("http://build.lab.test/", "DIRECT"),
        ("http://lab.test/", via.as_str()),
        ("http://intranet.test/", "DIRECT"),
        ("http://www.intranet.test/", via.as_str()),
        ("http://intranet/", "DIRECT"),
        ("http://10.20.30.40/", "DIRECT"),
        ("https://10.255.255.255:8443/x", "DIRECT"),
        ("http://192.168.1.7/", "DIRECT"),
        ("http://192.168.1.8/", via.as_str()),
        ("http://11.0.0.1/", via.as_str()),
        ("http://notcorp.example/", via.as_str()),
        ("http://corp.example.evil.test/", via.as_str()),
        // Networks match addresses only: a name that resolves into 10/8 is proxied.
        ("http://db.internal.test/", via.as_str()),
        ("https://www.example.com/", via.as_str()),
    ];
    let urls: Vec<&str> = cases.iter().map(|(u, _)| *u).collect();
    let got = evaluate(node, &pac, &urls);
    for ((url, want), got) in cases.iter().zip(&got) {
        assert_eq!(got, want, "FindProxyForURL({url:?})\nPAC:\n{pac}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn pac_file_names_the_configured_proxy_with_direct_fallback() {
    let proxy = TestProxy::start_with(|c| {
        c.pac.proxy = Some("Proxy.Corp.Example:8080".into());
        c.pac.direct_fallback = true;
    })
    .await;
    let (_, pac) = fetch(format!("{}/proxy.pac", proxy.url())).await;
    let Some(node) = node() else { return };
    let got = evaluate(node, &pac, &["http://www.example.com/", "http://10.1.1.1/"]);
    assert_eq!(
        got,
        [
            "PROXY proxy.corp.example:8080; DIRECT",
            "PROXY proxy.corp.example:8080; DIRECT"
        ]
    );
    proxy.stop().await;
}

#[test]
fn pac_values_that_could_inject_code_are_config_errors() {
    for (yaml, key) in [
        (
            "pac:\n  bypass: [\"a\\\"; return 'DIRECT'; //\"]\n",
            "pac.bypass",
        ),
        ("pac:\n  bypass: [\"corp.example\\n}\"]\n", "pac.bypass"),
        ("pac:\n  bypass: [\"fd00::/8\"]\n", "pac.bypass"),
        ("pac:\n  bypass: [\"10.0.0.0/40\"]\n", "pac.bypass"),
        ("pac:\n  proxy: \"p\\\";alert(1);//:80\"\n", "pac.proxy"),
        ("pac:\n  proxy: \"proxy.corp\"\n", "pac.proxy"),
    ] {
        let err = webrep::config::Config::from_yaml(yaml, "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{yaml:?} gave {err}");
    }
}
