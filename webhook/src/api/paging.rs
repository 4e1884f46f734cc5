//! Opaque cursors and page sizes for the list routes.

use super::error::ApiError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Default page size.
pub const DEFAULT_LIMIT: i64 = 100;
/// Largest page size.
pub const MAX_LIMIT: i64 = 500;

/// A checked page size.
pub fn limit(given: Option<i64>) -> Result<i64, ApiError> {
    match given {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit {n} is out of range; use 1 to {MAX_LIMIT}"),
        )),
    }
}

/// Encodes a position as an opaque cursor.
pub fn encode<T: Serialize>(position: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(position).expect("cursor serializes"))
}

/// Decodes a cursor this API handed out.
pub fn decode<T: DeserializeOwned>(cursor: Option<&str>) -> Result<Option<T>, ApiError> {
    let Some(c) = cursor else { return Ok(None) };
    let bad = || {
        ApiError::bad_request(
            "invalid_cursor",
            "cursor is not one this API returned; pass next_cursor from the previous page unchanged",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(c).map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map(Some).map_err(|_| bad())
}

/// One page of `items` (already in order) after the item `after` says,
/// with the cursor of the page's last item when more follow.
pub fn page<T, K: Serialize>(
    items: Vec<T>,
    skip_while: impl Fn(&T) -> bool,
    limit: i64,
    key: impl Fn(&T) -> K,
) -> (Vec<T>, Option<String>) {
    let mut rest: Vec<T> = items.into_iter().skip_while(|i| skip_while(i)).collect();
    let more = rest.len() as i64 > limit;
    rest.truncate(limit as usize);
    let next = if more {
        rest.last().map(|l| encode(&key(l)))
    } else {
        None
    };
    (rest, next)
}
