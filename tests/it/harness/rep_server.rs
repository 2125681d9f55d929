//! The real reputation server, in-process on 127.0.0.1, with the clients tests use on it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use webrep::client::RepClient;
use webrep::config::{ApiConfig, FeedbackOptions};
use webrep::repserver::api::{ServeOptions, Tokens};
use webrep::repserver::forward::ForwardOptions;
use webrep::repserver::metrics::ServerStats;
use webrep::repserver::store::Store;

use super::{BOUND, eventually_ok, init_crypto};

/// The client bearer token every test reputation server accepts.
pub(crate) const CLIENT: &str = "client-token-0123456789";
/// The admin bearer token every test reputation server accepts.
pub(crate) const ADMIN: &str = "admin-token-0123456789";

/// How a [`RepServer`] is started: [`RepServer::builder`], then [`RepServerBuilder::start`].
pub(crate) struct RepServerBuilder {
    store: Option<Store>,
    db: Option<PathBuf>,
    config: ApiConfig,
    options: ServeOptions,
    metrics: bool,
    clients: Vec<String>,
}

impl RepServerBuilder {
    /// Serves `store` (a fresh in-memory store unless set; a restart gets a fresh one again).
    pub(crate) fn store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// Serves the store file `db`, which a restart opens again.
    pub(crate) fn file(mut self, db: &std::path::Path) -> Self {
        self.db = Some(db.to_owned());
        self
    }

    pub(crate) fn config(mut self, config: ApiConfig) -> Self {
        self.config = config;
        self
    }

    /// Serve options (TLS, upstream, read threads...), replacing any set before; counters
    /// are added when unset.
    pub(crate) fn options(mut self, options: ServeOptions) -> Self {
        self.options = options;
        self
    }

    /// Feedback options (escalation rules), kept across restarts.
    pub(crate) fn feedback(mut self, feedback: FeedbackOptions) -> Self {
        self.options.feedback = feedback;
        self
    }

    /// Serves `GET /metrics` on its own listener on 127.0.0.1:0 ([`RepServer::metrics`]).
    pub(crate) fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    /// Forwards its feedback events to an upstream tier, also after a restart.
    pub(crate) fn forward(mut self, forward: ForwardOptions) -> Self {
        self.options.forward = Some(forward);
        self
    }

    /// Follows the tier above with `follow`, reporting to `status`.
    pub(crate) fn follow(
        mut self,
        follow: webrep::repserver::follow::Follow,
        status: Arc<webrep::repserver::follow::FollowStatus>,
    ) -> Self {
        self.options.follow = Some(follow);
        self.options.follow_status = Some(status);
        self
    }

    /// Accepts these client tokens besides [`CLIENT`] (kept across restarts).
    pub(crate) fn clients(mut self, tokens: &[&str]) -> Self {
        self.clients = tokens.iter().map(|t| (*t).to_owned()).collect();
        self
    }

    pub(crate) async fn start(mut self) -> RepServer {
        init_crypto();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!(
            "{}://{addr}",
            if self.options.tls.is_some() {
                "https"
            } else {
                "http"
            }
        );
        let metrics = if self.metrics {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let a = l.local_addr().unwrap();
            self.options.metrics = Some(l);
            Some(a)
        } else {
            None
        };
        let stats = self.options.stats.get_or_insert_default().clone();
        let mut server = RepServer {
            admin: RepClient::new(&base, ADMIN, None).unwrap(),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            base,
            addr,
            metrics,
            stats,
            db: self.db,
            config: self.config,
            feedback: self.options.feedback.clone(),
            forward: self.options.forward.clone(),
            clients: self.clients,
            stop: CancellationToken::new(),
            task: None,
        };
        let store = match (self.store, &server.db) {
            (Some(store), _) => store,
            (None, Some(db)) => Store::open(db).unwrap(),
            (None, None) => Store::open_in_memory().unwrap(),
        };
        server.serve(listener, store, self.options);
        server
    }
}

/// The real reputation server, in-process, accepting the tokens [`CLIENT`] and [`ADMIN`]; it
/// can be stopped and started again on its address.
pub(crate) struct RepServer {
    /// `http://addr` (or `https://`).
    pub base: String,
    pub addr: SocketAddr,
    /// A client with the admin token.
    pub admin: RepClient,
    /// The client of [`RepServer::send`] (a TLS test swaps in one that trusts its CA).
    pub http: reqwest::Client,
    /// The metrics listener, when asked for.
    pub metrics: Option<SocketAddr>,
    pub stats: Arc<ServerStats>,
    db: Option<PathBuf>,
    config: ApiConfig,
    feedback: FeedbackOptions,
    forward: Option<ForwardOptions>,
    clients: Vec<String>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Drop for RepServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl RepServer {
    pub(crate) fn builder() -> RepServerBuilder {
        RepServerBuilder {
            store: None,
            db: None,
            config: ApiConfig::default(),
            options: ServeOptions::default(),
            metrics: false,
            clients: Vec::new(),
        }
    }

    /// A server on a fresh in-memory store with the default config.
    pub(crate) async fn start() -> RepServer {
        Self::builder().start().await
    }

    /// [`RepServer::start`] with `entries` written (`{"upsert": [...]}`).
    pub(crate) async fn serving(entries: serde_json::Value) -> RepServer {
        let server = Self::start().await;
        server.write(entries).await;
        server
    }

    fn serve(&mut self, listener: TcpListener, store: Store, options: ServeOptions) {
        self.stop = CancellationToken::new();
        let mut client = vec![CLIENT.to_owned()];
        client.extend(self.clients.iter().cloned());
        let tokens = Tokens {
            client,
            admin: vec![ADMIN.into()],
        };
        self.task = Some(tokio::spawn(webrep::repserver::api::serve_with(
            listener,
            store,
            tokens,
            self.config.clone(),
            options,
            self.stop.clone(),
        )));
    }

    /// Stops serving and waits until the server has ended cleanly (its store closed).
    pub(crate) async fn kill(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the server stops")
                .unwrap()
                .unwrap();
        }
    }

    pub(crate) async fn stop(mut self) {
        self.kill().await;
    }

    /// Serves again on the same address, config, feedback rules, forwarding, tokens and
    /// counters, with the same store file (or a fresh in-memory store).
    pub(crate) async fn restart(&mut self) {
        let store = match &self.db {
            Some(db) => Store::open(db).unwrap(),
            None => Store::open_in_memory().unwrap(),
        };
        self.restart_with(store).await;
    }

    /// Serves `store` again on the same address, config, feedback rules and counters.
    pub(crate) async fn restart_with(&mut self, store: Store) {
        let options = ServeOptions {
            feedback: self.feedback.clone(),
            stats: Some(self.stats.clone()),
            forward: self.forward.clone(),
            ..ServeOptions::default()
        };
        self.restart_with_options(store, options).await;
    }

    /// Serves `store` again on the same address and config with `options`.
    pub(crate) async fn restart_with_options(&mut self, store: Store, options: ServeOptions) {
        let addr = self.addr;
        let listener = eventually_ok(&format!("{addr} is free again"), BOUND, || async move {
            TcpListener::bind(addr).await
        })
        .await;
        self.serve(listener, store, options);
    }

    /// A request with an optional bearer token and JSON body: the status and the JSON answer.
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> (u16, serde_json::Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
        (status, v)
    }

    pub(crate) async fn get(&self, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::GET, path, token, None).await
    }

    pub(crate) async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::POST, path, token, Some(body.to_string()))
            .await
    }

    /// Writes entries (`{"upsert": [...]}`) with the admin token; returns the change's seq.
    pub(crate) async fn write(&self, body: impl std::borrow::Borrow<serde_json::Value>) -> u64 {
        let (status, v) = self.post("/v1/entries", Some(ADMIN), body.borrow()).await;
        assert_eq!(status, 200, "{v}");
        v["seq"].as_u64().unwrap()
    }

    /// `GET /v1/lookup?url=` with the client token, which must answer 200.
    pub(crate) async fn lookup(&self, url: &str) -> serde_json::Value {
        let (status, v) = self
            .get(
                &format!("/v1/lookup?url={}", webrep::urlenc::encode_query_value(url)),
                Some(CLIENT),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        v
    }

    /// The server's count of lookups (`/healthz`).
    pub(crate) async fn lookups(&self) -> u64 {
        let (status, v) = self.get("/healthz", Some(ADMIN)).await;
        assert_eq!(status, 200, "{v}");
        v["lookups"].as_u64().unwrap()
    }

    /// The feedback events matching `query` (`/v1/events`).
    pub(crate) async fn events(&self, query: &str) -> Vec<serde_json::Value> {
        let path = format!("/v1/events?limit=100000&{query}");
        let (status, v) = self.get(&path, Some(ADMIN)).await;
        assert_eq!(status, 200, "{v}");
        v["events"].as_array().unwrap().clone()
    }

    /// Polls (bounded) until the events matching `query` satisfy `done`, and returns them.
    pub(crate) async fn wait_events(
        &self,
        query: &str,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let what = format!("events for {query:?}");
        eventually_ok(&what, BOUND, || async {
            let ev = self.events(query).await;
            if done(&ev) { Ok(ev) } else { Err(ev) }
        })
        .await
    }
}
