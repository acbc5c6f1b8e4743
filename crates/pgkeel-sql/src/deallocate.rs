//! Recognizes a simple query that is exactly one `DEALLOCATE [PREPARE]
//! name` (or `ALL`), so a pooler that keeps the client's protocol-level
//! prepared statements itself can answer it the way PostgreSQL would.
//!
//! A small scanner on the bytes the client sent (keywords are ASCII in
//! every client encoding), with no allocation unless the name must be
//! folded or unescaped. It is meant to run only on text already known to
//! change session state (the classifier parsed it as a valid statement),
//! and answers `None` for anything it does not fully understand (several
//! statements, `U&"..."` identifiers, names PostgreSQL would truncate):
//! the caller then lets the server answer.

use std::borrow::Cow;

use crate::block_exit::skip_block_comment;

/// What a `DEALLOCATE` statement removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deallocate<'a> {
    /// `DEALLOCATE [PREPARE] ALL`: every prepared statement.
    All,
    /// One statement, by name as PostgreSQL looks it up: an unquoted name
    /// folded to lower case (ASCII letters, as PostgreSQL does in UTF-8
    /// and multibyte encodings), a quoted one unescaped.
    Name(Cow<'a, [u8]>),
}

/// Longest identifier PostgreSQL keeps whole (`NAMEDATALEN - 1`); a
/// longer one is truncated, which is not reproduced here.
const MAX_IDENTIFIER: usize = 63;

/// The statement removed when the whole of `sql` is one `DEALLOCATE
/// name`, `DEALLOCATE PREPARE name`, `DEALLOCATE ALL` or `DEALLOCATE
/// PREPARE ALL` (any case; white space, comments and trailing semicolons
/// around it), else `None`.
pub fn deallocate_target(sql: &[u8]) -> Option<Deallocate<'_>> {
    let mut tokens = Tokens { sql, at: 0 };
    let Word::Plain(first) = tokens.next()? else {
        return None;
    };
    if !first.eq_ignore_ascii_case(b"deallocate") {
        return None;
    }
    let mut word = tokens.next()?;
    if matches!(word, Word::Plain(w) if w.eq_ignore_ascii_case(b"prepare")) {
        // `DEALLOCATE prepare` alone deallocates a statement named so.
        match tokens.next() {
            Some(next) => word = next,
            None if tokens.at_end() => return Some(Deallocate::Name(Cow::Borrowed(b"prepare"))),
            None => return None,
        }
    }
    if tokens.next().is_some() || !tokens.at_end() {
        return None;
    }
    match word {
        Word::Plain(w) if w.eq_ignore_ascii_case(b"all") => Some(Deallocate::All),
        Word::Plain(w) if w.len() <= MAX_IDENTIFIER => Some(Deallocate::Name(fold(w))),
        Word::Quoted(inner) => {
            let name = unescape(inner);
            (!name.is_empty() && name.len() <= MAX_IDENTIFIER).then_some(Deallocate::Name(name))
        }
        Word::Plain(_) => None,
    }
}

/// An identifier as scanned.
#[derive(Debug, Clone, Copy)]
enum Word<'a> {
    /// Unquoted: a keyword or a name, not yet folded.
    Plain(&'a [u8]),
    /// Between double quotes (`""` inside not yet unescaped).
    Quoted(&'a [u8]),
}

/// Identifiers of `sql` in order, past white space and comments.
struct Tokens<'a> {
    sql: &'a [u8],
    at: usize,
}

impl<'a> Tokens<'a> {
    /// The next identifier; `None` at the end of the text, or at anything
    /// else (see [`Tokens::at_end`]).
    fn next(&mut self) -> Option<Word<'a>> {
        self.skip_blank()?;
        let rest = self.sql.get(self.at..)?;
        match rest.first()? {
            b'"' => {
                let mut i = 1;
                loop {
                    match rest.get(i)? {
                        b'"' if rest.get(i + 1) == Some(&b'"') => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                self.at += i + 1;
                Some(Word::Quoted(&rest[1..i]))
            }
            c if c.is_ascii_alphabetic() || *c == b'_' || *c >= 0x80 => {
                let len = rest
                    .iter()
                    .position(|c| {
                        !(c.is_ascii_alphanumeric() || *c == b'_' || *c == b'$' || *c >= 0x80)
                    })
                    .unwrap_or(rest.len());
                // `U&"..."`: an identifier with escapes, not handled.
                if rest.get(len) == Some(&b'&') {
                    return None;
                }
                self.at += len;
                Some(Word::Plain(&rest[..len]))
            }
            _ => None,
        }
    }

    /// True when only white space, comments and semicolons are left.
    fn at_end(&mut self) -> bool {
        while self.skip_blank().is_some() {
            match self.sql.get(self.at) {
                Some(b';') => self.at += 1,
                Some(_) => return false,
                None => return true,
            }
        }
        false
    }

    /// Moves past white space and comments; `None` when a block comment
    /// is never closed.
    fn skip_blank(&mut self) -> Option<()> {
        let sql = self.sql;
        while let Some(c) = sql.get(self.at) {
            match c {
                b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => self.at += 1,
                b'-' if sql.get(self.at + 1) == Some(&b'-') => {
                    self.at = sql[self.at..]
                        .iter()
                        .position(|c| *c == b'\n' || *c == b'\r')
                        .map_or(sql.len(), |p| self.at + p);
                }
                b'/' if sql.get(self.at + 1) == Some(&b'*') => {
                    self.at = skip_block_comment(sql, self.at)?;
                }
                _ => break,
            }
        }
        Some(())
    }
}

/// An unquoted name as PostgreSQL looks it up: ASCII letters in lower case.
fn fold(word: &[u8]) -> Cow<'_, [u8]> {
    if word.iter().any(u8::is_ascii_uppercase) {
        Cow::Owned(word.to_ascii_lowercase())
    } else {
        Cow::Borrowed(word)
    }
}

/// A quoted name's text: `""` stands for one `"`.
fn unescape(inner: &[u8]) -> Cow<'_, [u8]> {
    if !inner.contains(&b'"') {
        return Cow::Borrowed(inner);
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while let Some(&c) = inner.get(i) {
        out.push(c);
        i += if c == b'"' { 2 } else { 1 };
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::{Deallocate, deallocate_target};

    fn name(sql: &str) -> Option<Vec<u8>> {
        match deallocate_target(sql.as_bytes()) {
            Some(Deallocate::Name(n)) => Some(n.into_owned()),
            _ => None,
        }
    }

    #[test]
    fn one_statement_by_name() {
        assert_eq!(name("DEALLOCATE a1").as_deref(), Some(&b"a1"[..]));
        assert_eq!(name("deallocate prepare A1;").as_deref(), Some(&b"a1"[..]));
        assert_eq!(
            name("  /* rails /* nested */ */ DeAllocate\n\"A1\" ;; -- evicted\n").as_deref(),
            Some(&b"A1"[..])
        );
        assert_eq!(name("DEALLOCATE \"a\"\"b\"").as_deref(), Some(&b"a\"b"[..]));
        assert_eq!(name("DEALLOCATE\"x y\"").as_deref(), Some(&b"x y"[..]));
        assert_eq!(name("DEALLOCATE/**/s$1_").as_deref(), Some(&b"s$1_"[..]));
        assert_eq!(name("DEALLOCATE prepare").as_deref(), Some(&b"prepare"[..]));
        assert_eq!(
            name("DEALLOCATE PREPARE prepare").as_deref(),
            Some(&b"prepare"[..])
        );
        assert_eq!(name("DEALLOCATE \"ALL\"").as_deref(), Some(&b"ALL"[..]));
        assert_eq!(
            name("DEALLOCATE \u{c9}t\u{c9}").as_deref(),
            Some("\u{c9}t\u{c9}".as_bytes())
        );
    }

    #[test]
    fn all_statements() {
        for sql in [
            "DEALLOCATE ALL",
            "deallocate prepare all;",
            "DEALLOCATE All -- x",
        ] {
            assert_eq!(
                deallocate_target(sql.as_bytes()),
                Some(Deallocate::All),
                "{sql}"
            );
        }
    }

    #[test]
    fn anything_else_is_left_to_the_server() {
        for sql in [
            "",
            "DEALLOCATE",
            "DISCARD ALL",
            "SELECT 'DEALLOCATE a'",
            "DEALLOCATE a; DEALLOCATE b",
            "DEALLOCATE a; SELECT 1",
            "SELECT 1; DEALLOCATE a",
            ";DEALLOCATE a",
            "DEALLOCATE a b",
            "DEALLOCATE PREPARE a b",
            "DEALLOCATE 1",
            "DEALLOCATE \"\"",
            "DEALLOCATE \"never closed",
            "DEALLOCATE a /* never closed",
            "DEALLOCATE U&\"d\\0061t\"",
            "DEALLOCATE a.b",
            "PREPARE a AS SELECT 1",
        ] {
            assert_eq!(deallocate_target(sql.as_bytes()), None, "{sql}");
        }
        let long = format!("DEALLOCATE {}", "n".repeat(64));
        assert_eq!(deallocate_target(long.as_bytes()), None);
        let longest = format!("DEALLOCATE {}", "n".repeat(63));
        assert!(deallocate_target(longest.as_bytes()).is_some());
    }

    #[test]
    fn bytes_in_any_encoding_are_scanned_without_panicking() {
        assert_eq!(
            name("DEALLOCATE caf\u{e9}").as_deref(),
            Some("caf\u{e9}".as_bytes())
        );
        assert_eq!(
            deallocate_target(b"DEALLOCATE caf\xe9"),
            Some(Deallocate::Name(b"caf\xe9"[..].into()))
        );
        assert_eq!(deallocate_target(&[0xff, b' ', 0x00]), None);
        assert_eq!(deallocate_target(b"DEALLOCATE a\0"), None);
    }
}
