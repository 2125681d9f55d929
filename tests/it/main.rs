//! Integration tests, one binary: the real proxy and the real reputation server on
//! 127.0.0.1:0 with in-process origins and real clients (reqwest, raw sockets, the `curl`
//! binary, the `webrep` binary), URL canonicalization against its vectors, and the layer
//! rules of the sources.

mod harness;

mod auth;
mod binary;
mod browser;
mod canon;
mod config_file;
mod dns;
mod exit_codes;
mod feedback;
mod feedback_up;
mod files;
mod filtering;
mod install;
mod intercept;
mod layers;
mod pac;
mod policy_check;
mod proxy_connect;
mod proxy_http;
mod proxy_limits;
mod reload;
mod repserver_api;
mod repserver_cli;
mod reputation_client;
mod robustness;
mod splice;
mod systemd;
mod tiers;
mod upstream_pool;
