//! Time-of-day windows with a fixed UTC offset (no timezone database: an operator who needs
//! daylight-saving changes edits the offset, or writes two rules).

use crate::time::{unix_secs, weekday, DAY};
use std::time::SystemTime;

/// A compiled `time:` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// Start, seconds after local midnight (inclusive).
    start: u32,
    /// End, seconds after local midnight (exclusive, up to 86 400); below start = wraps
    /// past midnight.
    end: u32,
    /// Local time = UTC + offset.
    offset: i32,
    /// Bit d set = weekday d (0 = Monday) allowed; 0x7f = every day.
    days: u8,
}

impl Window {
    pub(crate) fn new(start: u32, end: u32, offset: i32, days: u8) -> Self {
        Window {
            start,
            end,
            offset,
            days,
        }
    }

    /// Returns true if and only if `now` falls inside the window.
    pub(crate) fn contains(&self, now: SystemTime) -> bool {
        let local = unix_secs(now).saturating_add(i64::from(self.offset));
        let sod = local.rem_euclid(DAY) as u32;
        let in_time = if self.start < self.end {
            self.start <= sod && sod < self.end
        } else {
            sod >= self.start || sod < self.end
        };
        in_time && self.days & (1 << weekday(local.div_euclid(DAY))) != 0
    }
}

/// Parses `HH:MM` (00:00–23:59, or 24:00 when `allow_24` is set) into seconds after midnight.
fn parse_hhmm(s: &str, allow_24: bool) -> Result<u32, String> {
    let s = s.trim();
    let bad = || format!("`{s}` is not a time between 00:00 and 23:59 (HH:MM)");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let digits = |x: &str, lens: std::ops::RangeInclusive<usize>| {
        lens.contains(&x.len()) && x.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(h, 1..=2) || !digits(m, 2..=2) {
        return Err(bad());
    }
    let (h, m) = (
        h.parse::<u32>().map_err(|_| bad())?,
        m.parse::<u32>().map_err(|_| bad())?,
    );
    match (h, m) {
        (h, m) if h < 24 && m < 60 => Ok(h * 3600 + m * 60),
        (24, 0) if allow_24 => Ok(24 * 3600),
        _ => Err(bad()),
    }
}

/// Parses `HH:MM-HH:MM`. Start and end must differ (an always-true window is written by
/// leaving `time` out).
pub(crate) fn parse_between(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("`{s}` is not a window like \"22:00-06:00\""))?;
    let start = parse_hhmm(a, false)?;
    let end = parse_hhmm(b, true)?;
    if start == end {
        return Err(format!(
            "`{s}` is empty or the whole day: start and end must differ (leave out `time` to match at any time)"
        ));
    }
    Ok((start, end))
}

/// Parses `UTC`, `Z`, `GMT`, `+02:00`, `-0530`, `+2`, `UTC+2`, `UTC-05:30` into seconds
/// east of UTC (at most ±14:00).
pub(crate) fn parse_tz(s: &str) -> Result<i32, String> {
    let t = s.trim();
    let upper = t.to_ascii_uppercase();
    let rest = upper
        .strip_prefix("UTC")
        .or_else(|| upper.strip_prefix("GMT"))
        .unwrap_or(&upper);
    if rest.is_empty() || rest == "Z" {
        return Ok(0);
    }
    let bad =
        || format!("`{t}` is not a timezone: use UTC or a fixed offset such as +02:00 or -05:30");
    let (sign, digits) = match rest.as_bytes().first() {
        Some(b'+') => (1, &rest[1..]),
        Some(b'-') => (-1, &rest[1..]),
        Some(b) if b.is_ascii_digit() => (1, rest),
        _ => return Err(bad()),
    };
    let (h, m) = match digits.split_once(':') {
        Some((h, m)) => (h, m),
        None if digits.len() == 4 => digits.split_at(2),
        None => (digits, "0"),
    };
    let ok = |x: &str| !x.is_empty() && x.len() <= 2 && x.bytes().all(|b| b.is_ascii_digit());
    if !ok(h) || !ok(m) {
        return Err(bad());
    }
    let (h, m) = (
        h.parse::<i32>().map_err(|_| bad())?,
        m.parse::<i32>().map_err(|_| bad())?,
    );
    if m >= 60 || h * 60 + m > 14 * 60 {
        return Err(format!(
            "`{t}` is out of range: offsets go from -14:00 to +14:00"
        ));
    }
    Ok(sign * (h * 3600 + m * 60))
}

/// Parses a weekday name (`mon`, `Monday`, …) into 0 = Monday … 6 = Sunday.
pub(crate) fn parse_day(s: &str) -> Result<u32, String> {
    const NAMES: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let l = s.trim().to_ascii_lowercase();
    NAMES
        .iter()
        .position(|n| l.len() >= 3 && n.starts_with(&l))
        .map(|d| d as u32)
        .ok_or_else(|| format!("`{s}` is not a day of the week (mon, tue, … sun)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{days_from_civil, from_unix_secs};

    fn at(y: i64, mo: u32, d: u32, h: i64, mi: i64) -> SystemTime {
        from_unix_secs(days_from_civil(y, mo, d) * DAY + h * 3600 + mi * 60)
    }

    #[test]
    fn parses_windows() {
        assert_eq!(parse_between("22:00-06:00"), Ok((79_200, 21_600)));
        assert_eq!(parse_between("09:30 - 17:00"), Ok((34_200, 61_200)));
        assert_eq!(parse_between("18:00-24:00"), Ok((64_800, 86_400)));
        assert_eq!(parse_between("00:00-24:00"), Ok((0, 86_400)));
        assert!(parse_between("25:00-06:00").is_err());
        assert!(parse_between("10:00-10:00").is_err());
        assert!(parse_between("10-11").is_err());
        assert!(parse_between("10:5-11:00").is_err());
        assert!(parse_between("9:05-11:00").is_ok());
        assert!(parse_between("10:60-11:00").is_err());
        assert!(parse_between("24:00-11:00").is_err());
    }

    #[test]
    fn parses_offsets() {
        assert_eq!(parse_tz("UTC"), Ok(0));
        assert_eq!(parse_tz("z"), Ok(0));
        assert_eq!(parse_tz("+02:00"), Ok(7200));
        assert_eq!(parse_tz("-0530"), Ok(-19_800));
        assert_eq!(parse_tz("UTC+2"), Ok(7200));
        assert_eq!(parse_tz("GMT-05:30"), Ok(-19_800));
        assert!(parse_tz("+15:00").is_err());
        assert!(parse_tz("Europe/Paris").is_err());
        assert!(parse_tz("+02:75").is_err());
    }

    #[test]
    fn days() {
        assert_eq!(parse_day("Mon"), Ok(0));
        assert_eq!(parse_day("sunday"), Ok(6));
        assert!(parse_day("mo").is_err());
        assert!(parse_day("funday").is_err());
    }

    #[test]
    fn wrapping_window_with_offset() {
        let w = Window::new(22 * 3600, 6 * 3600, 2 * 3600, 0x7f);
        // 21:30 UTC = 23:30 local: inside.
        assert!(w.contains(at(2025, 3, 14, 21, 30)));
        // 03:59 UTC = 05:59 local: inside; 04:00 UTC = 06:00 local: outside (end exclusive).
        assert!(w.contains(at(2025, 3, 14, 3, 59)));
        assert!(!w.contains(at(2025, 3, 14, 4, 0)));
        // 19:59 UTC = 21:59 local: outside; 20:00 UTC = 22:00 local: inside.
        assert!(!w.contains(at(2025, 3, 14, 19, 59)));
        assert!(w.contains(at(2025, 3, 14, 20, 0)));
    }

    #[test]
    fn weekdays_in_local_time() {
        // 2025-03-14 is a Friday. Friday only, 00:00-24:00 in UTC+02:00.
        let w = Window::new(0, 86_400, 7200, 1 << 4);
        // Thursday 23:00 UTC = Friday 01:00 local.
        assert!(w.contains(at(2025, 3, 13, 23, 0)));
        // Friday 22:30 UTC = Saturday 00:30 local.
        assert!(!w.contains(at(2025, 3, 14, 22, 30)));
    }
}
