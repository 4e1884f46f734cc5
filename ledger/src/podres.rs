//! A pod's requests as Kubernetes reserves them: the one rule admission,
//! placement and metering all apply, so that what a tenant is refused for,
//! placed by and charged for can never disagree.
//!
//! Kubernetes (KEP-753, `resource.PodRequests`) reserves
//! `max(app containers + sidecars, peak of each init container plus the
//! sidecars started before it) + pod overhead`, where a sidecar is an init
//! container with `restartPolicy: Always`. A container's request is its
//! `requests` entry when present (even `"0"`), else its limit: the API
//! server defaults a missing request to the limit, never a zero one.

use crate::quantity::{parse_cpu, parse_memory};
use crate::units::{Bytes, Millicores};

/// The most executors one Spark application may declare (annotation,
/// `spark.properties` or SparkApplication): every count read from tenant
/// input is bounded here, once, so no sum over it can overflow.
pub const MAX_EXECUTORS: i64 = 100_000;

/// Where a container sits in the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    /// `spec.containers`.
    App,
    /// `spec.initContainers` that runs to completion before the next.
    Init,
    /// `spec.initContainers` with `restartPolicy: Always`: runs beside the app.
    Sidecar,
}

/// One container's quantities, as text from the pod (request, else limit).
#[derive(Debug, Clone, Copy)]
pub struct ContainerQuantities<'a> {
    /// Container name, for messages.
    pub name: &'a str,
    /// Where it sits.
    pub kind: ContainerKind,
    /// cpu request (or limit when no request), as written.
    pub cpu: Option<&'a str>,
    /// memory request (or limit when no request), as written.
    pub memory: Option<&'a str>,
}

/// What a pod reserves, and what is wrong with how it says so.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodResources {
    /// Effective cpu reservation.
    pub cpu: Millicores,
    /// Effective memory reservation.
    pub memory: Bytes,
    /// App containers and sidecars that reserve no cpu (none asked, or 0):
    /// they would run on cpu nobody pays for.
    pub missing_cpu: Vec<String>,
    /// Containers whose quantities do not parse: (container, error).
    pub invalid: Vec<(String, String)>,
}

/// Computes [`PodResources`]; init containers in declared order, then app
/// containers (their order does not matter). Sums saturate: a pod beyond
/// `i64` is refused by the callers' bounds, never wrapped.
pub fn pod_resources<'a>(
    containers: impl IntoIterator<Item = ContainerQuantities<'a>>,
    overhead_cpu: Option<&str>,
    overhead_memory: Option<&str>,
) -> PodResources {
    let mut out = PodResources::default();
    let (mut app, mut sidecars, mut init_peak) = ((0i64, 0i64), (0i64, 0i64), (0i64, 0i64));
    let read = |c: &ContainerQuantities<'_>, out: &mut PodResources| -> (i64, i64) {
        let cpu = match c.cpu.map(parse_cpu) {
            None => 0,
            Some(Ok(m)) => m.0.max(0),
            Some(Err(e)) => {
                out.invalid.push((c.name.to_owned(), e.to_string()));
                0
            }
        };
        let memory = match c.memory.map(parse_memory) {
            None => 0,
            Some(Ok(b)) => b.0.max(0),
            Some(Err(e)) => {
                out.invalid.push((c.name.to_owned(), e.to_string()));
                0
            }
        };
        if cpu == 0 && c.kind != ContainerKind::Init && !out.invalid.iter().any(|(n, _)| n == c.name) {
            out.missing_cpu.push(c.name.to_owned());
        }
        (cpu, memory)
    };
    let add = |a: (i64, i64), b: (i64, i64)| (a.0.saturating_add(b.0), a.1.saturating_add(b.1));
    let max = |a: (i64, i64), b: (i64, i64)| (a.0.max(b.0), a.1.max(b.1));
    let mut any_app = false;
    for c in containers {
        let q = read(&c, &mut out);
        match c.kind {
            ContainerKind::App => {
                any_app = true;
                app = add(app, q);
            }
            ContainerKind::Sidecar => {
                sidecars = add(sidecars, q);
                init_peak = max(init_peak, sidecars);
            }
            ContainerKind::Init => init_peak = max(init_peak, add(sidecars, q)),
        }
    }
    if !any_app {
        out.missing_cpu.push("(no containers)".into());
    }
    let overhead = (
        overhead_cpu.and_then(|t| parse_cpu(t).ok()).map_or(0, |m| m.0.max(0)),
        overhead_memory
            .and_then(|t| parse_memory(t).ok())
            .map_or(0, |b| b.0.max(0)),
    );
    let total = add(max(add(app, sidecars), init_peak), overhead);
    out.cpu = Millicores(total.0);
    out.memory = Bytes(total.1);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContainerKind::*;

    fn c(name: &'static str, kind: ContainerKind, cpu: Option<&'static str>) -> ContainerQuantities<'static> {
        ContainerQuantities {
            name,
            kind,
            cpu,
            memory: None,
        }
    }

    #[test]
    fn sidecars_add_to_the_app_and_init_containers_peak() {
        // The attack: main 2 + sidecar 6 is 8 reserved, not 6.
        let r = pod_resources([c("side", Sidecar, Some("6")), c("main", App, Some("2"))], None, None);
        assert_eq!(r.cpu, Millicores(8000));
        assert!(r.missing_cpu.is_empty());
        // An init container after a sidecar runs beside it.
        let r = pod_resources(
            [
                c("side", Sidecar, Some("1")),
                c("setup", Init, Some("4")),
                c("main", App, Some("2")),
            ],
            Some("250m"),
            None,
        );
        assert_eq!(r.cpu, Millicores(5250));
        // One before it does not.
        let r = pod_resources(
            [
                c("setup", Init, Some("4")),
                c("side", Sidecar, Some("1")),
                c("main", App, Some("2")),
            ],
            None,
            None,
        );
        assert_eq!(r.cpu, Millicores(4000));
    }

    #[test]
    fn zero_and_absent_cpu_are_missing_but_init_containers_may_omit_it() {
        let r = pod_resources(
            [
                c("side", Sidecar, None),
                c("setup", Init, None),
                c("main", App, Some("0")),
            ],
            None,
            None,
        );
        assert_eq!(r.missing_cpu, vec!["side".to_string(), "main".to_string()]);
        assert_eq!(r.cpu, Millicores(0));
        let r = pod_resources(
            [c("main", App, Some("1e3")), c("tiny", App, Some("0.0001"))],
            None,
            None,
        );
        assert_eq!(r.cpu, Millicores(1_000_001));
        assert!(r.missing_cpu.is_empty());
        let r = pod_resources([c("main", App, Some("lots"))], None, None);
        assert_eq!(r.invalid.len(), 1);
        assert!(r.missing_cpu.is_empty());
        assert_eq!(
            pod_resources([], None, None).missing_cpu,
            vec!["(no containers)".to_string()]
        );
    }

    #[test]
    fn huge_quantities_saturate_instead_of_wrapping() {
        let r = pod_resources(
            [c("a", App, Some("9e15")), c("b", App, Some("9e15"))],
            Some("9e15"),
            None,
        );
        assert_eq!(r.cpu, Millicores(i64::MAX));
    }
}
