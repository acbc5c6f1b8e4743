//! Names that end up inside PostgreSQL: node names become replication slot
//! names and `application_name`s, role names go into SQL and `pg_hba.conf`.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// Why a name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} `{name}` is not usable: {why}; use 1-63 characters of lower-case letters, digits and `_`, starting with a letter or `_` (e.g. `replica1`)"
)]
pub struct NameError {
    /// What kind of name it was ("node name", "role name", ...).
    pub what: &'static str,
    /// The rejected name.
    pub name: String,
    /// The rule it broke.
    pub why: &'static str,
}

/// Checks the identifier rule shared by slot names, application names and the
/// role names pgkeel creates: a plain lower-case SQL identifier, so it never
/// needs quoting tricks and survives `synchronous_standby_names` matching.
pub fn check_identifier(what: &'static str, name: &str) -> Result<(), NameError> {
    let fail = |why| {
        Err(NameError {
            what,
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() {
        return fail("it is empty");
    }
    if name.len() > 63 {
        return fail("it is longer than 63 bytes (PostgreSQL's NAMEDATALEN)");
    }
    let mut chars = name.chars();
    if let Some(first) = chars.next()
        && !(first.is_ascii_lowercase() || first == '_')
    {
        return fail("it does not start with a lower-case letter or `_`");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return fail("it contains a character other than a-z, 0-9 and `_`");
    }
    Ok(())
}

/// A cluster member's name. It doubles as the member's physical slot name
/// and its `application_name`, which is what `synchronous_standby_names`
/// matches; that is why it is validated so strictly.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct NodeName(String);

impl NodeName {
    /// Validates and wraps a node name.
    pub fn new(name: &str) -> Result<Self, NameError> {
        check_identifier("node name", name)?;
        Ok(NodeName(name.to_string()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        NodeName::new(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_identifiers() {
        for ok in ["primary", "replica1", "_x", "a_b_9"] {
            assert!(NodeName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_what_postgres_would_mangle() {
        for bad in ["", "Replica", "1node", "node-1", "nœud", &"x".repeat(64)] {
            let err = NodeName::new(bad).expect_err(bad);
            assert!(err.to_string().contains("lower-case"), "{err}");
        }
    }
}
