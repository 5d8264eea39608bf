//! `mqttd history`'s query: the messages on topics matching an MQTT topic filter, between two
//! times, newest first up to a limit (shown oldest first).
//!
//! The filter narrows the SQL by its literal levels (`sensors/+/temp` reads the index range of
//! topics starting `sensors/`, `a/b/#` that range plus the topic `a/b`); each row is then
//! checked ([`HistoryRow::check`]) and matched with the broker's own rules
//! ([`crate::protocol::topic::matches`]: `#` never matches `$SYS`).

use rusqlite::Connection;

use super::rows::{HistoryRow, Recorded, RowError};
use crate::protocol::topic::{matches, validate_topic_filter};

/// What to read.
#[derive(Debug, Clone)]
pub struct Query {
    /// An MQTT topic filter (not a shared subscription).
    pub filter: String,
    /// Only messages at or after this (ms since the Unix epoch).
    pub since: Option<i64>,
    /// Only messages at or before this.
    pub until: Option<i64>,
    /// The newest this many (at least 1).
    pub limit: usize,
    /// Only messages older than this one ([`Found::last`] of the previous page): pages on.
    pub before: Option<(i64, i64)>,
}

/// What a query found.
#[derive(Debug, Default)]
pub struct Found {
    /// Oldest first.
    pub messages: Vec<Recorded>,
    /// Rows that matched but could not be read: (their id if readable, why). Left out.
    pub skipped: Vec<(Option<i64>, RowError)>,
    /// More messages matched than `limit`: older ones were left out.
    pub more: bool,
    /// The (time, row id) of the oldest message returned: `before` for the next page.
    pub last: Option<(i64, i64)>,
}

/// Checks `filter` as `mqttd history --filter` takes it.
pub fn check_filter(filter: &str) -> Result<(), String> {
    if filter.starts_with("$share/") {
        return Err(format!(
            "{filter:?}: a shared subscription is not a filter of topics"
        ));
    }
    validate_topic_filter(filter).map_err(|why| format!("{filter:?} is not a topic filter: {why}"))
}

/// The index range a filter's literal levels allow: `topic = exact`, or `lo <= topic < hi`.
#[derive(Debug, PartialEq, Eq)]
struct Narrow {
    exact: Option<String>,
    range: Option<(String, String)>,
}

/// What the SQL can narrow `filter` (valid) to: nothing for a filter starting with a wildcard.
fn narrow(filter: &str) -> Narrow {
    let levels: Vec<&str> = filter.split('/').collect();
    let Some(wild) = levels.iter().position(|l| *l == "+" || *l == "#") else {
        return Narrow {
            exact: Some(filter.to_owned()),
            range: None,
        };
    };
    if wild == 0 {
        return Narrow {
            exact: None,
            range: None,
        };
    }
    let literal = levels[..wild].join("/");
    // Topics under `literal/`: from `literal/` up to `literal0` ('0' follows '/' in byte order).
    let range = Some((format!("{literal}/"), format!("{literal}0")));
    // `a/#` also matches `a` itself (MQTT 4.7.1.2).
    let exact = (levels[wild] == "#").then_some(literal);
    Narrow { exact, range }
}

/// Runs `q` on a connection from [`super::open_read_only`].
pub fn run(conn: &Connection, q: &Query) -> Result<Found, rusqlite::Error> {
    let n = narrow(&q.filter);
    let mut sql = format!(
        "SELECT id, {} FROM messages WHERE time >= ?1 AND time <= ?2",
        super::rows::COLUMNS
    );
    match (&n.exact, &n.range) {
        (Some(_), Some(_)) => sql.push_str(" AND (topic = ?3 OR (topic >= ?4 AND topic < ?5))"),
        (Some(_), None) => sql.push_str(" AND topic = ?3"),
        (None, Some(_)) => sql.push_str(" AND topic >= ?4 AND topic < ?5"),
        (None, None) => {}
    }
    if q.before.is_some() {
        sql.push_str(" AND (time < ?6 OR (time = ?6 AND id < ?7))");
    }
    sql.push_str(" ORDER BY time DESC, id DESC");
    let mut stmt = conn.prepare(&sql)?;
    let (lo, hi) = match &n.range {
        Some((lo, hi)) => (Some(lo.as_str()), Some(hi.as_str())),
        None => (None, None),
    };
    let since = q.since.unwrap_or(i64::MIN);
    let until = q.until.unwrap_or(i64::MAX);
    for (i, value) in [(3, n.exact.as_deref()), (4, lo), (5, hi)] {
        if let Some(v) = value {
            stmt.raw_bind_parameter(i, v)?;
        }
    }
    stmt.raw_bind_parameter(1, since)?;
    stmt.raw_bind_parameter(2, until)?;
    if let Some((time, id)) = q.before {
        stmt.raw_bind_parameter(6, time)?;
        stmt.raw_bind_parameter(7, id)?;
    }
    let mut rows = stmt.raw_query();
    let mut found = Found::default();
    let limit = q.limit.max(1);
    while let Some(r) = rows.next()? {
        let id = r.get::<_, i64>("id").ok();
        let recorded = match HistoryRow::read(r).and_then(HistoryRow::check) {
            Ok(rec) => rec,
            Err(e) => {
                found.skipped.push((id, e));
                continue;
            }
        };
        if !matches(&q.filter, &recorded.topic) {
            continue;
        }
        if found.messages.len() == limit {
            found.more = true;
            break;
        }
        found.last = id.map(|id| (recorded.time, id));
        found.messages.push(recorded);
    }
    found.messages.reverse();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(exact: Option<&str>, range: Option<(&str, &str)>) -> Narrow {
        Narrow {
            exact: exact.map(Into::into),
            range: range.map(|(a, b)| (a.into(), b.into())),
        }
    }

    #[test]
    fn filters_narrow_the_sql() {
        assert_eq!(narrow("a/b"), n(Some("a/b"), None));
        assert_eq!(narrow("#"), n(None, None));
        assert_eq!(narrow("+/x"), n(None, None));
        assert_eq!(narrow("a/#"), n(Some("a"), Some(("a/", "a0"))));
        assert_eq!(narrow("a/b/+/c"), n(None, Some(("a/b/", "a/b0"))));
        assert_eq!(narrow("$SYS/#"), n(Some("$SYS"), Some(("$SYS/", "$SYS0"))));
        assert_eq!(narrow("/#"), n(Some(""), Some(("/", "0"))));
    }

    #[test]
    fn filters_are_checked() {
        assert!(check_filter("sensors/#").is_ok());
        assert!(check_filter("a/#/b").is_err());
        assert!(check_filter("a+").is_err());
        assert!(check_filter("").is_err());
        assert!(check_filter("$share/g/a").is_err());
    }
}
