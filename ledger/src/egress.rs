//! Where a tenant's notification URL may send (issue 19 item 11). The URL
//! is the tenant's text, and the scheduler POSTs to it from inside the
//! cluster: unchecked, it reaches the scheduler's own loopback, the cloud's
//! metadata service (169.254.169.254) and every Service of the cluster.
//!
//! The rule: `https://` only; no host that is, or resolves to, a loopback,
//! private, link-local, shared (CGNAT), multicast or unspecified address;
//! no cluster-internal name (`localhost`, `*.svc`, `*.cluster.local`, a
//! single label). The address check runs when the URL is set (for literal
//! addresses and names) and again on every send, on the addresses DNS
//! gives then, which are the only ones connected to. An admin may
//! allow-list hosts (an internal receiver): those may use `http://` and
//! any address. Pure: the scheduler's resolver and the REST API call it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use thiserror::Error;

/// Why a notification URL may not be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EgressError {
    /// Not a URL.
    #[error("notification URL {0:?} is not an absolute URL")]
    NotAUrl(String),
    /// `http://` (or another scheme) for a host not allow-listed.
    #[error(
        "notification URL {0:?} must use https:// (plain http is allowed only for hosts a cluster admin allow-listed)"
    )]
    NotHttps(String),
    /// A name that only means something inside the cluster or the node.
    #[error(
        "notification URL host {0:?} is internal to the cluster; use a public host name, or ask a cluster admin to allow-list it"
    )]
    InternalName(String),
    /// An address that is not public.
    #[error(
        "notification URL host {host:?} is, or resolves to, {ip}, a {kind} address; notices are sent only to public addresses unless a cluster admin allow-lists the host"
    )]
    InternalAddress {
        /// The host as written.
        host: String,
        /// The address.
        ip: IpAddr,
        /// Loopback, private, link-local …
        kind: &'static str,
    },
}

/// The admin's allow-list of hosts (names or literal addresses, compared
/// without case).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    allowed: Vec<String>,
}

impl EgressPolicy {
    /// Allows `hosts` (e.g. `hooks.internal.example`, `10.0.4.7`).
    pub fn allowing<I: IntoIterator<Item = S>, S: AsRef<str>>(hosts: I) -> Self {
        Self {
            allowed: hosts
                .into_iter()
                .map(|h| normalize(h.as_ref()))
                .filter(|h| !h.is_empty())
                .collect(),
        }
    }

    /// Whether an admin allow-listed `host`.
    pub fn is_allowed(&self, host: &str) -> bool {
        let host = normalize(host);
        self.allowed.contains(&host)
    }

    /// Checks `text` as far as it can be checked without DNS; returns the
    /// parsed URL.
    pub fn check_url(&self, text: &str) -> Result<url::Url, EgressError> {
        let url = url::Url::parse(text).map_err(|_| EgressError::NotAUrl(clip(text)))?;
        let host = match url.host() {
            Some(h) => h,
            None => return Err(EgressError::NotAUrl(clip(text))),
        };
        let name = match &host {
            url::Host::Domain(d) => (*d).to_owned(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        let allowed = self.is_allowed(&name);
        match url.scheme() {
            "https" => {}
            "http" if allowed => {}
            _ => return Err(EgressError::NotHttps(clip(text))),
        }
        if allowed {
            return Ok(url);
        }
        match host {
            url::Host::Ipv4(ip) => self.check_ip(&name, IpAddr::V4(ip))?,
            url::Host::Ipv6(ip) => self.check_ip(&name, IpAddr::V6(ip))?,
            url::Host::Domain(d) => {
                let d = normalize(d);
                let internal = d == "localhost"
                    || d.ends_with(".localhost")
                    || d.ends_with(".svc")
                    || d.ends_with(".cluster.local")
                    || d.ends_with(".internal")
                    || d.ends_with(".local")
                    || !d.contains('.');
                if internal {
                    return Err(EgressError::InternalName(d));
                }
            }
        }
        Ok(url)
    }

    /// Checks one address `host` resolved to.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), EgressError> {
        if self.is_allowed(host) {
            return Ok(());
        }
        match internal_kind(ip) {
            None => Ok(()),
            Some(kind) => Err(EgressError::InternalAddress {
                host: host.to_owned(),
                ip,
                kind,
            }),
        }
    }
}

fn normalize(host: &str) -> String {
    host.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

fn clip(text: &str) -> String {
    text.chars().take(200).collect()
}

/// What kind of non-public address `ip` is, or None when it is public.
pub fn internal_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4_kind(v4),
            None => v6_kind(v6),
        },
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_private() {
        "private"
    } else if ip.is_link_local() {
        "link-local"
    } else if ip.is_unspecified() || a == 0 {
        "unspecified"
    } else if a == 100 && (64..128).contains(&b) {
        "shared (carrier-grade NAT)"
    } else if ip.is_broadcast() || ip.is_multicast() || a >= 240 {
        "multicast or reserved"
    } else if ip.is_documentation() || (a == 198 && (18..20).contains(&b)) || (a == 192 && b == 0) {
        "reserved"
    } else {
        return None;
    })
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if first & 0xfe00 == 0xfc00 {
        "private (unique local)"
    } else if first & 0xffc0 == 0xfe80 {
        "link-local"
    } else if ip.is_multicast() {
        "multicast or reserved"
    } else if first == 0x0064 && ip.segments()[1] == 0xff9b {
        // NAT64 of an address that may be internal.
        return ip.to_ipv4().and_then(v4_kind);
    } else if first == 0x2001 && ip.segments()[1] == 0x0db8 {
        "reserved"
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_https_unless_allow_listed() {
        let p = EgressPolicy::allowing(["hooks.corp.example", "10.0.4.7"]);
        assert!(p.check_url("https://hooks.example.com/sparkcap?k=1").is_ok());
        assert!(p.check_url("https://93.184.215.14:8443/x").is_ok());
        for (bad, says) in [
            ("http://hooks.example.com/x", "must use https://"),
            ("ftp://hooks.example.com/x", "must use https://"),
            ("https://127.0.0.1:9000/hook", "loopback"),
            ("https://[::1]/hook", "loopback"),
            ("https://[::ffff:127.0.0.1]/hook", "loopback"),
            ("https://169.254.169.254/latest/meta-data", "link-local"),
            ("https://10.96.0.1/", "private"),
            ("https://192.168.1.1/", "private"),
            ("https://100.64.0.1/", "shared"),
            ("https://0.0.0.0/", "unspecified"),
            ("https://[fd00::1]/", "unique local"),
            ("https://[fe80::1]/", "link-local"),
            ("https://localhost/", "internal to the cluster"),
            ("https://sparkcap-webhook.sparkcap.svc/", "internal to the cluster"),
            (
                "https://kubernetes.default.svc.cluster.local/",
                "internal to the cluster",
            ),
            ("https://metadata/", "internal to the cluster"),
            ("https://2130706433/", "loopback"), // the decimal form of 127.0.0.1
            ("not a url", "not an absolute URL"),
        ] {
            let e = p.check_url(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        // Allow-listed: http and internal addresses are the admin's choice.
        assert!(p.check_url("http://hooks.corp.example/x").is_ok());
        assert!(p.check_url("http://10.0.4.7:8080/x").is_ok());
        assert!(p.check_ip("HOOKS.corp.example.", "10.1.2.3".parse().unwrap()).is_ok());
        assert!(p.check_ip("evil.example", "10.1.2.3".parse().unwrap()).is_err());
        assert!(p.check_ip("evil.example", "8.8.8.8".parse().unwrap()).is_ok());
    }
}
