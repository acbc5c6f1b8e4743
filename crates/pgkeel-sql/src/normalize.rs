//! Cache keys: statement text with numeric and string literals masked, so
//! `... WHERE aid = 1` and `... WHERE aid = 2` share one classification.
//! A literal's value never changes where a statement may run (function
//! names, keywords and identifiers are kept verbatim).
//!
//! Anything the small scanner is not sure about (comments, dollar quotes,
//! escape strings) returns `None` and the raw text is the key.

/// The masked text, or `None` when the text is its own key (nothing to
/// mask, or constructs the scanner leaves alone).
pub fn cache_key(sql: &str) -> Option<String> {
    let mut out = String::new();
    cache_key_into(sql, &mut out).then_some(out)
}

/// As [`cache_key`], into a buffer the caller reuses (no allocation per
/// statement): true when `out` holds the masked text, false when `sql`
/// is its own key (`out` is then unspecified).
pub fn cache_key_into(sql: &str, out: &mut String) -> bool {
    out.clear();
    let b = sql.as_bytes();
    if !b.iter().any(|c| c.is_ascii_digit() || *c == b'\'') {
        return false;
    }
    out.reserve(sql.len());
    let mut i = 0;
    let mut last = 0; // start of the not yet copied text
    while i < b.len() {
        let c = b[i];
        match c {
            b'-' if b.get(i + 1) == Some(&b'-') => return false,
            b'/' if b.get(i + 1) == Some(&b'*') => return false,
            b'$' => {
                // $1 parameters are kept; $tag$ quoting is left alone.
                if !b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    return false;
                }
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                loop {
                    match b.get(i) {
                        None => return false,
                        Some(b'"') if b.get(i + 1) == Some(&b'"') => i += 2,
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
            }
            b'\'' => {
                // A prefix letter (E'', B'', X'', U&'') changes the rules.
                if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'&') {
                    return false;
                }
                let start = i;
                i += 1;
                loop {
                    match b.get(i) {
                        None => return false,
                        Some(b'\'') if b.get(i + 1) == Some(&b'\'') => i += 2,
                        Some(b'\'') => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
                out.push_str(&sql[last..start]);
                out.push_str("''");
                last = i;
            }
            b'0'..=b'9' => {
                let part_of_word = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_')
                {
                    i += 1;
                }
                if !part_of_word {
                    out.push_str(&sql[last..start]);
                    out.push('0');
                    last = i;
                }
            }
            _ => {
                // Skip whole identifiers so digits inside them stay.
                if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
                    while i < b.len()
                        && (b[i].is_ascii_alphanumeric()
                            || b[i] == b'_'
                            || b[i] >= 0x80
                            || b[i] == b'$')
                    {
                        i += 1;
                    }
                } else {
                    i += 1;
                }
            }
        }
    }
    out.push_str(&sql[last..]);
    true
}

#[cfg(test)]
mod tests {
    use super::cache_key;

    #[test]
    fn masks_literals_only() {
        assert_eq!(
            cache_key("SELECT abalance FROM pgbench_accounts WHERE aid = 4711;").as_deref(),
            Some("SELECT abalance FROM pgbench_accounts WHERE aid = 0;")
        );
        assert_eq!(
            cache_key("SELECT * FROM t1 WHERE x = 'it''s' AND y = 1.5e3").as_deref(),
            Some("SELECT * FROM t1 WHERE x = '' AND y = 0")
        );
        assert_eq!(
            cache_key("SELECT \"a1\" FROM t WHERE b = $1").as_deref(),
            Some("SELECT \"a1\" FROM t WHERE b = $1")
        );
        assert_eq!(
            cache_key("SELECT nextval('s')"),
            Some("SELECT nextval('')".into())
        );
    }

    #[test]
    fn leaves_unsure_text_alone() {
        assert_eq!(cache_key("SELECT 1 -- x"), None);
        assert_eq!(cache_key("SELECT $$1$$"), None);
        assert_eq!(cache_key("SELECT E'\\'' , 1"), None);
        assert_eq!(cache_key("SELECT 'unterminated"), None);
        assert_eq!(cache_key("SELECT now()"), None);
    }
}
