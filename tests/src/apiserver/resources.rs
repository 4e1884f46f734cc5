//! The resources the test control plane serves, as kube-apiserver describes them.

/// One served resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceDef {
    /// API group ("" for core).
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Plural, as in the URL.
    pub plural: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Subresources served (`status`, `binding`, `eviction`, `token`).
    pub subresources: &'static [&'static str],
    /// Short names for kubectl.
    pub short_names: &'static [&'static str],
}

impl ResourceDef {
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `leases.coordination.k8s.io`, as kube-apiserver names a resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Whether it has a status subresource (then the main resource ignores status writes).
    pub fn has_status(&self) -> bool {
        self.subresources.contains(&"status")
    }
}

const fn def(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    subresources: &'static [&'static str],
    short_names: &'static [&'static str],
) -> ResourceDef {
    ResourceDef {
        group,
        version,
        plural,
        kind,
        namespaced,
        subresources,
        short_names,
    }
}

/// Everything served.
pub const RESOURCES: &[ResourceDef] = &[
    def(
        "",
        "v1",
        "pods",
        "Pod",
        true,
        &["status", "binding", "eviction"],
        &["po"],
    ),
    def("", "v1", "nodes", "Node", false, &["status"], &["no"]),
    def("", "v1", "namespaces", "Namespace", false, &["status"], &["ns"]),
    def("", "v1", "configmaps", "ConfigMap", true, &[], &["cm"]),
    def("", "v1", "services", "Service", true, &["status"], &["svc"]),
    def("", "v1", "events", "Event", true, &[], &["ev"]),
    def(
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        true,
        &["status"],
        &["pvc"],
    ),
    def("", "v1", "secrets", "Secret", true, &[], &[]),
    def("", "v1", "serviceaccounts", "ServiceAccount", true, &["token"], &["sa"]),
    def(
        "",
        "v1",
        "resourcequotas",
        "ResourceQuota",
        true,
        &["status"],
        &["quota"],
    ),
    def("coordination.k8s.io", "v1", "leases", "Lease", true, &[], &[]),
    def(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        true,
        &["status"],
        &["deploy"],
    ),
    def(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        false,
        &[],
        &[],
    ),
    def(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
        &[],
        &[],
    ),
    def("rbac.authorization.k8s.io", "v1", "roles", "Role", true, &[], &[]),
    def(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        true,
        &[],
        &[],
    ),
    // What metrics-server serves; tests write the samples themselves.
    def("metrics.k8s.io", "v1beta1", "pods", "PodMetrics", true, &[], &[]),
    def(
        "authentication.k8s.io",
        "v1",
        "tokenreviews",
        "TokenReview",
        false,
        &[],
        &[],
    ),
    def("events.k8s.io", "v1", "events", "Event", true, &[], &["ev"]),
    def(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
        &["status"],
        &["pdb"],
    ),
    def(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        true,
        &[],
        &["netpol"],
    ),
    def(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        false,
        &[],
        &[],
    ),
    def(
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        false,
        &[],
        &[],
    ),
    def(
        "sparkoperator.k8s.io",
        "v1beta2",
        "sparkapplications",
        "SparkApplication",
        true,
        &["status"],
        &["sparkapp"],
    ),
    def(
        "sparkoperator.k8s.io",
        "v1beta2",
        "scheduledsparkapplications",
        "ScheduledSparkApplication",
        true,
        &["status"],
        &["scheduledsparkapp"],
    ),
];

/// The resource served at `group/version/plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The groups served, in discovery order (core excluded).
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}
