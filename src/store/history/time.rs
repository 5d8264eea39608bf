//! Times on `mqttd history`'s command line and in its output.
//!
//! `--since` / `--until` take a duration ago (`"90s"`, `"30m"`, `"1h"`, `"7d"`: humantime's
//! syntax, as the configuration's durations), `now`, or an RFC 3339 time
//! (`2025-01-31T12:00:00Z`, `2025-01-31 12:00:00.250+01:00`; a date alone means its midnight,
//! UTC). Output times are RFC 3339 in UTC with milliseconds. Both are done here with the civil
//! calendar arithmetic of Howard Hinnant's `days_from_civil`, rather than a date-time crate for
//! two functions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::rows::MAX_TIME_MS;

const MS_PER_DAY: i64 = 86_400_000;

/// The time `arg` names, in ms since the Unix epoch, `now` being the present.
pub fn parse_time(arg: &str, now: SystemTime) -> Result<i64, String> {
    let arg = arg.trim();
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    if arg.eq_ignore_ascii_case("now") {
        return Ok(now_ms);
    }
    if arg.as_bytes().first().is_some_and(u8::is_ascii_digit) && !looks_like_date(arg) {
        let ago = humantime::parse_duration(arg).map_err(|e| {
            format!("{arg:?} is neither a duration ago (\"1h\", \"30m\", \"7d\") nor an RFC 3339 time: {e}")
        })?;
        let ago = i64::try_from(ago.as_millis()).unwrap_or(i64::MAX);
        return Ok(now_ms.saturating_sub(ago).max(0));
    }
    parse_rfc3339(arg).ok_or_else(|| {
        format!(
            "{arg:?} is neither a duration ago (\"1h\", \"30m\", \"7d\") nor an RFC 3339 time \
             (\"2025-01-31T12:00:00Z\", \"2025-01-31T13:00:00+01:00\", \"2025-01-31\")"
        )
    })
}

/// `YYYY-` at the start: a date, not a duration.
fn looks_like_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-'
}

/// RFC 3339 (`T`, `t` or a space between date and time; `Z`, `z` or `±HH:MM`; any number of
/// fraction digits, milliseconds kept), or a date alone (midnight UTC). `None` if malformed or
/// outside 1970 ..= 9999.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let sep = |at: usize, c: u8| b.get(at) == Some(&c);
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    if !(sep(4, b'-') && sep(7, b'-') && (1..=12).contains(&month)) {
        return None;
    }
    if !(1..=days_in_month(year, month)).contains(&day) {
        return None;
    }
    let date_ms = days_from_civil(year, month, day) * MS_PER_DAY;
    if b.len() == 10 {
        return in_range(date_ms);
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(sep(13, b':') && sep(16, b':')) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut at = 19;
    let mut millis = 0;
    if sep(at, b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == start {
            return None;
        }
        // The first three digits, padded: ".5" is 500 ms.
        let mut digits = b[start..at.min(start + 3)].to_vec();
        digits.resize(3, b'0');
        millis = digits.iter().fold(0, |n, &d| n * 10 + i64::from(d - b'0'));
    }
    let offset_ms = match b.get(at) {
        Some(b'Z' | b'z') if b.len() == at + 1 => 0,
        Some(&sign @ (b'+' | b'-')) if b.len() == at + 6 && sep(at + 3, b':') => {
            let (oh, om) = (num(at + 1, 2)?, num(at + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = (oh * 60 + om) * 60_000;
            if sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    // A leap second (:60) is the second after :59.
    let time_ms = ((hour * 60 + minute) * 60 + second) * 1000 + millis;
    in_range(date_ms + time_ms - offset_ms)
}

fn in_range(ms: i64) -> Option<i64> {
    (0..=MAX_TIME_MS).contains(&ms).then_some(ms)
}

/// `ms` since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (clamped to 1970 ..= 9999).
pub fn format_rfc3339(ms: i64) -> String {
    let ms = ms.clamp(0, MAX_TIME_MS);
    let (days, in_day) = (ms.div_euclid(MS_PER_DAY), ms.rem_euclid(MS_PER_DAY));
    let (y, m, d) = civil_from_days(days);
    let secs = in_day / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        in_day % 1000
    )
}

/// `ms` since the Unix epoch as a `SystemTime`.
pub fn system_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of the proleptic Gregorian date `y-m-d`.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `z` days after 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_table() {
        let cases: &[(&str, Option<i64>)] = &[
            ("1970-01-01T00:00:00Z", Some(0)),
            ("1970-01-01", Some(0)),
            ("2000-02-29T12:34:56.789Z", Some(951_827_696_789)),
            ("2000-02-29t12:34:56.7z", Some(951_827_696_700)),
            ("2000-02-29 12:34:56.123456Z", Some(951_827_696_123)),
            ("2000-02-29T13:34:56+01:00", Some(951_827_696_000)),
            ("2000-02-29T11:04:56-01:30", Some(951_827_696_000)),
            ("2024-12-31T23:59:60Z", Some(1_735_689_600_000)),
            ("9999-12-31T23:59:59.999Z", Some(MAX_TIME_MS)),
            ("1969-12-31T23:59:59Z", None),
            ("1970-01-01T00:30:00+01:00", None),
            ("2001-02-29T00:00:00Z", None),
            ("2000-13-01T00:00:00Z", None),
            ("2000-01-01T24:00:00Z", None),
            ("2000-01-01T00:00:00", None),
            ("2000-01-01T00:00:00.Z", None),
            ("2000-01-01T00:00:00+0100", None),
            ("2000-01-01T00:00:00Zjunk", None),
            ("2000-1-01", None),
            ("", None),
            ("2000-01-01Tä0:00:00Z", None),
        ];
        for &(text, want) in cases {
            assert_eq!(parse_rfc3339(text), want, "{text}");
        }
    }

    #[test]
    fn formatting_round_trips() {
        for ms in [
            0,
            951_827_696_789,
            1_735_689_599_999,
            4_102_444_800_000,
            MAX_TIME_MS,
        ] {
            let text = format_rfc3339(ms);
            assert_eq!(parse_rfc3339(&text), Some(ms), "{text}");
        }
        assert_eq!(format_rfc3339(951_827_696_789), "2000-02-29T12:34:56.789Z");
        assert_eq!(format_rfc3339(-5), "1970-01-01T00:00:00.000Z");
        // Every day for 1,000 years reads back.
        for day in (0..365_250).step_by(7) {
            let ms = day * MS_PER_DAY + 1;
            assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Some(ms));
        }
    }

    #[test]
    fn durations_ago_and_now() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(parse_time("1h", now), Ok(1_000_000_000 - 3_600_000));
        assert_eq!(parse_time("30m", now), Ok(1_000_000_000 - 1_800_000));
        assert_eq!(parse_time("1d 2h", now), Ok(1_000_000_000 - 93_600_000));
        assert_eq!(parse_time("500ms", now), Ok(999_999_500));
        assert_eq!(parse_time("now", now), Ok(1_000_000_000));
        assert_eq!(parse_time("100y", now), Ok(0));
        assert_eq!(parse_time("1970-01-02", now), Ok(MS_PER_DAY));
        for bad in ["", "1 fortnight", "yesterday", "-1h", "1970-01-02T"] {
            let e = parse_time(bad, now).unwrap_err();
            assert!(e.contains("RFC 3339"), "{bad}: {e}");
        }
    }
}
