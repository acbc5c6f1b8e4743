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

/// Byte classes for the scanner: one table lookup per byte (it runs for
/// every simple-protocol statement the proxy routes).
const IDENT_START: u8 = 1; // a-z A-Z _ and non-ASCII
const IDENT_CONT: u8 = 2; // IDENT_START, digits, $
const NUM_CONT: u8 = 4; // letters, digits, . and _
const WORD: u8 = 8; // letters, digits and _ (a number's neighbour in a word)
const SPECIAL: u8 = 16; // digits ' " $ - /
const MASKABLE: u8 = 32; // digits and ': something may be masked

const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let alpha = b.is_ascii_alphabetic();
        let digit = b.is_ascii_digit();
        let mut k = 0;
        if alpha || b == b'_' || b >= 0x80 {
            k |= IDENT_START | IDENT_CONT;
        }
        if digit || b == b'$' {
            k |= IDENT_CONT;
        }
        if alpha || digit || b == b'.' || b == b'_' {
            k |= NUM_CONT;
        }
        if alpha || digit || b == b'_' {
            k |= WORD;
        }
        if digit || matches!(b, b'\'' | b'"' | b'$' | b'-' | b'/') {
            k |= SPECIAL;
        }
        if digit || b == b'\'' {
            k |= MASKABLE;
        }
        t[c] = k;
        c += 1;
    }
    t
};

fn class(b: u8) -> u8 {
    CLASS[usize::from(b)]
}

/// As [`cache_key`], into a buffer the caller reuses (no allocation per
/// statement): true when `out` holds the masked text, false when `sql`
/// is its own key (`out` is then unspecified).
pub fn cache_key_into(sql: &str, out: &mut String) -> bool {
    out.clear();
    let b = sql.as_bytes();
    if !b.iter().any(|&c| class(c) & MASKABLE != 0) {
        return false;
    }
    out.reserve(sql.len());
    let n = b.len();
    let mut i = 0;
    let mut last = 0; // start of the not yet copied text
    while i < n {
        let c = b[i];
        let k = class(c);
        if k & IDENT_START != 0 {
            // Skip whole identifiers so digits inside them stay.
            i += 1;
            while i < n && class(b[i]) & IDENT_CONT != 0 {
                i += 1;
            }
            continue;
        }
        if k & SPECIAL == 0 {
            i += 1;
            continue;
        }
        let next = b.get(i + 1).copied();
        match c {
            b'-' if next == Some(b'-') => return false,
            b'/' if next == Some(b'*') => return false,
            b'-' | b'/' => i += 1,
            b'$' => {
                // $1 parameters are kept; $tag$ quoting is left alone.
                if !next.is_some_and(|d| d.is_ascii_digit()) {
                    return false;
                }
                i += 1;
                while i < n && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            b'"' => match skip_quoted(b, i, b'"') {
                Some(end) => i = end,
                None => return false,
            },
            b'\'' => {
                // A prefix letter (E'', B'', X'', U&'') changes the rules.
                if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'&') {
                    return false;
                }
                let Some(end) = skip_quoted(b, i, b'\'') else {
                    return false;
                };
                out.push_str(&sql[last..i]);
                out.push_str("''");
                i = end;
                last = i;
            }
            _ => {
                // A digit: a number, unless it continues a word.
                let part_of_word = i > 0 && class(b[i - 1]) & WORD != 0;
                let start = i;
                while i < n && class(b[i]) & NUM_CONT != 0 {
                    i += 1;
                }
                if !part_of_word {
                    out.push_str(&sql[last..start]);
                    out.push('0');
                    last = i;
                }
            }
        }
    }
    out.push_str(&sql[last..]);
    true
}

/// The end (past the closing quote) of the `quote`-quoted text opening
/// at `at`, where a doubled quote stands for itself; `None` if it never
/// closes.
fn skip_quoted(b: &[u8], at: usize, quote: u8) -> Option<usize> {
    let mut i = at + 1;
    loop {
        match b.get(i) {
            None => return None,
            Some(&q) if q == quote && b.get(i + 1) == Some(&quote) => i += 2,
            Some(&q) if q == quote => return Some(i + 1),
            Some(_) => i += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{cache_key, cache_key_into};

    /// The first, byte-by-byte version of `cache_key_into`: what the
    /// table-driven one must answer.
    fn reference_cache_key_into(sql: &str, out: &mut String) -> bool {
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
                    let part_of_word =
                        i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
                    let start = i;
                    while i < b.len()
                        && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_')
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

    /// Same answers as the reference on text built from the bytes that
    /// matter to the scanner (and others), in every order.
    #[test]
    fn answers_as_the_reference_does() {
        const PIECES: &[&str] = &[
            "SELECT", " ", "a1", "1", "1.5e3", "'", "''", "\"", "\"\"", "$", "$1", "$$", "-", "--",
            "/", "/*", "E", "&", "_", "x", "\u{e9}", ".", ",", "(", ")", "=", "U&", "0x1F", "a$1",
            "9_",
        ];
        // A small deterministic generator: no dependency, same cases each run.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let (mut a, mut b) = (String::new(), String::new());
        for _ in 0..200_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut r = seed;
            let mut sql = String::new();
            for _ in 0..(seed % 9) {
                r = r
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                sql.push_str(PIECES[((r >> 33) as usize) % PIECES.len()]);
            }
            let got = cache_key_into(&sql, &mut a);
            let want = reference_cache_key_into(&sql, &mut b);
            assert_eq!(got, want, "{sql:?}");
            if got {
                assert_eq!(a, b, "{sql:?}");
            }
        }
    }

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
