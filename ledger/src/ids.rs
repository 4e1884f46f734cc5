//! Identifiers that end up in Kubernetes label values and object names, so
//! they are validated to the same rules at the edge.

use crate::error::LedgerError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A tenant's id: a DNS label (it is written into `sparkcap.io/tenant=<id>`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    /// Validates `value` as an RFC 1123 label of at most 63 characters.
    pub fn new(value: impl Into<String>) -> Result<Self, LedgerError> {
        let value = value.into();
        match dns_label_problem(&value) {
            None => Ok(Self(value)),
            Some(reason) => Err(LedgerError::InvalidTenantId { value, reason }),
        }
    }

    /// The id as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = LedgerError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> Self {
        id.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Validates a Kubernetes namespace name (an RFC 1123 label).
pub fn validate_namespace(value: &str) -> Result<(), LedgerError> {
    match dns_label_problem(value) {
        None => Ok(()),
        Some(reason) => Err(LedgerError::InvalidNamespace {
            value: value.to_owned(),
            reason,
        }),
    }
}

/// Why `value` is not an RFC 1123 label, or `None` when it is one.
fn dns_label_problem(value: &str) -> Option<&'static str> {
    if value.is_empty() {
        return Some("it is empty");
    }
    if value.len() > 63 {
        return Some("it is longer than 63 characters");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some("only lowercase letters, digits and '-' are allowed");
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Some("it must start and end with a letter or digit");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_follow_dns_label_rules() {
        assert!(TenantId::new("acme-2").is_ok());
        for bad in ["", "Acme", "-acme", "acme-", "a_b", &"a".repeat(64)] {
            let err = TenantId::new(bad).unwrap_err().to_string();
            assert!(err.contains("tenant id"), "{err}");
        }
        assert!(validate_namespace("tenant-acme").is_ok());
        assert!(validate_namespace("Tenant").is_err());
    }
}
