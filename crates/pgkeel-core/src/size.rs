//! Memory and WAL sizes in PostgreSQL's unit syntax (`512MB`, `1GB`).

/// Formats a byte count the way `postgresql.conf` accepts it, using the
/// largest unit that divides it exactly so the rendered file stays readable.
pub fn pg_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TB", 1 << 40),
        ("GB", 1 << 30),
        ("MB", 1 << 20),
        ("kB", 1 << 10),
    ];
    for (unit, factor) in UNITS {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    // PostgreSQL's smallest memory unit is the kB: round up.
    format!("{}kB", bytes.div_ceil(1024).max(1))
}

/// Parses a PostgreSQL size (`64MB`, `1GB`, `8192kB`, `1024` = bytes) into
/// bytes; `None` when it is not one.
pub fn parse_pg_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let num: u64 = num.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    num.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_largest_exact_unit() {
        assert_eq!(pg_size(1 << 30), "1GB");
        assert_eq!(pg_size(1536 << 20), "1536MB");
        assert_eq!(pg_size(4096), "4kB");
        assert_eq!(pg_size(100), "1kB");
    }

    #[test]
    fn parses_what_it_prints() {
        for bytes in [1u64 << 30, 1536 << 20, 4096, 3 << 40] {
            assert_eq!(parse_pg_size(&pg_size(bytes)), Some(bytes));
        }
        assert_eq!(parse_pg_size("12XB"), None);
        assert_eq!(parse_pg_size("MB"), None);
    }
}
