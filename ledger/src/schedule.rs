//! Job schedules as the Spark Operator's ScheduledSparkApplication writes them
//! (robfig/cron: five fields, `@hourly`-style descriptors, `@every 90m`), and
//! their expansion into run times.

use chrono::{DateTime, TimeDelta, Utc};
use std::str::FromStr;
use thiserror::Error;

/// A schedule string that will not parse; says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "invalid schedule {text:?}: {reason}; use five cron fields (minute hour day-of-month month day-of-week, \
     e.g. \"*/15 * * * *\"), a descriptor (@hourly, @daily, @weekly, @monthly, @yearly) or @every <duration> \
     (e.g. @every 1h30m)"
)]
pub struct ScheduleError {
    /// The schedule as given.
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A cron expression (UTC).
    Cron(Box<cron::Schedule>),
    /// A fixed interval. The Spark Operator counts it from whenever it
    /// started, which nobody can plan for; sparkcap counts it from the Unix
    /// epoch (so `@every 2h` runs at even UTC hours), the same runs whatever
    /// window is asked about.
    Every(TimeDelta),
}

impl FromStr for Schedule {
    type Err = ScheduleError;
    fn from_str(text: &str) -> Result<Self, ScheduleError> {
        let err = |reason: String| ScheduleError {
            text: text.to_string(),
            reason,
        };
        let s = text.trim();
        if let Some(rest) = s.strip_prefix("@every") {
            let d = parse_go_duration(rest.trim()).map_err(err)?;
            // Cron's finest field is the minute, and so is a Kubernetes
            // CronJob's: a shorter interval is no Spark schedule, and each
            // run would have to be planned in every slice it touches.
            if d < TimeDelta::minutes(1) {
                return Err(err("the interval must be at least 1m (a run a minute at most)".into()));
            }
            return Ok(Self::Every(d));
        }
        let six = match s {
            "@yearly" | "@annually" => "0 0 0 1 1 *".to_string(),
            "@monthly" => "0 0 0 1 * *".to_string(),
            "@weekly" => "0 0 0 * * Sun".to_string(),
            "@daily" | "@midnight" => "0 0 0 * * *".to_string(),
            "@hourly" => "0 0 * * * *".to_string(),
            d if d.starts_with('@') => return Err(err(format!("unknown descriptor {d}"))),
            fields => {
                let f: Vec<&str> = fields.split_whitespace().collect();
                if f.len() != 5 {
                    return Err(err(format!("expected 5 fields, found {}", f.len())));
                }
                let dow = unix_weekdays(f[4]).map_err(err)?;
                format!("0 {} {} {} {} {dow}", f[0], f[1], f[2], f[3])
            }
        };
        cron::Schedule::from_str(&six)
            .map(|c| Self::Cron(Box::new(c)))
            .map_err(|e| err(e.to_string()))
    }
}

impl Schedule {
    /// Run times in `(from, until)`, at most `limit` of them.
    pub fn runs_between(&self, from: DateTime<Utc>, until: DateTime<Utc>, limit: usize) -> Vec<DateTime<Utc>> {
        match self {
            Self::Cron(c) => c.after(&from).take_while(|t| *t < until).take(limit).collect(),
            Self::Every(d) => {
                let (Some(step), Some(at)) = (d.num_nanoseconds(), from.timestamp_nanos_opt()) else {
                    return Vec::new();
                };
                // The first multiple of the interval after `from`.
                let first = DateTime::from_timestamp_nanos((at.div_euclid(step) + 1) * step);
                std::iter::successors(Some(first), |t| Some(*t + *d))
                    .take_while(|t| *t < until)
                    .take(limit)
                    .collect()
            }
        }
    }
}

/// A day-of-week field as robfig/cron and Unix cron write it (0-6 from
/// Sunday, 7 also Sunday) in the numbering of the `cron` crate (Quartz:
/// 1-7 from Sunday). Names (`MON-FRI`) mean the same in both.
fn unix_weekdays(field: &str) -> Result<String, String> {
    let num = |s: &str| -> Result<Option<u32>, String> {
        match s.parse::<u32>() {
            Ok(n) if n <= 7 => Ok(Some(n % 7 + 1)),
            Ok(n) => Err(format!("day of week {n} is out of range (0-7, 0 and 7 are Sunday)")),
            Err(_) => Ok(None), // a name or '*'
        }
    };
    let parts: Result<Vec<String>, String> = field
        .split(',')
        .map(|part| {
            let (base, step) = match part.split_once('/') {
                Some((b, s)) => (b, Some(s)),
                None => (part, None),
            };
            let step = step.map(|s| format!("/{s}")).unwrap_or_default();
            if let Some((a, b)) = base.split_once('-') {
                match (num(a)?, num(b)?, b.trim() == "7") {
                    // "a-7" runs to Sunday: split into a..Saturday and Sunday.
                    (Some(x), Some(_), true) if step.is_empty() && x != 1 => Ok(format!("{x}-7,1")),
                    (Some(_), Some(_), true) if step.is_empty() => Ok("1-7".to_owned()),
                    (Some(_), Some(_), true) => Err(format!(
                        "day-of-week range {base} with a step is not supported; write 0-6{step}"
                    )),
                    (Some(x), Some(y), false) => Ok(format!("{x}-{y}{step}")),
                    _ => Ok(part.to_owned()),
                }
            } else {
                Ok(match num(base)? {
                    Some(n) => format!("{n}{step}"),
                    None => part.to_owned(),
                })
            }
        })
        .collect();
    Ok(parts?.join(","))
}

/// Go's `time.ParseDuration` subset that schedules use: `1h30m`, `90s`, `2h`.
pub fn parse_go_duration(s: &str) -> Result<TimeDelta, String> {
    if s.is_empty() {
        return Err("empty duration; write e.g. 90s, 20m or 1h30m".into());
    }
    let mut total = TimeDelta::zero();
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("duration {s:?} must be numbers with units h, m or s"));
        }
        let n: i64 = rest[..digits]
            .parse()
            .map_err(|_| format!("duration {s:?} is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "h" => TimeDelta::try_hours(n),
            "m" => TimeDelta::try_minutes(n),
            "s" => TimeDelta::try_seconds(n),
            u => return Err(format!("unknown duration unit {u:?} in {s:?}; use h, m or s")),
        }
        .ok_or_else(|| format!("duration {s:?} is too large"))?;
        total = total
            .checked_add(&part)
            .ok_or_else(|| format!("duration {s:?} is too large"))?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, h, m, 0).unwrap()
    }

    #[test]
    fn cron_fields_descriptors_and_every() {
        let s: Schedule = "*/15 * * * *".parse().unwrap();
        assert_eq!(
            s.runs_between(t(10, 0), t(11, 0), 10),
            vec![t(10, 15), t(10, 30), t(10, 45)]
        );
        let s: Schedule = "@hourly".parse().unwrap();
        assert_eq!(s.runs_between(t(10, 5), t(12, 30), 10), vec![t(11, 0), t(12, 0)]);
        // Counted from the epoch: 1h30m divides the day, so from midnight.
        let s: Schedule = "@every 1h30m".parse().unwrap();
        assert_eq!(
            s.runs_between(t(10, 0), t(14, 0), 10),
            vec![t(10, 30), t(12, 0), t(13, 30)]
        );
        assert_eq!(s.runs_between(t(10, 29), t(12, 0), 10), vec![t(10, 30)]);
        let s: Schedule = "0 2 * * 1-5".parse().unwrap();
        assert_eq!(s.runs_between(t(0, 0), t(23, 0), 10), vec![t(2, 0)]); // 2026-11-23 is a Monday
    }

    #[test]
    fn weekdays_are_numbered_as_unix_cron_numbers_them() {
        let day = |d: u32| Utc.with_ymd_and_hms(2026, 11, d, 0, 0, 0).unwrap(); // 22nd: Sunday
        let days = |text: &str| -> Vec<u32> {
            let s: Schedule = text.parse().unwrap();
            use chrono::Datelike;
            s.runs_between(day(22) - TimeDelta::hours(1), day(29), 20)
                .iter()
                .map(|t| t.day())
                .collect()
        };
        assert_eq!(days("0 2 * * 1-5"), vec![23, 24, 25, 26, 27], "Monday to Friday");
        assert_eq!(days("0 2 * * 0"), vec![22]);
        assert_eq!(days("0 2 * * 7"), vec![22], "7 is Sunday too");
        assert_eq!(days("0 2 * * 0,6"), vec![22, 28]);
        assert_eq!(days("0 2 * * 5-7"), vec![22, 27, 28], "Friday to Sunday");
        assert_eq!(days("0 2 * * MON-FRI"), days("0 2 * * 1-5"));
        assert_eq!(
            days("0 2 * * */2"),
            vec![22, 24, 26, 28],
            "Sunday, Tuesday, Thursday, Saturday"
        );
        assert!(
            "0 2 * * 8"
                .parse::<Schedule>()
                .unwrap_err()
                .to_string()
                .contains("out of range")
        );
    }

    #[test]
    fn errors_say_what_is_accepted() {
        for bad in [
            "* * * *",
            "61 * * * *",
            "@fortnightly",
            "@every",
            "@every 5x",
            "@every 0s",
            "@every 1s",
            "@every 59s",
            "",
        ] {
            let e = bad.parse::<Schedule>().unwrap_err().to_string();
            assert!(e.contains("use five cron fields"), "{bad}: {e}");
        }
        assert!(
            "* * * *"
                .parse::<Schedule>()
                .unwrap_err()
                .to_string()
                .contains("expected 5 fields, found 4")
        );
    }
}
