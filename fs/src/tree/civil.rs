//! Calendar dates of Unix times (UTC), for names derived from times
//! (conflict copies, snapshot folders) and their inverse, for times users
//! type (`restore --at`). No time zone, no clock.

/// (year, month, day, hour, minute, second) in UTC of a Unix time, by
/// Howard Hinnant's `civil_from_days` (proleptic Gregorian calendar).
pub fn civil_utc(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem / 60 % 60, rem % 60)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`, the inverse of [`civil_utc`]'s date part).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses a time as snapshot folders name it (`2026-11-26T04:30:12.345Z`,
/// UTC), or a prefix of one down to the day (`2026-11-26T04:30`); the `Z`
/// is optional. Returns the end of the period it names (exclusive), in
/// nanoseconds since the epoch: the state at that time is the newest
/// commit before it. `None` for anything else.
pub fn parse_time(s: &str) -> Option<i128> {
    let t = s.strip_suffix('Z').unwrap_or(s);
    let b = t.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = t.get(r)?;
        if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let sep = |i: usize, c: u8| b.get(i) == Some(&c);
    if b.len() < 10 || !sep(4, b'-') || !sep(7, b'-') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut secs = days_from_civil(y, mo, d) * 86_400;
    let mut unit: i128 = 86_400 * 1_000_000_000;
    let mut frac: i128 = 0;
    let rest = &b[10..];
    match rest.len() {
        0 => {}
        3 | 6 | 9 => {}
        n if n > 10 && sep(19, b'.') => {}
        _ => return None,
    }
    if !rest.is_empty() {
        // Hours, minutes, seconds: each after its separator, each making
        // the period it names shorter.
        for (at, c, max, per) in [(10, b'T', 23, 3600), (13, b':', 59, 60), (16, b':', 60, 1)] {
            if b.len() <= at {
                break;
            }
            if !sep(at, c) {
                return None;
            }
            let v = num(at + 1..at + 3)?;
            if v > max {
                return None;
            }
            secs += v * per;
            unit = i128::from(per) * 1_000_000_000;
        }
        if b.len() > 19 {
            let digits = t.get(20..)?;
            if digits.is_empty() || digits.len() > 9 || num(20..b.len()).is_none() {
                return None;
            }
            unit = 10i128.pow(9 - digits.len() as u32);
            frac = i128::from(num(20..b.len())?) * unit;
        }
    }
    Some(i128::from(secs) * 1_000_000_000 + frac + unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_name_the_end_of_their_period() {
        let s = 1_795_667_400i128; // 2026-11-26T04:30:00Z
        let ns = 1_000_000_000i128;
        assert_eq!(parse_time("2026-11-26T04:30"), Some((s + 60) * ns));
        assert_eq!(parse_time("2026-11-26T04:30:00Z"), Some((s + 1) * ns));
        assert_eq!(
            parse_time("2026-11-26T04:30:00.123Z"),
            Some(s * ns + 124_000_000)
        );
        assert_eq!(parse_time("2026-11-26T04"), Some((s + 1800) * ns));
        assert_eq!(parse_time("2026-11-26"), Some((s + 19 * 3600 + 1800) * ns));
        for bad in [
            "2026-11-26T",
            "2026-11-26T04:3",
            "2026-13-01",
            "2026-11-26T25:00",
            "2026-11-26 04:30",
            "2026-11-26T04:30:00.",
            "2026-11-26T04:30:00.1234567890",
            "yesterday",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn days_invert_civil_dates() {
        for secs in [0i64, 951_782_400, 1_795_660_245, -1, -86_400 * 800] {
            let (y, m, d, ..) = civil_utc(secs);
            let days = days_from_civil(y, i64::from(m), i64::from(d));
            assert_eq!(days, secs.div_euclid(86_400), "{secs}");
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_utc(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil_utc(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(civil_utc(1_795_660_245), (2026, 11, 26, 2, 30, 45));
        assert_eq!(civil_utc(-1), (1969, 12, 31, 23, 59, 59));
    }
}
