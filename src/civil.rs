//! Calendar dates in UTC from Unix time, without a date-time dependency:
//! alert timestamps, Tracetest's `span.events` and its `date()` read them.

/// The system clock in nanoseconds since the Unix epoch (0 before it).
pub fn now_unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A moment as a UTC calendar date and time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanos: u32,
}

impl Utc {
    /// The moment `nanos` nanoseconds after 1970-01-01T00:00:00Z.
    pub fn from_unix_nanos(nanos: u64) -> Utc {
        let secs = (nanos / 1_000_000_000) as i64;
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        Utc {
            year: yoe + era * 400 + i64::from(month <= 2),
            month: month as u32,
            day: day as u32,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
            nanos: (nanos % 1_000_000_000) as u32,
        }
    }

    /// `2026-11-23`.
    pub fn date(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// `2026-11-23T10:00:00`, without fraction or zone.
    pub fn date_time(&self) -> String {
        format!(
            "{}T{:02}:{:02}:{:02}",
            self.date(),
            self.hour,
            self.minute,
            self.second
        )
    }

    /// Go's `time.RFC3339Nano` in UTC: the fraction without its trailing
    /// zeros, and none at all on a whole second (`…:05.12Z`, `…:05Z`).
    pub fn rfc3339_nano(&self) -> String {
        let mut out = self.date_time();
        if self.nanos != 0 {
            let fraction = format!("{:09}", self.nanos);
            out.push('.');
            out.push_str(fraction.trim_end_matches('0'));
        }
        out.push('Z');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        let epoch = Utc::from_unix_nanos(0);
        assert_eq!(epoch.rfc3339_nano(), "1970-01-01T00:00:00Z");
        let t = Utc::from_unix_nanos(1_795_432_481_095_000_000);
        assert_eq!(t.rfc3339_nano(), "2026-11-23T11:14:41.095Z");
        let leap = Utc::from_unix_nanos(951_782_400_000_000_001);
        assert_eq!(leap.rfc3339_nano(), "2000-02-29T00:00:00.000000001Z");
        assert_eq!(leap.date(), "2000-02-29");
    }
}
