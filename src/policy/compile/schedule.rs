//! Schedules: a time zone resolved from jiff's bundled database with its UTC offsets
//! precomputed, and weekly windows (`HH:MM` times, days and day ranges) as minute-of-week
//! ranges.

use jiff::tz::TimeZone;

use super::context::Cx;
use crate::policy::schema::RawSchedule;

/// Weekly windows in one time zone.
#[derive(Debug)]
pub(in crate::policy) struct Schedule {
    pub(in crate::policy) tz: TimeZone,
    /// `(first UTC second, UTC offset in seconds)` from [`TRANSITIONS_FROM`] to
    /// [`TRANSITIONS_UNTIL`], precomputed: jiff's bundled zones describe recent years with
    /// a POSIX rule that it would evaluate on every call.
    pub(in crate::policy) offsets: Vec<(i64, i32)>,
    /// For each [`OFFSET_BUCKET_SHIFT`]-sized slice of that span, the index in `offsets` of
    /// the entry in force at its start: a lookup then scans at most a couple of entries.
    pub(in crate::policy) buckets: Vec<u32>,
    /// Half-open `[start, end)` minute-of-week ranges, Monday 00:00 = 0.
    pub(in crate::policy) ranges: Vec<(u16, u16)>,
}

/// 2000-01-01T00:00:00Z: start of the precomputed UTC offsets of a schedule.
pub(in crate::policy) const TRANSITIONS_FROM: i64 = 946_684_800;
/// 2100-01-01T00:00:00Z: end of the precomputed UTC offsets (jiff is asked beyond).
pub(in crate::policy) const TRANSITIONS_UNTIL: i64 = 4_102_444_800;

/// log2 of the seconds per bucket of [`Schedule::buckets`] (about 48 days, shorter than
/// any gap between two DST transitions in the database).
pub(in crate::policy) const OFFSET_BUCKET_SHIFT: u32 = 22;

/// The index of the offset in force at the start of each bucket.
fn buckets(offsets: &[(i64, i32)]) -> Vec<u32> {
    let n = (TRANSITIONS_UNTIL - TRANSITIONS_FROM) >> OFFSET_BUCKET_SHIFT;
    let mut out = Vec::with_capacity(usize::try_from(n + 1).unwrap_or(0));
    let mut i = 0usize;
    for b in 0..=n {
        let start = TRANSITIONS_FROM + (b << OFFSET_BUCKET_SHIFT);
        while offsets.get(i + 1).is_some_and(|&(at, _)| at <= start) {
            i += 1;
        }
        out.push(u32::try_from(i).unwrap_or(0));
    }
    out
}

/// The UTC offsets of `tz` between [`TRANSITIONS_FROM`] and [`TRANSITIONS_UNTIL`].
fn offsets(tz: &TimeZone) -> Vec<(i64, i32)> {
    let Ok(start) = jiff::Timestamp::from_second(TRANSITIONS_FROM) else {
        return Vec::new();
    };
    let mut v = vec![(TRANSITIONS_FROM, tz.to_offset(start).seconds())];
    // Two transitions a year at most in practice; the cap only bounds odd data.
    for t in tz.following(start).take(1000) {
        let at = t.timestamp().as_second();
        if at >= TRANSITIONS_UNTIL {
            break;
        }
        v.push((at, t.offset().seconds()));
    }
    v
}

const MINUTES_PER_DAY: u16 = 24 * 60;
const MINUTES_PER_WEEK: u16 = 7 * MINUTES_PER_DAY;

impl Cx<'_> {
    pub(super) fn schedule(&mut self, s: &RawSchedule) -> Option<Schedule> {
        let tz = match TimeZone::get(&s.time_zone.value) {
            Ok(tz) => Some(tz),
            Err(_) => {
                self.error_at(
                    &s.time_zone,
                    format!(
                        "match.schedule.time_zone: unknown time zone {:?} (use an IANA name such as Europe/Berlin)",
                        s.time_zone.value
                    ),
                );
                None
            }
        };
        if s.windows.is_empty() {
            self.error_at(
                &s.time_zone,
                "match.schedule.windows is empty and would match nothing".into(),
            );
        }
        let mut ranges = Vec::new();
        for w in &s.windows {
            let from = parse_time(&w.from.value, false);
            let to = parse_time(&w.to.value, true);
            let (from, to) = match (from, to) {
                (Ok(f), Ok(t)) => (f, t),
                (Err(e), _) => {
                    self.error_at(&w.from, format!("match.schedule.windows.from: {e}"));
                    continue;
                }
                (_, Err(e)) => {
                    self.error_at(&w.to, format!("match.schedule.windows.to: {e}"));
                    continue;
                }
            };
            if from == to {
                self.error_at(
                    &w.to,
                    "match.schedule.windows: `from` equals `to`; for a whole day write 00:00 to 24:00".into(),
                );
                continue;
            }
            if w.days.is_empty() {
                self.error_at(&w.from, "match.schedule.windows.days is empty".into());
            }
            for d in &w.days {
                let days = match parse_days(&d.value) {
                    Ok(days) => days,
                    Err(e) => {
                        self.error_at(d, format!("match.schedule.windows.days: {e}"));
                        continue;
                    }
                };
                for day in days {
                    let start = day * MINUTES_PER_DAY + from;
                    let end = if to > from {
                        day * MINUTES_PER_DAY + to
                    } else {
                        // Runs past midnight into the next day.
                        (day + 1) * MINUTES_PER_DAY + to
                    };
                    if end > MINUTES_PER_WEEK {
                        ranges.push((start, MINUTES_PER_WEEK));
                        ranges.push((0, end - MINUTES_PER_WEEK));
                    } else {
                        ranges.push((start, end));
                    }
                }
            }
        }
        let tz = tz?;
        let offsets = offsets(&tz);
        Some(Schedule {
            buckets: buckets(&offsets),
            offsets,
            tz,
            ranges,
        })
    }
}

/// `HH:MM` to minutes after midnight; `24:00` only when `end`.
fn parse_time(s: &str, end: bool) -> Result<u16, String> {
    let bad = || format!("{s:?} is not a time (expected HH:MM, 00:00 to 24:00)");
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    match (h, m) {
        (24, 0) if end => Ok(MINUTES_PER_DAY),
        (24, 0) => Err(format!("{s:?}: 24:00 is only valid as an end time")),
        (0..=23, 0..=59) => Ok(h * 60 + m),
        _ => Err(bad()),
    }
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day_index(s: &str) -> Result<u16, String> {
    let l = s.trim().to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .position(|d| *d == l)
        .and_then(|i| u16::try_from(i).ok())
        .ok_or_else(|| format!("{s:?} is not a day (use mon, tue, wed, thu, fri, sat, sun or a range such as mon-fri)"))
}

/// `mon` or `mon-fri` (ranges may wrap: `fri-mon`), Monday = 0.
fn parse_days(s: &str) -> Result<Vec<u16>, String> {
    match s.split_once('-') {
        None => Ok(vec![day_index(s)?]),
        Some((a, b)) => {
            let (a, b) = (day_index(a)?, day_index(b)?);
            let mut out = vec![a];
            let mut d = a;
            while d != b {
                d = (d + 1) % 7;
                out.push(d);
            }
            Ok(out)
        }
    }
}

/// A schedule in `zone` with no windows, for tests of the time conversion.
#[cfg(test)]
pub(in crate::policy) fn test_schedule(zone: &str) -> Schedule {
    let tz = TimeZone::get(zone).expect("known zone");
    let offsets = offsets(&tz);
    Schedule {
        buckets: buckets(&offsets),
        offsets,
        tz,
        ranges: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_days() {
        assert_eq!(parse_time("09:30", false), Ok(570));
        assert_eq!(parse_time("24:00", true), Ok(1440));
        assert!(parse_time("24:00", false).is_err());
        assert!(parse_time("9", false).is_err());
        assert!(parse_time("12:60", false).is_err());
        assert_eq!(parse_days("mon-fri").unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(parse_days("sat-mon").unwrap(), vec![5, 6, 0]);
        assert!(parse_days("funday").is_err());
    }
}
