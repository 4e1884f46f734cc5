//! Kubernetes resource quantities ("500m", "1.5", "16Gi", "1e3") to exact
//! integers: CPU in millicores, memory in bytes. Pod specs, node allocatable
//! and Spark Operator objects all carry them as strings.

use crate::units::{Bytes, Millicores};
use thiserror::Error;

/// A quantity string Kubernetes would not accept, or one too large to hold.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid quantity {0:?}: expected a number with an optional suffix such as 500m, 2, 1.5, 16Gi or 1e3")]
pub struct QuantityError(pub String);

/// Parses into units of `10^-scale` of the base unit, rounding up as the API
/// server does (a request of 0.0001 cpu is 1m).
fn parse_scaled(text: &str, scale: u32) -> Result<i128, QuantityError> {
    let err = || QuantityError(text.to_string());
    let s = text.trim();
    let (number, suffix) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .map_or((s, ""), |i| s.split_at(i));
    if number.is_empty() || number.starts_with('-') {
        return Err(err());
    }
    let number = number.strip_prefix('+').unwrap_or(number);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
        || int_part.len() + frac_part.len() > 30
    {
        return Err(err());
    }
    // value = digits × 10^exp10 × 2^exp2
    let digits: i128 = format!("{int_part}{frac_part}").parse().unwrap_or(0);
    let mut exp10: i32 = -(frac_part.len() as i32);
    let mut exp2: u32 = 0;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        e if e.starts_with(['e', 'E']) => {
            let x: i32 = e[1..].parse().map_err(|_| err())?;
            if !(-30..=30).contains(&x) {
                return Err(err());
            }
            exp10 += x;
        }
        _ => return Err(err()),
    }
    exp10 += scale as i32;
    let mut value = digits.checked_mul(1i128 << exp2).ok_or_else(err)?;
    if exp10 >= 0 {
        value = value
            .checked_mul(10i128.checked_pow(exp10 as u32).ok_or_else(err)?)
            .ok_or_else(err)?;
    } else {
        let div = 10i128.checked_pow((-exp10) as u32).ok_or_else(err)?;
        value = (value + div - 1) / div;
    }
    Ok(value)
}

fn to_i64(v: i128, text: &str) -> Result<i64, QuantityError> {
    i64::try_from(v).map_err(|_| QuantityError(text.to_string()))
}

/// CPU quantity in millicores, rounded up.
pub fn parse_cpu(text: &str) -> Result<Millicores, QuantityError> {
    Ok(Millicores(to_i64(parse_scaled(text, 3)?, text)?))
}

/// Memory quantity in bytes, rounded up.
pub fn parse_memory(text: &str) -> Result<Bytes, QuantityError> {
    Ok(Bytes(to_i64(parse_scaled(text, 0)?, text)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_forms() {
        for (s, mc) in [
            ("1", 1000),
            ("500m", 500),
            ("0.5", 500),
            ("1.5", 1500),
            ("2.0001", 2001),
            ("100n", 1),
            ("1e3", 1_000_000),
            ("1k", 1_000_000),
            ("+3", 3000),
            ("250000u", 250),
        ] {
            assert_eq!(parse_cpu(s), Ok(Millicores(mc)), "{s}");
        }
    }

    #[test]
    fn memory_forms() {
        assert_eq!(parse_memory("16Gi"), Ok(Bytes(16 << 30)));
        assert_eq!(parse_memory("1G"), Ok(Bytes(1_000_000_000)));
        assert_eq!(parse_memory("1408Mi"), Ok(Bytes(1408 << 20)));
        assert_eq!(parse_memory("0.5Ki"), Ok(Bytes(512)));
        assert_eq!(parse_memory("128974848"), Ok(Bytes(128_974_848)));
    }

    #[test]
    fn rejects_what_kubernetes_rejects() {
        for s in [
            "",
            "m",
            "-1",
            "1x",
            "1.2.3",
            "1 Gi",
            "abc",
            "1e99",
            ".",
            "99999999999999999999999999999Ei",
        ] {
            assert!(parse_cpu(s).is_err(), "{s}");
        }
        assert!(parse_cpu("1x").unwrap_err().to_string().contains("\"1x\""));
    }
}
