//! One rule: its conditions (client networks, users, groups, hosts, schedule), its action,
//! and its complete settings (the top level with the rule's overrides).

use super::context::Cx;
use super::net::{Net, parse_net};
use super::schedule::Schedule;
use super::settings::{Overlay, Settings};
use crate::model::Taxonomy;
use crate::policy::Action;
use crate::policy::pattern::HostSet;
use crate::policy::schema::RawRule;
use crate::yaml::Located;

/// One compiled rule.
#[derive(Debug)]
pub(in crate::policy) struct Rule {
    pub(in crate::policy) id: Box<str>,
    pub(in crate::policy) clients: Vec<Net>,
    pub(in crate::policy) users: Vec<Box<str>>,
    pub(in crate::policy) groups: Vec<Box<str>>,
    pub(in crate::policy) hosts: Option<HostSet>,
    pub(in crate::policy) schedule: Option<Schedule>,
    pub(in crate::policy) action: Option<Action>,
    pub(in crate::policy) settings: Settings,
}

impl Cx<'_> {
    pub(super) fn rule(
        &mut self,
        r: &RawRule,
        base: &Settings,
        taxonomy: &Taxonomy,
    ) -> Option<Rule> {
        let errors_before = self.errors.len();
        let m = r.when.clone().unwrap_or_default();
        let clients = self.non_empty(m.clients.as_deref(), "match.clients", &r.id);
        let clients: Vec<Net> = clients
            .iter()
            .filter_map(|c| match parse_net(&c.value) {
                Ok(n) => Some(Net::from(n)),
                Err(e) => {
                    self.error_at(c, format!("match.clients: {e}"));
                    None
                }
            })
            .collect();
        let users = self
            .non_empty(m.users.as_deref(), "match.users", &r.id)
            .iter()
            .map(|u| u.value.as_str().into())
            .collect();
        let groups = self
            .non_empty(m.groups.as_deref(), "match.groups", &r.id)
            .iter()
            .map(|u| u.value.as_str().into())
            .collect();
        let hosts = m.hosts.as_deref().map(|h| {
            if h.is_empty() {
                self.error_at(
                    &r.id,
                    "match.hosts is empty and would match nothing; remove it".into(),
                );
            }
            self.host_set(h, false, "match.hosts")
        });
        let schedule = m.schedule.as_ref().and_then(|s| self.schedule(s));
        let settings = self.settings(
            base,
            taxonomy,
            Overlay {
                security_level: r.security_level,
                untested: r.untested,
                lists: r.lists.as_ref(),
                categories: r.categories.as_ref(),
                interception: r.interception.as_ref(),
                reputation_unavailable: r.reputation_unavailable.as_ref(),
                warn: r.warn.as_ref(),
                feedback: r.feedback.as_ref(),
                files: r.files.as_ref(),
            },
        );
        if self.errors.len() > errors_before {
            return None;
        }
        Some(Rule {
            id: r.id.value.as_str().into(),
            clients,
            users,
            groups,
            hosts,
            schedule,
            action: r.action.as_ref().map(|a| a.value.into()),
            settings,
        })
    }

    /// An empty condition list would match nothing, which is never what was meant.
    fn non_empty<'v>(
        &mut self,
        v: Option<&'v [Located<String>]>,
        key: &str,
        id: &Located<String>,
    ) -> &'v [Located<String>] {
        match v {
            Some([]) => {
                self.error_at(
                    id,
                    format!("{key} is empty and would match nothing; remove it"),
                );
                &[]
            }
            Some(v) => v,
            None => &[],
        }
    }
}
