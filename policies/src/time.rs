//! Calendar arithmetic on Unix seconds (UTC), without a timezone database.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) const DAY: i64 = 86_400;

/// Seconds since the Unix epoch; negative before it (never panics).
pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let back = e.duration();
            let s = i64::try_from(back.as_secs()).unwrap_or(i64::MAX);
            // -0.5 s is in the second that started at -1.
            if back.subsec_nanos() > 0 {
                -s.saturating_add(1)
            } else {
                -s
            }
        }
    }
}

/// The `SystemTime` `secs` seconds after the epoch (saturating at the representable range).
pub(crate) fn from_unix_secs(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH
            .checked_add(Duration::from_secs(secs.unsigned_abs()))
            .unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .unwrap_or(UNIX_EPOCH)
    }
}

/// (year, month 1–12, day 1–31) of the day `z` days after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days from 1970-01-01 to (year, month, day) (Howard Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Months since January 1970 of the UTC day `day`.
pub(crate) fn month_index(day: i64) -> i64 {
    let (y, m, _) = civil_from_days(day);
    (y - 1970) * 12 + i64::from(m) - 1
}

/// The first day (days since the epoch) of month index `month` (see [`month_index`]).
pub(crate) fn month_start_day(month: i64) -> i64 {
    let y = 1970 + month.div_euclid(12);
    let m = month.rem_euclid(12) as u32 + 1;
    days_from_civil(y, m, 1)
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn rfc3339(secs: i64) -> String {
    let day = secs.div_euclid(DAY);
    let sod = secs.rem_euclid(DAY);
    let (y, m, d) = civil_from_days(day);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Day of week of the day `day` days after the epoch: 0 = Monday … 6 = Sunday.
pub(crate) fn weekday(day: i64) -> u32 {
    // 1970-01-01 was a Thursday (3).
    (day + 3).rem_euclid(7) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for z in [-800_000i64, -1, 0, 1, 59, 365, 10_957, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn months_and_weekdays() {
        let day = days_from_civil(2025, 3, 15);
        assert_eq!(month_index(day), 55 * 12 + 2);
        assert_eq!(
            month_start_day(month_index(day)),
            days_from_civil(2025, 3, 1)
        );
        assert_eq!(
            month_start_day(month_index(day) + 10),
            days_from_civil(2026, 1, 1)
        );
        assert_eq!(weekday(days_from_civil(2025, 3, 15)), 5); // a Saturday
        assert_eq!(rfc3339(86_400 + 3661), "1970-01-02T01:01:01Z");
    }

    #[test]
    fn secs_before_epoch() {
        let t = UNIX_EPOCH - Duration::from_millis(500);
        assert_eq!(unix_secs(t), -1);
        assert_eq!(unix_secs(from_unix_secs(-42)), -42);
        assert_eq!(unix_secs(from_unix_secs(1_700_000_000)), 1_700_000_000);
    }
}
