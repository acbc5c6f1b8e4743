//! Replication modes and the `synchronous_standby_names` they render to.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::NodeName;

/// How commits on the primary wait for standbys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMode {
    /// Commits never wait: fastest, but a crash of the primary loses whatever
    /// the standbys had not received.
    Async,
    /// `FIRST n (...)`: the first `n` healthy standbys in priority order must
    /// confirm each commit.
    Sync,
    /// `ANY n (...)`: any `n` standbys must confirm; one slow standby does not
    /// slow commits while another is healthy. The default.
    #[default]
    Quorum,
}

impl ReplicationMode {
    /// Whether commits wait for standbys in this mode.
    pub fn is_synchronous(self) -> bool {
        !matches!(self, ReplicationMode::Async)
    }

    /// All modes, for help texts and error messages.
    pub const ALL: [ReplicationMode; 3] = [
        ReplicationMode::Async,
        ReplicationMode::Sync,
        ReplicationMode::Quorum,
    ];
}

impl fmt::Display for ReplicationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplicationMode::Async => "async",
            ReplicationMode::Sync => "sync",
            ReplicationMode::Quorum => "quorum",
        })
    }
}

/// Why a mode name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown replication mode `{0}`: use one of async, sync, quorum")]
pub struct UnknownMode(pub String);

impl FromStr for ReplicationMode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReplicationMode::ALL
            .into_iter()
            .find(|m| m.to_string() == s)
            .ok_or_else(|| UnknownMode(s.to_string()))
    }
}

/// Renders `synchronous_standby_names` for `standbys`. The names are quoted
/// so they match `application_name` exactly; an empty result means commits
/// do not wait (async mode, or no standby to wait for).
pub fn synchronous_standby_names(
    mode: ReplicationMode,
    sync_count: usize,
    standbys: &[NodeName],
) -> String {
    if standbys.is_empty() || sync_count == 0 {
        return String::new();
    }
    let method = match mode {
        ReplicationMode::Async => return String::new(),
        ReplicationMode::Sync => "FIRST",
        ReplicationMode::Quorum => "ANY",
    };
    let list = standbys
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!("{method} {sync_count} ({list})")
}

/// Reads back the standby names and count from a
/// `synchronous_standby_names` value pgkeel rendered (`ANY 1 ("a", "b")`,
/// `FIRST 2 (a, b)`, or a plain list meaning `FIRST 1`).
pub fn parse_standby_names(value: &str) -> (Vec<String>, usize) {
    let value = value.trim();
    if value.is_empty() {
        return (vec![], 0);
    }
    let (count, list) = match value.find('(') {
        Some(open) => {
            let head: Vec<&str> = value[..open].split_whitespace().collect();
            let count = head.last().and_then(|n| n.parse().ok()).unwrap_or(1);
            let close = value.rfind(')').unwrap_or(value.len());
            (count, &value[open + 1..close.max(open + 1)])
        }
        None => (1, value),
    };
    let names = list
        .split(',')
        .map(|n| n.trim().trim_matches('"').to_string())
        .filter(|n| !n.is_empty())
        .collect();
    (names, count)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_what_it_renders() {
        let names = ["replica1", "replica2"].map(|n| NodeName::new(n).expect("valid"));
        for mode in [ReplicationMode::Quorum, ReplicationMode::Sync] {
            let text = synchronous_standby_names(mode, 2, &names);
            assert_eq!(
                parse_standby_names(&text),
                (vec!["replica1".into(), "replica2".into()], 2)
            );
        }
        assert_eq!(parse_standby_names(""), (vec![], 0));
        assert_eq!(
            parse_standby_names("a, b"),
            (vec!["a".into(), "b".into()], 1)
        );
    }

    use super::*;

    fn names(list: &[&str]) -> Vec<NodeName> {
        list.iter()
            .map(|n| NodeName::new(n).expect("valid"))
            .collect()
    }

    #[test]
    fn quorum_renders_any() {
        let s = synchronous_standby_names(
            ReplicationMode::Quorum,
            1,
            &names(&["replica1", "replica2"]),
        );
        assert_eq!(s, r#"ANY 1 ("replica1", "replica2")"#);
    }

    #[test]
    fn sync_renders_first() {
        let s = synchronous_standby_names(ReplicationMode::Sync, 2, &names(&["a", "b", "c"]));
        assert_eq!(s, r#"FIRST 2 ("a", "b", "c")"#);
    }

    #[test]
    fn async_and_empty_render_nothing() {
        assert_eq!(
            synchronous_standby_names(ReplicationMode::Async, 1, &names(&["a"])),
            ""
        );
        assert_eq!(
            synchronous_standby_names(ReplicationMode::Quorum, 1, &[]),
            ""
        );
    }

    #[test]
    fn parses_every_mode_and_rejects_others() {
        for m in ReplicationMode::ALL {
            assert_eq!(m.to_string().parse::<ReplicationMode>(), Ok(m));
        }
        let err = "semi".parse::<ReplicationMode>().expect_err("unknown");
        assert!(err.to_string().contains("async, sync, quorum"));
    }
}
