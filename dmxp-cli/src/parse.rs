//! Value parsers for clap: numbers in decimal or `0x` hex, octal modes, sizes with a suffix.
//! A value they refuse is a usage error (exit 2).

use dmxp_nostd::layout::{message_flags, MAX_CAPACITY, MIN_CAPACITY};

/// A u64 in decimal, or hex with `0x`.
pub fn number(text: &str) -> Result<u64, String> {
    let text = text.trim().replace('_', "");
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|e| format!("`{text}` is not a number: {e}"))
}

/// A u32 (decimal or `0x` hex).
pub fn u32_value(text: &str) -> Result<u32, String> {
    let value = number(text)?;
    u32::try_from(value).map_err(|_| format!("{value} does not fit in 32 bits"))
}

/// A channel id, 0..256.
pub fn channel_id(text: &str) -> Result<u32, String> {
    let id = u32_value(text)?;
    if id as usize >= dmxp::MAX_CHANNELS {
        return Err(format!("channel id {id} out of range (0..256)"));
    }
    Ok(id)
}

/// A ring capacity: a power of two from 2 to 2^32.
pub fn capacity(text: &str) -> Result<u64, String> {
    let capacity = number(text)?;
    if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
        return Err(format!(
            "capacity {capacity} must be a power of two from {MIN_CAPACITY} to {MAX_CAPACITY}"
        ));
    }
    Ok(capacity)
}

/// Records of a peer table to create: 0 (the default 256), or 256 to 16,384.
pub fn peer_records(text: &str) -> Result<u32, String> {
    let value = number(text)?;
    let records = u32::try_from(value).map_err(|_| format!("{value} peer records is too many"))?;
    dmxp_nostd::FormatOptions::default()
        .with_peer_records(records)
        .check()
        .map_err(|e| e.to_string())?;
    Ok(records)
}

/// Message flags: only the application bits (`0xFF00`) may be set.
pub fn app_flags(text: &str) -> Result<u16, String> {
    let value = number(text)?;
    let flags = u16::try_from(value).map_err(|_| format!("flags {value} do not fit in 16 bits"))?;
    if flags & message_flags::PROTOCOL_MASK != 0 {
        return Err(format!(
            "flags {flags:#06x} set protocol-reserved bits (0x00ff); applications own 0xff00"
        ));
    }
    Ok(flags)
}

/// Permission bits in octal (`600`, `0600` or `0o600`).
pub fn mode(text: &str) -> Result<u32, String> {
    let digits = text.trim().trim_start_matches("0o");
    let mode = u32::from_str_radix(digits, 8).map_err(|e| format!("`{text}` is not octal: {e}"))?;
    if mode & !0o777 != 0 {
        return Err(format!("mode {mode:#o} has bits outside 0o777"));
    }
    Ok(mode)
}

/// A byte count, optionally with a binary suffix: `K`, `M`, `G` (KiB, MiB, GiB).
pub fn size(text: &str) -> Result<usize, String> {
    let trimmed = text.trim();
    let (digits, unit) = match trimmed
        .char_indices()
        .find(|(_, c)| c.is_ascii_alphabetic())
    {
        Some((at, _)) => trimmed.split_at(at),
        None => (trimmed, ""),
    };
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KIB" => 10,
        "M" | "MIB" => 20,
        "G" | "GIB" => 30,
        other => return Err(format!("unknown size unit `{other}` (use K, M or G)")),
    };
    let value = number(digits)?;
    value
        .checked_mul(1 << shift)
        .and_then(|bytes| usize::try_from(bytes).ok())
        .ok_or_else(|| format!("size {text} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_accept_and_refuse() {
        assert_eq!(number("0x10"), Ok(16));
        assert_eq!(number("1_000"), Ok(1000));
        assert!(number("ten").is_err());
        assert_eq!(channel_id("255"), Ok(255));
        assert!(channel_id("256").is_err());
        assert_eq!(capacity("1024"), Ok(1024));
        assert!(capacity("3").is_err());
        assert!(capacity("1").is_err());
        assert_eq!(app_flags("0x0100"), Ok(0x0100));
        assert!(app_flags("0x0001").is_err());
        assert_eq!(mode("0600"), Ok(0o600));
        assert_eq!(mode("0o640"), Ok(0o640));
        assert!(mode("0800").is_err());
        assert_eq!(size("4M"), Ok(4 << 20));
        assert_eq!(size("1048576"), Ok(1 << 20));
        assert_eq!(size("2KiB"), Ok(2048));
        assert!(size("3T").is_err());
        assert_eq!(peer_records("0"), Ok(0));
        assert_eq!(peer_records("4096"), Ok(4096));
        assert!(peer_records("100").is_err());
        assert!(peer_records("16385").is_err());
        assert!(peer_records("5000000000").is_err());
    }
}
