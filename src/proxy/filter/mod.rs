//! Filtering on the request path: canonicalize, ask the policy's lists, look up reputation,
//! decide by policy (`decide`), then count, report and answer the decision once per request
//! (`record`), with the block or warn page (`pages`) and the warn page's continue links
//! (`tokens`).
//!
//! # Where it sits
//! In [`super::forward`] before anything is sent upstream (plain HTTP and requests decrypted
//! from an intercepted tunnel, by their full URL), and in [`super::connect`] before the
//! upstream is dialled (CONNECT, by host, as `https://host/`). Both call
//! [`Filter::decide`] and then [`Filter::record`] once. The admin API's explain and the SNI
//! check of an intercepted tunnel call [`Filter::decide`] only: they count nothing and report
//! nothing. A request that is not allowed becomes [`ProxyError::Filtered`], which
//! [`super::service::error_response`] renders with [`page`]: it never reaches the upstream.
//!
//! # What it costs
//! One canonicalization; one policy evaluation with an untested stand-in verdict to settle
//! list and rule hits without any lookup; then, only when reputation matters, one cache
//! lookup ([`crate::reputation`]; a round trip on a cold host) and a second evaluation.
//! Recording costs a few relaxed atomics and, with feedback on, one event appended to the
//! spool.
//!
//! # How it fails
//! A URL that does not canonicalize is a 400. No reputation answer (and nothing stale within
//! the policy's window) is decided by the policy's `reputation_unavailable` action, and the
//! page says so. Pages escape everything taken from the request.
//!
//! [`ProxyError::Filtered`]: super::error::ProxyError::Filtered

mod decide;
mod pages;
mod record;
mod tokens;

use std::net::IpAddr;
use std::sync::Arc;

use crate::policy::RequestFacts;
use crate::policyfile::PolicyHandle;
use crate::reputation::Reputation;

pub use decide::{Decision, Outcome};
pub use pages::{PageFormat, Refusal, page};
pub use record::{Allowed, FilterStats};
pub use tokens::CONTINUE_PATH;

/// What filtering needs at run time.
pub struct Filter {
    pub reputation: Arc<Reputation>,
    pub policy: Arc<PolicyHandle>,
    /// "Continue" on a warn page: (client address, canonical host) → allowed until.
    pub continues: moka::sync::Cache<(IpAddr, String), std::time::SystemTime>,
    /// Signs continue tokens (random per process: a restart invalidates open warn pages).
    pub secret: [u8; 32],
    /// Decision counters (served as JSON on the admin listener's `/stats` page).
    pub stats: FilterStats,
    /// User → groups for rules that match on `groups` (`auth.groups_file`).
    /// Swapped whole by [`crate::proxy::ProxyState::reload`].
    pub groups: arc_swap::ArcSwap<super::auth::Groups>,
    /// Feedback events, when `feedback.enabled`.
    pub feedback: Option<Arc<crate::feedback::Feedback>>,
}

impl Filter {
    /// A filter over `reputation` and `policy`, with a fresh signing secret.
    pub fn new(reputation: Arc<Reputation>, policy: Arc<PolicyHandle>) -> Filter {
        use rand::RngCore as _;
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        Filter {
            reputation,
            policy,
            continues: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(7 * 86_400))
                .build(),
            secret,
            stats: FilterStats::default(),
            groups: arc_swap::ArcSwap::from_pointee(Default::default()),
            feedback: None,
        }
    }

    /// The groups of `user` (none without a user or a groups file).
    fn groups_of(&self, user: Option<&str>) -> Option<Arc<[String]>> {
        user.and_then(|u| self.groups.load().get(u).cloned())
    }

    /// Whether `client` continued past a warning for `host` and that is still valid.
    fn continued(&self, client: IpAddr, host: &str) -> bool {
        self.continues
            .get(&(client, host.to_owned()))
            .is_some_and(|until| until > std::time::SystemTime::now())
    }

    /// How a CONNECT to `canonical` (`https://host/`) is handled inside the tunnel, by the
    /// policy's `interception` settings (hosts, then categories of the verdict, then the
    /// default): decrypted or relayed untouched, and what to do with bytes that are not TLS.
    pub fn interception(
        &self,
        canonical: &crate::canon::CanonicalUrl,
        verdict: Option<&crate::model::Verdict>,
        client: IpAddr,
        user: Option<&str>,
    ) -> Interception {
        let policy = self.policy.snapshot();
        let groups = self.groups_of(user);
        let facts = RequestFacts {
            url: canonical,
            client,
            user,
            groups: groups.as_deref().unwrap_or(&[]),
            now: jiff::Timestamp::now(),
        };
        let d = crate::policy::intercept(&policy, &facts, verdict);
        Interception {
            intercept: d.mode == crate::policy::InterceptMode::Intercept,
            non_tls: match d.non_tls {
                crate::policy::NonTlsAction::Allow => crate::config::NonTlsAction::Tunnel,
                crate::policy::NonTlsAction::Block => crate::config::NonTlsAction::Refuse,
            },
        }
    }
}

/// The policy's interception decision for one CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interception {
    /// Decrypt (true) or relay untouched.
    pub intercept: bool,
    /// Bytes that are neither TLS nor HTTP after the CONNECT.
    pub non_tls: crate::config::NonTlsAction,
}
