//! Feedback in proportion: repeated events folded per kind and host over an interval.
//!
//! # What and where
//! [`super::Feedback::emit`] hands an event of a kind in `feedback.aggregate_kinds` (by
//! default `untested`, `allowed` and `reputation_unavailable`: high volume, nothing in one
//! occurrence an admin needs) to [`Aggregator::fold`] instead of the spool. The first
//! occurrence of a (kind, host) in an interval is kept whole; later ones only add to its
//! count, its last time and its bounded lists of distinct clients and users
//! ([`MAX_LISTED`] each, then a `*_truncated` flag). Every `feedback.aggregate_secs` (and at
//! shutdown, before the sender's last flush) [`Aggregator::take`] turns each aggregate into
//! one event, which goes to the spool like any other. An aggregate of one occurrence is that
//! occurrence, unchanged. Blocks, warnings, continues, user reports and file verdicts never
//! come here.
//!
//! # What it costs
//! One mutex and one hash lookup per folded event, plus a scan of at most [`MAX_LISTED`]
//! short strings for each list; no allocation once a host's client is known; a host's first
//! event is serialized once (a few microseconds) and read back at the flush. Memory: a few
//! hundred bytes per host held (its first event as JSON) plus about 64 bytes per listed
//! client or user, for at most `feedback.aggregate_max_hosts` hosts.
//!
//! # How it fails
//! Nothing is dropped: a new host beyond `aggregate_max_hosts` makes [`Aggregator::fold`]
//! hand back everything held, to be spooled at once (counted as an early flush). What is held
//! lives in memory only: a crash of the proxy loses up to one interval of folded events (a
//! clean shutdown spools them). Distinct clients beyond [`MAX_LISTED`] in one aggregate are
//! not named, so the server's distinct counts are exact up to that bound per host and
//! interval, and the aggregate says it saw more. A first event is read back from JSON that
//! the same type wrote; were that ever to fail, the aggregate is logged as an error and
//! dropped rather than sent half-made.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::api::events::{Event, Kind, MAX_LISTED};

/// One (kind, host) of the current interval.
#[derive(Debug)]
struct Aggregate {
    /// The first occurrence, whole.
    first: First,
    kind: Kind,
    /// The first occurrence's time.
    time: i64,
    count: u64,
    last: i64,
    clients: Vec<String>,
    clients_truncated: bool,
    users: Vec<String>,
    users_truncated: bool,
}

/// Adds `value` to `list` if new; beyond [`MAX_LISTED`], sets `truncated` instead.
fn note(list: &mut Vec<String>, truncated: &mut bool, value: Option<String>) {
    let Some(v) = value else { return };
    if list.contains(&v) {
        return;
    }
    if list.len() < MAX_LISTED {
        list.push(v);
    } else {
        *truncated = true;
    }
}

/// An aggregate's first occurrence as the JSON it is sent as: one allocation of a few
/// hundred bytes, where the [`Event`] holds a dozen separately allocated strings in about 1
/// KB. Kept whole in the case that it does not serialize.
#[derive(Debug)]
enum First {
    Json(Box<[u8]>),
    Whole(Box<Event>),
}

impl First {
    fn new(e: Event) -> First {
        match serde_json::to_vec(&e) {
            Ok(json) => First::Json(json.into_boxed_slice()),
            Err(_) => First::Whole(Box::new(e)),
        }
    }

    /// The event again; `None` only if the JSON this wrote does not read back as an
    /// [`Event`], which serde's derives rule out.
    fn into_event(self) -> Option<Event> {
        match self {
            First::Json(json) => serde_json::from_slice(&json)
                .map_err(|e| tracing::error!(error = %e, "feedback aggregate unreadable"))
                .ok(),
            First::Whole(e) => Some(*e),
        }
    }
}

impl Aggregate {
    fn new(first: Event) -> Aggregate {
        let (mut clients, mut clients_truncated) = (Vec::new(), false);
        note(&mut clients, &mut clients_truncated, first.client.clone());
        let (mut users, mut users_truncated) = (Vec::new(), false);
        note(&mut users, &mut users_truncated, first.user.clone());
        Aggregate {
            kind: first.kind,
            time: first.time,
            count: 1,
            last: first.time,
            clients,
            clients_truncated,
            users,
            users_truncated,
            first: First::new(first),
        }
    }

    fn add(&mut self, e: Event) {
        self.count += 1;
        self.last = self.last.max(e.time);
        note(&mut self.clients, &mut self.clients_truncated, e.client);
        note(&mut self.users, &mut self.users_truncated, e.user);
    }

    /// The one event this aggregate sends: its first occurrence, with the count, the last
    /// time and, when there were several, the distinct clients and users.
    fn into_event(self) -> Option<Event> {
        let mut e = self.first.into_event()?;
        if self.count == 1 {
            return Some(e);
        }
        e.count = self.count;
        e.last_time = Some(self.last.max(self.time));
        if self.clients.len() > 1 || self.clients_truncated {
            e.clients = self.clients;
            e.clients_truncated = self.clients_truncated;
        }
        if self.users.len() > 1 || self.users_truncated {
            e.users = self.users;
            e.users_truncated = self.users_truncated;
        }
        Some(e)
    }
}

/// The aggregates of the current interval, by host (then kind, a short list), and how many
/// (kind, host) pairs that is.
#[derive(Debug, Default)]
struct Held {
    by_host: HashMap<String, Vec<Aggregate>>,
    pairs: usize,
}

impl Held {
    fn drain(&mut self) -> Vec<Event> {
        self.pairs = 0;
        let mut events: Vec<Event> = self
            .by_host
            .drain()
            .flat_map(|(_, list)| list)
            .filter_map(Aggregate::into_event)
            .collect();
        events.sort_by_key(|e| e.time);
        events
    }
}

/// The aggregates of the current interval. Share it behind the [`super::Feedback`].
#[derive(Debug)]
pub struct Aggregator {
    kinds: Vec<Kind>,
    max_hosts: usize,
    held: Mutex<Held>,
}

impl Aggregator {
    /// Folds events of `kinds`, at most `max_hosts` (kind, host) pairs at once.
    pub fn new(kinds: Vec<Kind>, max_hosts: usize) -> Aggregator {
        Aggregator {
            kinds,
            max_hosts: max_hosts.max(1),
            held: Mutex::new(Held::default()),
        }
    }

    /// Whether `e` is folded: its kind is, and it names a host.
    pub fn folds(&self, e: &Event) -> bool {
        self.kinds.contains(&e.kind) && e.host.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Folds `e` (one that [`Aggregator::folds`]) into its (kind, host) aggregate. A new pair
    /// beyond the cap first takes everything held: those events are returned, to be sent now.
    pub fn fold(&self, e: Event) -> Option<Vec<Event>> {
        let host = e.host.as_deref().unwrap_or_default();
        let mut held = self.lock();
        if let Some(a) = held
            .by_host
            .get_mut(host)
            .and_then(|list| list.iter_mut().find(|a| a.kind == e.kind))
        {
            a.add(e);
            return None;
        }
        let flushed = (held.pairs >= self.max_hosts).then(|| held.drain());
        let host = host.to_owned();
        held.pairs += 1;
        held.by_host
            .entry(host)
            // Mostly one kind per host: `or_default` would reserve four on the first push.
            .or_insert_with(|| Vec::with_capacity(1))
            .push(Aggregate::new(e));
        flushed
    }

    /// Every aggregate held, each as one event, oldest first; the next interval starts empty.
    pub fn take(&self) -> Vec<Event> {
        self.lock().drain()
    }

    /// (kind, host) pairs held now.
    pub fn held(&self) -> usize {
        self.lock().pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: usize, kind: Kind, host: &str, client: &str, time: i64) -> Event {
        let mut e = Event::new(format!("{id:016x}"), kind, time, "p1".into());
        e.host = Some(host.into());
        e.client = Some(client.into());
        e.url = Some(format!("http://{host}/{id}"));
        e
    }

    #[test]
    fn the_first_event_comes_back_whole() {
        let a = Aggregator::new(vec![Kind::Untested], 100);
        let mut e = event(7, Kind::Untested, "w.test", "c1", 5);
        e.user = Some("alice".into());
        e.categories = vec!["news".into(), "sport".into()];
        e.score = Some(42);
        e.cache = Some("miss".into());
        held(a.fold(e.clone()));
        assert_eq!(a.take(), [e]);
    }

    fn held(f: Option<Vec<Event>>) {
        assert!(f.is_none(), "{f:?}");
    }

    #[test]
    fn aggregates_fold_per_kind_and_host_with_counts_and_distinct_clients() {
        let a = Aggregator::new(vec![Kind::Untested, Kind::Allowed], 100);
        for i in 0..10 {
            let client = format!("c{}", i % 3);
            held(a.fold(event(i, Kind::Untested, "a.test", &client, 100 + i as i64)));
        }
        held(a.fold(event(20, Kind::Allowed, "a.test", "c0", 5)));
        let single = event(21, Kind::Untested, "b.test", "c9", 50);
        held(a.fold(single.clone()));
        // Not folded: other kinds, and events without a host.
        assert!(!a.folds(&event(30, Kind::Blocked, "a.test", "c0", 1)));
        let mut hostless = event(31, Kind::Untested, "x", "c0", 1);
        hostless.host = None;
        assert!(!a.folds(&hostless));
        assert!(a.folds(&single));
        assert_eq!(a.held(), 3);

        let events = a.take();
        assert_eq!(a.held(), 0);
        assert!(a.take().is_empty(), "the next interval starts empty");
        assert_eq!(events.len(), 3);
        // Oldest first; an aggregate of one occurrence is that occurrence unchanged.
        assert_eq!(events[0].kind, Kind::Allowed);
        assert_eq!(events[0].count, 1);
        assert_eq!(events[1], single);
        let u = &events[2];
        assert_eq!((u.count, u.time, u.last_time), (10, 100, Some(109)));
        assert_eq!(u.id, format!("{:016x}", 0), "the first occurrence's id");
        assert_eq!(u.url.as_deref(), Some("http://a.test/0"));
        assert_eq!(u.client.as_deref(), Some("c0"));
        assert_eq!(u.clients, ["c0", "c1", "c2"]);
        assert!(!u.clients_truncated);
        assert!(u.users.is_empty(), "no users seen");
        u.validate().unwrap();
        assert_eq!(u.all_clients().collect::<Vec<_>>(), ["c0", "c1", "c2"]);
        assert_eq!(events[1].all_clients().collect::<Vec<_>>(), ["c9"]);
    }

    #[test]
    fn aggregates_list_at_most_max_listed_clients_and_users_and_say_so() {
        let a = Aggregator::new(vec![Kind::Untested], 100);
        for i in 0..(MAX_LISTED + 10) {
            let mut e = event(i, Kind::Untested, "a.test", &format!("c{i}"), 1);
            e.user = Some(format!("u{}", i % 2));
            held(a.fold(e));
        }
        let e = a.take().pop().unwrap();
        assert_eq!(e.count, (MAX_LISTED + 10) as u64);
        assert_eq!(e.clients.len(), MAX_LISTED);
        assert_eq!(e.clients[MAX_LISTED - 1], format!("c{}", MAX_LISTED - 1));
        assert!(e.clients_truncated);
        assert_eq!(e.users, ["u0", "u1"]);
        assert!(!e.users_truncated);
        e.validate().unwrap();
        // The wire form keeps it all; a single event leaves the new fields out.
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.contains("\"clients_truncated\":true"), "{text}");
        let back: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(back, e);
        let one = serde_json::to_string(&event(1, Kind::Untested, "a.test", "c", 1)).unwrap();
        for field in ["count", "last_time", "clients", "users"] {
            assert!(!one.contains(field), "{one}");
        }
    }

    #[test]
    fn aggregates_flush_everything_held_when_a_new_host_exceeds_the_cap() {
        let a = Aggregator::new(vec![Kind::Untested, Kind::Allowed], 2);
        held(a.fold(event(1, Kind::Untested, "a.test", "c", 1)));
        held(a.fold(event(2, Kind::Allowed, "a.test", "c", 2)));
        // A pair already held is folded at the cap...
        held(a.fold(event(3, Kind::Untested, "a.test", "d", 3)));
        // ...a new one takes everything held out first.
        let out = a
            .fold(event(4, Kind::Untested, "b.test", "c", 4))
            .expect("a flush at the cap");
        assert_eq!(out.iter().map(|e| e.count).sum::<u64>(), 3);
        assert_eq!(a.held(), 1);
        assert_eq!(a.take()[0].host.as_deref(), Some("b.test"));
    }
}
