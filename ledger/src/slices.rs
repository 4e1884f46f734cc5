//! Time slices (R7): the future planned in fixed slices (default 15 min, 96
//! a day). A job schedule — cron or interval, with a duration and the cores
//! of its driver and executors — expands over a horizon (30 days) into the
//! cores it needs in each slice; a schedule fits when every slice it needs
//! has room in its pool after what is already reserved, and within the
//! tenant's cap. When it does not fit, the nearest start-time shifts that do
//! are offered, each with its headroom (R7.4).
//!
//! All pure: the store calls these under a per-pool lock, so that what is
//! checked is what is written. Demand is kept per slice as a dense vector
//! over the horizon (2,880 slices for 30 days) built with a difference
//! array, so 500 schedules check in milliseconds.

use crate::ids::TenantId;
use crate::pool::Pool;
use crate::schedule::{Schedule, ScheduleError};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Default slice length (R7.1).
pub const DEFAULT_SLICE: TimeDelta = TimeDelta::minutes(15);
/// Default planning horizon.
pub const DEFAULT_HORIZON_DAYS: i64 = 30;
/// Most alternatives offered for a refused schedule.
pub const MAX_ALTERNATIVES: usize = 5;
/// Most cores one schedule's runs may ask for, in millicores (100,000
/// cores, far beyond any pool): a bound on tenant input that keeps every
/// sum over slices far from overflow. Runs are at most one a minute (cron's
/// finest field, and `@every` is held to 1 min), so at most 1,440 runs of a
/// day-long job overlap: 1,440 × 10^8 fits an i64 with room to spare.
pub const MAX_SCHEDULE_CORES: i64 = 100_000_000;

/// Why a slice setting or a job schedule cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SliceError {
    /// A slice length that does not divide the day.
    #[error("slice length {0} s must be between 60 s and 1 day and divide 24 h evenly (e.g. 15 min, 30 min, 1 h)")]
    BadSliceLength(i64),
    /// The schedule text.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// A duration that is not positive or longer than a day.
    #[error("duration {0} s must be between 1 s and 24 h; a longer job cannot be planned in daily slices")]
    BadDuration(i64),
    /// Cores that are not positive, or beyond [`MAX_SCHEDULE_CORES`].
    #[error("cores {0}m must be positive and at most 100000000m (100,000 cores): driver + executors, in millicores")]
    BadCores(i64),
    /// A time zone we cannot evaluate.
    #[error(
        "time zone {0:?} is not supported: give UTC or a fixed offset such as +02:00 or -05:30 (named zones with daylight saving are not supported yet)"
    )]
    BadTimeZone(String),
}

/// The slice grid and the horizon planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Horizon {
    /// First slice start (aligned to the slice length from UTC midnight).
    pub start: DateTime<Utc>,
    /// Slice length.
    pub slice: TimeDelta,
    /// Number of slices.
    pub slices: usize,
}

impl Horizon {
    /// The horizon of `days` days of `slice`-long slices starting with the
    /// slice that holds `now`.
    pub fn new(now: DateTime<Utc>, slice: TimeDelta, days: i64) -> Result<Self, SliceError> {
        let secs = slice.num_seconds();
        if !(60..=86_400).contains(&secs) || 86_400 % secs != 0 || slice.subsec_nanos() != 0 {
            return Err(SliceError::BadSliceLength(secs));
        }
        let start = now
            .duration_trunc(slice)
            .map_err(|_| SliceError::BadSliceLength(secs))?;
        Ok(Self {
            start,
            slice,
            slices: (days.max(1) * 86_400 / secs) as usize,
        })
    }

    /// Slices per day.
    pub fn per_day(&self) -> usize {
        (86_400 / self.slice.num_seconds()) as usize
    }

    /// End of the horizon (exclusive).
    pub fn end(&self) -> DateTime<Utc> {
        self.start + self.slice * self.slices as i32
    }

    /// Start of slice `i`.
    pub fn slice_start(&self, i: usize) -> DateTime<Utc> {
        self.start + self.slice * i as i32
    }

    /// The slices `[first, last]` a run over `[t, t + d)` overlaps, clipped
    /// to the horizon; None when it lies outside. A run that starts on a
    /// slice boundary needs `ceil(d / slice)` slices (R7.2); one that starts
    /// mid-slice needs every slice it touches — never fewer than it uses.
    pub fn covering(&self, t: DateTime<Utc>, d: TimeDelta) -> Option<(usize, usize)> {
        let len = self.slice.num_nanoseconds()? as i128;
        let from = (t - self.start).num_nanoseconds()? as i128;
        let to = from + d.num_nanoseconds()? as i128; // exclusive
        let n = self.slices as i128;
        let first = from.div_euclid(len).max(0);
        let last = (to - 1).div_euclid(len).min(n - 1);
        (to > 0 && from < n * len && first <= last).then_some((first as usize, last as usize))
    }
}

/// Where a schedule's clock is: UTC or a fixed offset from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offset(pub i32);

impl std::str::FromStr for Offset {
    type Err = SliceError;
    fn from_str(s: &str) -> Result<Self, SliceError> {
        let bad = || SliceError::BadTimeZone(s.to_owned());
        let t = s.trim();
        if t.is_empty() || t.eq_ignore_ascii_case("utc") || t == "Z" || t == "Etc/UTC" {
            return Ok(Self(0));
        }
        let (sign, rest) = match t.as_bytes()[0] {
            b'+' => (1, &t[1..]),
            b'-' => (-1, &t[1..]),
            _ => return Err(bad()),
        };
        let (h, m) = rest.split_once(':').ok_or_else(bad)?;
        let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if h > 14 || m > 59 || h.to_string().len() > 2 {
            return Err(bad());
        }
        Ok(Self(sign * (h * 60 + m)))
    }
}

/// A job schedule as a tenant asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSchedule {
    /// Cron (5 fields), a descriptor (`@hourly`) or `@every 2h`.
    pub schedule: String,
    /// The clock the cron fields are read in.
    pub offset: Offset,
    /// How long each run is expected to take.
    pub duration: TimeDelta,
    /// Driver + executors, in millicores.
    pub cores: i64,
}

/// A schedule ready to expand.
#[derive(Debug, Clone)]
pub struct Planned {
    schedule: Schedule,
    offset: TimeDelta,
    duration: TimeDelta,
    cores: i64,
    /// Whether the cron fields repeat every day (day fields all `*`), so one
    /// day's runs can be copied across the horizon.
    daily: bool,
}

impl JobSchedule {
    /// Checks and parses.
    pub fn plan(&self) -> Result<Planned, SliceError> {
        let secs = self.duration.num_seconds();
        if !(1..=86_400).contains(&secs) {
            return Err(SliceError::BadDuration(secs));
        }
        if !(1..=MAX_SCHEDULE_CORES).contains(&self.cores) {
            return Err(SliceError::BadCores(self.cores));
        }
        let schedule: Schedule = self.schedule.parse()?;
        let text = self.schedule.trim();
        let daily = matches!(text, "@daily" | "@midnight" | "@hourly")
            || (!text.starts_with('@') && text.split_whitespace().skip(2).all(|f| f == "*"));
        Ok(Planned {
            schedule,
            offset: TimeDelta::minutes(i64::from(self.offset.0)),
            duration: self.duration,
            cores: self.cores,
            daily,
        })
    }
}

impl Planned {
    /// Run starts whose runs overlap the horizon (a run that started before
    /// it and is still going counts), shifted by `shift`.
    pub fn runs(&self, h: &Horizon, shift: TimeDelta) -> Vec<DateTime<Utc>> {
        // Evaluate in the schedule's clock: local = UTC + offset. A run
        // overlaps the horizon when it starts after `start - duration`.
        let from = h.start - self.duration - shift + self.offset + TimeDelta::nanoseconds(1);
        let until = h.end() - shift + self.offset;
        let back = |t: DateTime<Utc>| t - self.offset + shift;
        let cap = 1_000_000;
        match &self.schedule {
            Schedule::Cron(_) if self.daily => {
                let one_day =
                    self.schedule
                        .runs_between(from - TimeDelta::nanoseconds(1), from + TimeDelta::days(1), cap);
                let mut out = Vec::new();
                for day in 0.. {
                    let d = TimeDelta::days(day);
                    if from + d >= until {
                        break;
                    }
                    out.extend(one_day.iter().map(|t| *t + d).filter(|t| *t < until).map(back));
                }
                out
            }
            _ => self
                .schedule
                .runs_between(from - TimeDelta::nanoseconds(1), until, cap)
                .into_iter()
                .map(back)
                .collect(),
        }
    }

    /// Millicores needed in each slice of `h`, runs shifted by `shift`.
    pub fn demand(&self, h: &Horizon, shift: TimeDelta) -> Demand {
        let mut diff = vec![0i64; h.slices + 1];
        for t in self.runs(h, shift) {
            if let Some((a, b)) = h.covering(t, self.duration) {
                diff[a] += self.cores;
                diff[b + 1] -= self.cores;
            }
        }
        let mut acc = 0;
        Demand(
            diff[..h.slices]
                .iter()
                .map(|d| {
                    acc += d;
                    acc
                })
                .collect(),
        )
    }
}

/// Millicores per slice over a horizon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Demand(pub Vec<i64>);

impl Demand {
    /// Nothing reserved.
    pub fn zero(h: &Horizon) -> Self {
        Self(vec![0; h.slices])
    }

    /// Adds `other` in place (saturating: a sum past i64 is full anyway).
    pub fn add(&mut self, other: &Demand) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a = a.saturating_add(*b);
        }
    }

    /// The busiest slice's millicores.
    pub fn peak(&self) -> i64 {
        self.0.iter().copied().max().unwrap_or(0)
    }
}

/// What a schedule may use: the pool's room and the tenant's cap per slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The pool's reservable millicores per slice.
    pub pool: i64,
    /// The most one tenant may hold in one slice.
    pub tenant: i64,
}

/// The first slice that would be overcommitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shortfall {
    /// Its start.
    pub at: DateTime<Utc>,
    /// Millicores the schedule needs there.
    pub needed: i64,
    /// Millicores free there (pool, or the tenant's cap if that is smaller).
    pub free: i64,
    /// `pool` or `tenant cap`.
    pub limit: &'static str,
}

/// Whether `new` fits on top of everything reserved in the pool (`pool`)
/// and of the tenant's own reservations (`tenant`); Ok with the least
/// headroom left (millicores) when it does.
pub fn fits(h: &Horizon, new: &Demand, pool: &Demand, tenant: &Demand, limits: Limits) -> Result<i64, Shortfall> {
    fits_window(h, &new.0, pool, tenant, limits)
}

/// [`fits`] for the demand `new[i]` of each slice `i` of `h`.
fn fits_window(h: &Horizon, new: &[i64], pool: &Demand, tenant: &Demand, limits: Limits) -> Result<i64, Shortfall> {
    let mut headroom = i64::MAX;
    for (i, &need) in new.iter().enumerate().take(h.slices) {
        if need == 0 {
            continue;
        }
        let pool_free = limits.pool.saturating_sub(pool.0[i]);
        let tenant_free = limits.tenant.saturating_sub(tenant.0[i]);
        let (free, limit) = if tenant_free < pool_free {
            (tenant_free, "tenant cap")
        } else {
            (pool_free, "pool")
        };
        if need > free {
            return Err(Shortfall {
                at: h.slice_start(i),
                needed: need,
                free: free.max(0),
                limit,
            });
        }
        headroom = headroom.min(free - need);
    }
    Ok(if headroom == i64::MAX {
        limits.pool.min(limits.tenant)
    } else {
        headroom
    })
}

/// A schedule that would fit instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alternative {
    /// How far the runs move (negative: earlier).
    pub shift: TimeDelta,
    /// The schedule text with the shift applied, when it can be written so.
    pub schedule: Option<String>,
    /// The least room left in any slice it uses, millicores.
    pub headroom: i64,
}

/// The nearest shifts (by whole slices, within a day either way) at which
/// `job` fits, nearest first, at most `max`.
///
/// The runs are expanded once, over the horizon widened by a day each way:
/// a shift by `k` whole slices moves every run's slices by `k` (the grid is
/// aligned to the slice), so the shifted demand is a window of that one
/// expansion. One check then costs the same for any schedule: 2 × 95
/// windows of the horizon's slices, never 190 expansions of its runs.
pub fn alternatives(
    h: &Horizon,
    job: &JobSchedule,
    planned: &Planned,
    pool: &Demand,
    tenant: &Demand,
    limits: Limits,
    max: usize,
) -> Vec<Alternative> {
    let mut out = Vec::new();
    let day = h.per_day();
    let wide = Horizon {
        start: h.start - TimeDelta::days(1),
        slices: h.slices + 2 * day,
        slice: h.slice,
    };
    let all = planned.demand(&wide, TimeDelta::zero());
    for k in 1..day as i32 {
        for sign in [1, -1] {
            let shift = h.slice * (k * sign);
            // Slice i of the shifted runs is slice i - k of the unshifted.
            let from = (day as i64 - i64::from(k * sign)) as usize;
            if let Ok(headroom) = fits_window(h, &all.0[from..from + h.slices], pool, tenant, limits) {
                out.push(Alternative {
                    shift,
                    schedule: shifted_text(&job.schedule, shift),
                    headroom,
                });
                if out.len() >= max {
                    return out;
                }
            }
        }
    }
    out
}

/// `text` with its runs moved by `shift`, when the minute and hour fields
/// are plain numbers (or the hour is `*` and the shift under an hour) and
/// the day fields are `*`; None otherwise (the shift itself is the advice).
pub fn shifted_text(text: &str, shift: TimeDelta) -> Option<String> {
    let t = text.trim();
    let fields: Vec<String> = match t {
        "@daily" | "@midnight" => vec!["0".into(), "0".into(), "*".into(), "*".into(), "*".into()],
        "@hourly" => vec!["0".into(), "*".into(), "*".into(), "*".into(), "*".into()],
        _ if t.starts_with('@') => return None,
        _ => t.split_whitespace().map(str::to_owned).collect(),
    };
    if fields.len() != 5 || fields[2..].iter().any(|f| f != "*") {
        return None;
    }
    let minute: i64 = fields[0].parse().ok()?;
    let shift_min = shift.num_minutes();
    if fields[1] == "*" {
        if shift_min.abs() >= 60 {
            return None;
        }
        return Some(format!("{} * * * *", (minute + shift_min).rem_euclid(60)));
    }
    let hour: i64 = fields[1].parse().ok()?;
    let total = (hour * 60 + minute + shift_min).rem_euclid(24 * 60);
    Some(format!("{} {} * * *", total % 60, total / 60))
}

/// How much of each pool schedules may reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlicePolicy {
    /// Slice length (R7.1).
    pub slice: TimeDelta,
    /// Days planned ahead.
    pub horizon_days: i64,
    /// Percent of a pool's cpu that reservations may take (the rest stays
    /// for ad-hoc runs).
    pub reservable_pct: i64,
    /// Percent of the reservable room one tenant may hold in the shared and
    /// draft pools (in the dedicated pool: its own units).
    pub tenant_pct: i64,
    /// Cpu of one Spark Unit, millicores (a dedicated tenant's cap is its units × this).
    pub unit_cpu: i64,
}

impl Default for SlicePolicy {
    fn default() -> Self {
        Self {
            slice: DEFAULT_SLICE,
            horizon_days: DEFAULT_HORIZON_DAYS,
            reservable_pct: 80,
            tenant_pct: 25,
            unit_cpu: 4000,
        }
    }
}

impl SlicePolicy {
    /// The limits in `pool` of `pool_cpu` millicores for a tenant holding `units` dedicated units.
    pub fn limits(&self, pool: Pool, pool_cpu: i64, units: i64) -> Limits {
        let reservable = pool_cpu.max(0) * self.reservable_pct.clamp(0, 100) / 100;
        let tenant = match pool {
            Pool::Dedicated => (units.max(0) * self.unit_cpu).min(reservable),
            Pool::Shared | Pool::Draft => reservable * self.tenant_pct.clamp(0, 100) / 100,
        };
        Limits {
            pool: reservable,
            tenant,
        }
    }
}

/// A schedule as stored: whose, which job, which pool, from where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSchedule {
    /// Owner.
    pub tenant: TenantId,
    /// Job name (one schedule per job).
    pub job: String,
    /// Pool its runs go to.
    pub pool: Pool,
    /// When, how long, how big.
    pub spec: JobSchedule,
    /// Who asked: `api` or `scheduledsparkapplication/<namespace>/<name>`.
    pub source: String,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// What became of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Decision {
    /// Reserved; the least room left in any slice it uses.
    Accepted {
        /// Millicores.
        headroom: i64,
    },
    /// Not reserved: where it first does not fit, and what would.
    Refused {
        /// The first full slice.
        shortfall: Shortfall,
        /// Nearest shifts that fit.
        alternatives: Vec<Alternative>,
    },
}

/// What `schedules` reserve in `pool` over `h`: in all, and of them `tenant`'s.
pub fn reserved(h: &Horizon, pool: Pool, tenant: &TenantId, schedules: &[StoredSchedule]) -> (Demand, Demand) {
    let mut all = Demand::zero(h);
    let mut own = Demand::zero(h);
    for s in schedules.iter().filter(|s| s.pool == pool) {
        // A stored schedule that no longer parses cannot hold room.
        let Ok(p) = s.spec.plan() else { continue };
        let d = p.demand(h, TimeDelta::zero());
        all.add(&d);
        if &s.tenant == tenant {
            own.add(&d);
        }
    }
    (all, own)
}

/// How a driver starting now stands against its pool's reservations (R7
/// at run time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunWindow {
    /// A run of its job's schedule, within its window (from one slice before
    /// the planned start to the end of the reserved run): it uses its own
    /// reservation.
    Reserved {
        /// The planned start.
        run_start: DateTime<Utc>,
    },
    /// Not reserved; the current slice has this much unreserved room, enough.
    Room {
        /// Millicores.
        free: i64,
    },
    /// Not reserved, and the current slice's unreserved room is too small.
    Full {
        /// Millicores free now.
        free: i64,
        /// End of the current slice.
        slice_end: DateTime<Utc>,
        /// Start of the first slice within a day with room, if any.
        next_fit: Option<DateTime<Utc>>,
    },
}

/// Schedules parsed once, with each one's demand over the two days from
/// the slice they were prepared in. Admission asks for room on every driver
/// review; expanding every schedule's runs there would make one tenant's
/// many minute-by-minute schedules slow every other tenant's drivers. The
/// webhook prepares these on each ledger reload, off the admission path.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// `planned[i]` is `schedules[i]` parsed, None when it does not parse
    /// (a schedule that no longer parses holds no room).
    planned: Vec<Option<Planned>>,
    /// The grid the demands were expanded over, and `demands[i]` for
    /// `planned[i]`.
    cached: Option<(Horizon, Vec<Option<Demand>>)>,
}

impl Prepared {
    /// Parses `schedules` and expands them over the two days from `now`'s
    /// slice of length `slice`.
    pub fn new(schedules: &[StoredSchedule], now: DateTime<Utc>, slice: TimeDelta) -> Self {
        let planned: Vec<Option<Planned>> = schedules.iter().map(|s| s.spec.plan().ok()).collect();
        let cached = Horizon::new(now, slice, 2).ok().map(|h| {
            let demands = planned
                .iter()
                .map(|p| p.as_ref().map(|p| p.demand(&h, TimeDelta::zero())))
                .collect();
            (h, demands)
        });
        Self { planned, cached }
    }

    /// Schedule `i` parsed.
    pub fn planned(&self, i: usize) -> Option<&Planned> {
        self.planned.get(i)?.as_ref()
    }

    /// Schedule `i`'s demand over `h`: a window of the cached expansion when
    /// `h` lies on its grid and within it, else expanded now.
    pub fn demand(&self, i: usize, h: &Horizon) -> Option<Demand> {
        let p = self.planned(i)?;
        if let Some((c, demands)) = &self.cached
            && c.slice == h.slice
            && let Some(Some(d)) = demands.get(i)
        {
            let offset = (h.start - c.start).num_seconds();
            let len = c.slice.num_seconds();
            if offset >= 0 && offset % len == 0 {
                let from = (offset / len) as usize;
                if from + h.slices <= c.slices {
                    return Some(Demand(d.0[from..from + h.slices].to_vec()));
                }
            }
        }
        Some(p.demand(h, TimeDelta::zero()))
    }
}

/// What a driver of `tenant`'s `job` (`cores` for its gang) may do now in
/// `pool` of `pool_cpu` millicores, given the schedules reserved in it
/// (`prepared` holds `schedules` parsed and expanded).
/// `tenant_cpu` caps the room for pools that are the tenant's own (its
/// dedicated units). Room is what no reservation holds: reserved runs keep
/// their slices even when they are not running yet.
#[allow(clippy::too_many_arguments)]
pub fn run_window(
    now: DateTime<Utc>,
    slice: TimeDelta,
    pool: Pool,
    pool_cpu: i64,
    tenant: &TenantId,
    tenant_cpu: Option<i64>,
    job: Option<&str>,
    cores: i64,
    schedules: &[StoredSchedule],
    prepared: &Prepared,
) -> RunWindow {
    let Ok(day) = Horizon::new(now, slice, 1) else {
        return RunWindow::Room { free: pool_cpu };
    };
    let current = Horizon { slices: 1, ..day };
    let in_pool = || {
        schedules
            .iter()
            .enumerate()
            .filter(move |(_, s)| s.pool == pool)
            .filter(|(i, _)| prepared.planned(*i).is_some())
    };
    if let Some(job) = job {
        for (i, s) in in_pool().filter(|(_, s)| &s.tenant == tenant && s.job == job) {
            let Some(p) = prepared.planned(i) else { continue };
            let window = Horizon {
                start: day.start - slice,
                slices: 2,
                ..day
            };
            for t in p.runs(&window, TimeDelta::zero()) {
                if now >= t - slice && now < t + s.spec.duration {
                    return RunWindow::Reserved { run_start: t };
                }
            }
        }
    }
    let room = |h: &Horizon| -> Vec<i64> {
        let (mut all, mut own) = (Demand::zero(h), Demand::zero(h));
        for (i, s) in in_pool() {
            let Some(d) = prepared.demand(i, h) else { continue };
            all.add(&d);
            if &s.tenant == tenant {
                own.add(&d);
            }
        }
        (0..h.slices)
            .map(|i| {
                let free = pool_cpu.saturating_sub(all.0[i]);
                tenant_cpu.map_or(free, |cap| free.min(cap.saturating_sub(own.0[i])))
            })
            .collect()
    };
    let free = room(&current)[0];
    if cores <= free {
        return RunWindow::Room { free };
    }
    let next_fit = room(&day)
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, f)| **f >= cores)
        .map(|(i, _)| day.slice_start(i));
    RunWindow::Full {
        free: free.max(0),
        slice_end: day.slice_start(1),
        next_fit,
    }
}

/// Decides `new` against the pool's other schedules (`others`, the one it
/// replaces left out). Pure: the store holds the pool's lock around it.
pub fn decide(
    h: &Horizon,
    new: &StoredSchedule,
    others: &[StoredSchedule],
    limits: Limits,
) -> Result<Decision, SliceError> {
    let planned = new.spec.plan()?;
    let (pool, tenant) = reserved(h, new.pool, &new.tenant, others);
    let d = planned.demand(h, TimeDelta::zero());
    Ok(match fits(h, &d, &pool, &tenant, limits) {
        Ok(headroom) => Decision::Accepted { headroom },
        Err(shortfall) => Decision::Refused {
            shortfall,
            alternatives: alternatives(h, &new.spec, &planned, &pool, &tenant, limits, MAX_ALTERNATIVES),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap()
    }

    fn job(s: &str, minutes: i64, cores: i64) -> JobSchedule {
        JobSchedule {
            schedule: s.into(),
            offset: Offset(0),
            duration: TimeDelta::minutes(minutes),
            cores,
        }
    }

    #[test]
    fn slices_divide_the_day() {
        let h = Horizon::new(t(23, 10, 7), DEFAULT_SLICE, 30).unwrap();
        assert_eq!((h.start, h.per_day(), h.slices), (t(23, 10, 0), 96, 2880));
        for bad in [7, 59, 7 * 60, 86_401] {
            assert!(Horizon::new(t(23, 0, 0), TimeDelta::seconds(bad), 1).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_run_needs_the_slices_it_touches() {
        let h = Horizon::new(t(23, 0, 0), DEFAULT_SLICE, 1).unwrap();
        // Aligned: ceil(40 / 15) = 3 slices.
        assert_eq!(h.covering(t(23, 1, 0), TimeDelta::minutes(40)), Some((4, 6)));
        assert_eq!(h.covering(t(23, 1, 0), TimeDelta::minutes(45)), Some((4, 6)));
        // Mid-slice: all four it touches.
        assert_eq!(h.covering(t(23, 1, 10), TimeDelta::minutes(45)), Some((4, 7)));
        // Before and after the horizon.
        assert_eq!(h.covering(t(22, 23, 50), TimeDelta::minutes(20)), Some((0, 0)));
        assert_eq!(h.covering(t(22, 23, 0), TimeDelta::minutes(20)), None);
        assert_eq!(h.covering(t(24, 0, 0), TimeDelta::minutes(20)), None);
    }

    #[test]
    fn demand_counts_cores_per_slice() {
        let h = Horizon::new(t(23, 0, 0), DEFAULT_SLICE, 1).unwrap();
        let p = job("0 2 * * *", 40, 8000).plan().unwrap();
        let d = p.demand(&h, TimeDelta::zero());
        assert_eq!(d.0.iter().filter(|c| **c == 8000).count(), 3);
        assert_eq!(d.0[8..11], [8000, 8000, 8000]);
        assert_eq!(d.0.iter().sum::<i64>(), 3 * 8000);
        // The same at +02:00 runs at 00:00 UTC.
        let mut j = job("0 2 * * *", 40, 8000);
        j.offset = "+02:00".parse().unwrap();
        assert_eq!(
            j.plan().unwrap().demand(&h, TimeDelta::zero()).0[0..3],
            [8000, 8000, 8000]
        );
    }

    #[test]
    fn refusals_come_with_alternatives_that_fit() {
        let h = Horizon::new(t(23, 0, 0), DEFAULT_SLICE, 2).unwrap();
        let limits = Limits {
            pool: 16_000,
            tenant: 12_000,
        };
        let other = job("0 2 * * *", 60, 12_000)
            .plan()
            .unwrap()
            .demand(&h, TimeDelta::zero());
        let j = job("30 2 * * *", 30, 8000);
        let p = j.plan().unwrap();
        let d = p.demand(&h, TimeDelta::zero());
        let no = fits(&h, &d, &other, &Demand::zero(&h), limits).unwrap_err();
        assert_eq!(
            (no.at, no.needed, no.free, no.limit),
            (t(23, 2, 30), 8000, 4000, "pool")
        );
        let alts = alternatives(&h, &j, &p, &other, &Demand::zero(&h), limits, 4);
        let shifts: Vec<i64> = alts.iter().map(|a| a.shift.num_minutes()).collect();
        assert_eq!(shifts, [30, 45, 60, -60], "nearest first; 02:00-03:00 is full");
        assert_eq!(alts[0].schedule.as_deref(), Some("0 3 * * *"));
        assert_eq!(alts[0].headroom, 4000, "the tenant cap (12 cores) is the tighter limit");
        assert_eq!(alts[3].schedule.as_deref(), Some("30 1 * * *"));
        // The tenant cap binds before the pool does.
        let mine = job("0 3 * * *", 60, 6000).plan().unwrap().demand(&h, TimeDelta::zero());
        let d = job("0 3 * * *", 15, 8000).plan().unwrap().demand(&h, TimeDelta::zero());
        assert_eq!(fits(&h, &d, &mine, &mine, limits).unwrap_err().limit, "tenant cap");
    }

    #[test]
    fn prepared_demand_is_the_expansion_wherever_it_is_read() {
        let at = t(23, 10, 7);
        let stored = |text: &str, minutes: i64| StoredSchedule {
            tenant: TenantId::new("acme").unwrap(),
            job: text.into(),
            pool: Pool::Shared,
            spec: job(text, minutes, 3000),
            source: "api".into(),
            updated_at: at,
        };
        let schedules = [
            stored("*/15 * * * *", 50),
            stored("@every 7m", 1440),
            stored("0 2 * * 1-5", 90),
        ];
        let mut bad = stored("0 2 * * *", 10);
        bad.spec.cores = 0;
        let schedules: Vec<_> = schedules.into_iter().chain([bad]).collect();
        let prepared = Prepared::new(&schedules, at, DEFAULT_SLICE);
        // Within the cached two days, past them, and before them.
        for start in [
            at,
            at + TimeDelta::hours(20),
            at + TimeDelta::days(2),
            at - TimeDelta::hours(1),
        ] {
            for slices in [1, 96] {
                let h = Horizon {
                    slices,
                    ..Horizon::new(start, DEFAULT_SLICE, 1).unwrap()
                };
                for (i, s) in schedules.iter().enumerate() {
                    let direct = s.spec.plan().ok().map(|p| p.demand(&h, TimeDelta::zero()));
                    assert_eq!(prepared.demand(i, &h), direct, "{} at {start}", s.spec.schedule);
                }
            }
        }
        assert!(
            prepared.planned(3).is_none(),
            "a schedule that does not plan holds no room"
        );
    }

    #[test]
    fn tenant_numbers_are_bounded() {
        for cores in [0, -1, MAX_SCHEDULE_CORES + 1, i64::MAX] {
            let e = job("0 2 * * *", 60, cores).plan().unwrap_err().to_string();
            assert!(e.contains("at most 100000000m"), "{cores}: {e}");
        }
        assert!(job("0 2 * * *", 60, MAX_SCHEDULE_CORES).plan().is_ok());
        // The busiest schedule there can be, at the most cores: no overflow.
        let h = Horizon::new(t(23, 0, 0), DEFAULT_SLICE, 30).unwrap();
        let d = job("* * * * *", 24 * 60, MAX_SCHEDULE_CORES)
            .plan()
            .unwrap()
            .demand(&h, TimeDelta::zero());
        // A slice is touched by the runs that started in the day before it
        // and by the 14 more that start within it.
        assert_eq!(
            d.peak(),
            1454 * MAX_SCHEDULE_CORES,
            "runs of a day, one a minute, overlap"
        );
        let full = Limits {
            pool: i64::MAX,
            tenant: i64::MAX,
        };
        assert!(fits(&h, &d, &d, &d, full).is_ok());
    }

    #[test]
    fn shifted_cron_text() {
        assert_eq!(
            shifted_text("15 * * * *", TimeDelta::minutes(50)).as_deref(),
            Some("5 * * * *")
        );
        assert_eq!(shifted_text("15 * * * *", TimeDelta::minutes(60)), None);
        assert_eq!(
            shifted_text("@daily", TimeDelta::minutes(-15)).as_deref(),
            Some("45 23 * * *")
        );
        assert_eq!(shifted_text("0 2 * * 1-5", TimeDelta::minutes(15)), None);
        assert_eq!(shifted_text("@every 2h", TimeDelta::minutes(15)), None);
    }

    #[test]
    fn offsets_parse_strictly() {
        assert_eq!("UTC".parse::<Offset>().unwrap(), Offset(0));
        assert_eq!("-05:30".parse::<Offset>().unwrap(), Offset(-330));
        for bad in ["Europe/Paris", "+5", "+15:00", "+02:60", "2:00"] {
            let e = bad.parse::<Offset>().unwrap_err().to_string();
            assert!(e.contains("fixed offset"), "{bad}: {e}");
        }
    }
}
