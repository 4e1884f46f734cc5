//! ServiceAccount tokens as kube-apiserver issues and reviews them: the
//! TokenRequest subresource (`kubectl create token`) mints an ES256 JWT bound
//! to the ServiceAccount's uid and the requested audiences; TokenReview
//! verifies signature, expiry, audience and that the ServiceAccount still
//! exists with that uid (bound-token semantics).

use super::resources::find;
use super::status::ApiError;
use super::store::Store;
use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

/// The static token of the devcluster kubeconfig's user: a cluster admin.
pub const ADMIN_TOKEN: &str = "devcluster";

/// The issuer (and default audience) of the test control plane's tokens.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Signs and checks ServiceAccount tokens.
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Default for TokenIssuer {
    fn default() -> Self {
        Self::new()
    }
}

impl TokenIssuer {
    /// A fresh P-256 signing key.
    pub fn new() -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
        Self {
            encoding: EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).expect("PKCS#8 PEM"),
            decoding: DecodingKey::from_ec_pem(key.public_key_pem().as_bytes()).expect("SPKI PEM"),
            kid: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// A token for `namespace/name` (uid `uid`), valid from `iat` to `exp`.
    /// Tests use it directly for tokens the API would not mint (expired ones).
    pub fn mint(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        audiences: &[String],
        iat: DateTime<Utc>,
        exp: DateTime<Utc>,
    ) -> String {
        let claims = json!({
            "aud": audiences, "exp": exp.timestamp(), "iat": iat.timestamp(), "nbf": iat.timestamp(),
            "iss": ISSUER, "jti": uuid::Uuid::new_v4().to_string(),
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}},
        });
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding).expect("signing")
    }

    /// `POST .../serviceaccounts/{name}/token`.
    pub fn token_request(&self, store: &Store, ns: &str, name: &str, body: &Value) -> Result<Value, ApiError> {
        let sa_def = find("", "v1", "serviceaccounts").expect("served");
        let sa = store.get(sa_def, ns, name)?;
        let uid = sa.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
        let spec = body.get("spec").cloned().unwrap_or(json!({}));
        let seconds = spec.get("expirationSeconds").and_then(Value::as_i64).unwrap_or(3600);
        if seconds < 600 {
            return Err(ApiError::invalid(
                "TokenRequest",
                name,
                "spec.expirationSeconds",
                format!("Invalid value: {seconds}: may not specify a duration less than 10 minutes"),
            ));
        }
        if seconds > 1 << 32 {
            return Err(ApiError::invalid(
                "TokenRequest",
                name,
                "spec.expirationSeconds",
                format!("Invalid value: {seconds}: may not specify a duration larger than 2^32 seconds"),
            ));
        }
        let mut audiences: Vec<String> = spec
            .get("audiences")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        if audiences.is_empty() {
            audiences.push(ISSUER.to_owned());
        }
        let now = Utc::now();
        let exp = now + TimeDelta::seconds(seconds);
        let token = self.mint(ns, name, uid, &audiences, now, exp);
        Ok(json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
            "spec": {"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": null},
            "status": {"token": token, "expirationTimestamp": exp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)},
        }))
    }

    /// `POST /apis/authentication.k8s.io/v1/tokenreviews`.
    pub fn review(&self, store: &Store, body: &Value) -> Result<Value, ApiError> {
        let spec = body.get("spec").cloned().unwrap_or(json!({}));
        let token = spec.get("token").and_then(Value::as_str).unwrap_or_default();
        if token.is_empty() {
            return Err(ApiError::invalid("TokenReview", "", "spec.token", "Required value"));
        }
        let mut wanted: Vec<String> = spec
            .get("audiences")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        if wanted.is_empty() {
            wanted.push(ISSUER.to_owned());
        }
        let status = match self.check(store, token, &wanted) {
            Ok((user, audiences)) => json!({"authenticated": true, "user": user, "audiences": audiences}),
            Err(why) => json!({"authenticated": false, "user": {}, "error": why}),
        };
        Ok(json!({
            "kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null}, "spec": spec, "status": status,
        }))
    }

    /// The user a bearer token authenticates (any audience of this API
    /// server's own: kube-apiserver's default audience is its issuer).
    pub fn user(&self, store: &Store, token: &str) -> Result<Value, String> {
        self.check(store, token, &[ISSUER.to_owned()]).map(|(user, _)| user)
    }

    fn check(&self, store: &Store, token: &str, wanted: &[String]) -> Result<(Value, Vec<String>), String> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "invalid bearer token".to_owned())?;
        if header.alg != Algorithm::ES256 || header.kid.as_deref() != Some(&self.kid) {
            return Err("invalid bearer token, token not issued by this API server".into());
        }
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[ISSUER]);
        v.validate_aud = false;
        v.leeway = 0;
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Value>(token, &self.decoding, &v)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    "invalid bearer token, token has expired".to_owned()
                }
                _ => format!("invalid bearer token, {e}"),
            })?
            .claims;
        let auds: Vec<String> = match claims.get("aud") {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        let common: Vec<String> = wanted.iter().filter(|w| auds.contains(w)).cloned().collect();
        if common.is_empty() {
            return Err("invalid bearer token, token audiences ... is invalid for the target audiences".into());
        }
        let k = &claims["kubernetes.io"];
        let ns = k["namespace"].as_str().unwrap_or_default();
        let name = k["serviceaccount"]["name"].as_str().unwrap_or_default();
        let uid = k["serviceaccount"]["uid"].as_str().unwrap_or_default();
        let sa_def = find("", "v1", "serviceaccounts").expect("served");
        match store.get(sa_def, ns, name) {
            Ok(sa) if sa.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid) => {}
            Ok(_) => return Err(format!("service account UID ({uid}) does not match claim")),
            Err(_) => return Err(format!("service account {ns}/{name} has been deleted")),
        }
        let user = json!({
            "username": format!("system:serviceaccount:{ns}:{name}"),
            "uid": uid,
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
        });
        Ok((user, common))
    }
}

/// One protobuf field: a varint or a length-delimited payload.
#[derive(Debug)]
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The fields of one protobuf message (wire types 0, 1, 2 and 5).
fn fields(b: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let key = varint(b, &mut i)?;
        let value = match key & 7 {
            0 => Field::Varint(varint(b, &mut i)?),
            1 => {
                i += 8;
                continue;
            }
            2 => {
                let len = varint(b, &mut i)? as usize;
                let v = b.get(i..i.checked_add(len)?)?;
                i += len;
                Field::Bytes(v)
            }
            5 => {
                i += 4;
                continue;
            }
            _ => return None,
        };
        out.push((key >> 3, value));
    }
    Some(out)
}

/// A TokenRequest sent as `application/vnd.kubernetes.protobuf` (kubectl
/// sends `create token` so and does not retry in JSON) as its JSON form.
/// Only the spec's audiences and expirationSeconds are read.
pub fn token_request_from_protobuf(body: &[u8]) -> Result<Value, ApiError> {
    let bad = || ApiError::bad_request("the body is not a protobuf-encoded TokenRequest");
    let envelope = body.strip_prefix(b"k8s\0").ok_or_else(bad)?;
    let raw = fields(envelope)
        .ok_or_else(bad)?
        .into_iter()
        .find_map(|(n, f)| match (n, f) {
            (2, Field::Bytes(b)) => Some(b),
            _ => None,
        })
        .ok_or_else(bad)?;
    let mut audiences = Vec::new();
    let mut seconds = None;
    for (n, f) in fields(raw).ok_or_else(bad)? {
        if let (2, Field::Bytes(spec)) = (n, f) {
            for (n, f) in fields(spec).ok_or_else(bad)? {
                match (n, f) {
                    (1, Field::Bytes(a)) => audiences.push(String::from_utf8_lossy(a).into_owned()),
                    (4, Field::Varint(s)) => seconds = Some(s as i64),
                    _ => {}
                }
            }
        }
    }
    let mut spec = json!({"audiences": audiences});
    if let Some(s) = seconds {
        spec["expirationSeconds"] = json!(s);
    }
    Ok(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_kubectl_token_request() {
        // spec { audiences: "sparkcap", expirationSeconds: 600 } inside the k8s envelope.
        let spec = [&[0x0a, 8][..], b"sparkcap", &[0x20, 0xd8, 0x04]].concat();
        let raw = [&[0x12, spec.len() as u8][..], &spec].concat();
        let body = [&b"k8s\0"[..], &[0x12, raw.len() as u8], &raw].concat();
        let v = token_request_from_protobuf(&body).unwrap();
        assert_eq!(v["spec"], json!({"audiences": ["sparkcap"], "expirationSeconds": 600}));
        assert!(token_request_from_protobuf(b"{}").is_err());
    }
}
