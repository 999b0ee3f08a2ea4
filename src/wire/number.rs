//! Validated numbers: the policy that keeps NaN, infinities, negative counts and
//! absurd magnitudes out of the rolling statistics.
//!
//! Policy: a frame carrying any such value is rejected whole (reason `invalid_value`)
//! rather than clamped, so no statistic is ever fed a number the engine did not mean.
//! Integers take the whole u64 range (the real publisher sends e.g. 2^53+1 exactly);
//! floats must be finite, non-negative and at most 2^64, so that squares inside
//! Welford's update stay finite.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Largest float accepted (2^64): its square is far from overflowing an f64.
pub const MAX_MAGNITUDE: f64 = 18_446_744_073_709_551_616.0;

/// A non-negative integer field (counts and token sums).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Count(pub u64);

/// A finite, non-negative float field (seconds and variances).
#[derive(Debug, Clone, Copy, Default, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Real(pub f64);

fn invalid<E: de::Error>(what: impl fmt::Display) -> E {
    E::custom(format_args!("invalid_value: {what}"))
}

fn check_real<E: de::Error>(v: f64) -> Result<f64, E> {
    if !v.is_finite() {
        return Err(invalid(format_args!("{v} is not finite")));
    }
    if v < 0.0 {
        return Err(invalid(format_args!("{v} is negative")));
    }
    if v > MAX_MAGNITUDE {
        return Err(invalid(format_args!("{v} exceeds 2^64")));
    }
    Ok(v)
}

struct CountVisitor;

impl<'de> Visitor<'de> for CountVisitor {
    type Value = Count;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a non-negative integer")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
        Ok(Count(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
        if v < 0 {
            return Err(invalid(format_args!("count {v} is negative")));
        }
        self.visit_u64(v as u64)
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_u64(CountVisitor)
    }
}

struct RealVisitor;

impl<'de> Visitor<'de> for RealVisitor {
    type Value = Real;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a finite non-negative number")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Real, E> {
        check_real(v).map(Real)
    }
    fn visit_f32<E: de::Error>(self, v: f32) -> Result<Real, E> {
        self.visit_f64(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Real, E> {
        self.visit_f64(v as f64)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Real, E> {
        self.visit_f64(v as f64)
    }
}

impl<'de> Deserialize<'de> for Real {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_f64(RealVisitor)
    }
}
