//! Bounding what publishers put into label values: a hostile or buggy publisher must
//! not be able to blow up memory or the exposition with a 10 KB worker_id.

/// Default cap on the bytes of a worker_id kept as a label value.
pub const DEFAULT_MAX_LABEL_BYTES: usize = 128;

/// Returns `value` unchanged when it fits in `max` bytes; otherwise a prefix cut at a
/// character boundary followed by `~` and 8 hex digits of a hash of the whole value,
/// so that distinct long values stay distinct.
pub fn cap_label(value: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if value.len() <= max {
        return std::borrow::Cow::Borrowed(value);
    }
    let keep = max.saturating_sub(9);
    let mut cut = keep.min(value.len());
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    // FNV-1a: stable across runs and platforms, unlike std's RandomState.
    let mut h: u32 = 0x811c_9dc5;
    for b in value.bytes() {
        h = (h ^ b as u32).wrapping_mul(0x0100_0193);
    }
    std::borrow::Cow::Owned(format!("{}~{h:08x}", &value[..cut]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_capped_and_stay_distinct() {
        let a = "é".repeat(5000);
        let b = format!("{}x", "é".repeat(4999));
        let ca = cap_label(&a, 128);
        let cb = cap_label(&b, 128);
        assert!(ca.len() <= 128 && cb.len() <= 128);
        assert_ne!(ca, cb);
        assert_eq!(cap_label("short", 128), "short");
    }
}
