//! Integration tests: the real proxy on 127.0.0.1:0 with in-process origins and real clients
//! (reqwest, raw sockets, the `curl` binary, the `webrep` binary).

mod harness;

mod auth;
mod binary;
mod browser;
mod config_file;
mod feedback;
mod files;
mod filtering;
mod intercept;
mod layers;
mod pac;
mod policy_check;
mod proxy_connect;
mod proxy_http;
mod proxy_limits;
mod robustness;
mod systemd;
