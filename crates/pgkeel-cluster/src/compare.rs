//! Comparing a requested configuration with the one a cluster was created
//! with, so `up` never silently ignores (or half-applies) a changed flag.

use pgkeel_core::Config;
use toml::Value;

/// Keys pgkeel resolves and pins at creation; a request that leaves them
/// unset means "whatever the cluster has".
const PINNED: [&str; 4] = [
    "cluster.data_dir",
    "cluster.os_user",
    "cluster.bin_dir",
    "roles.superuser",
];

/// Every setting in `requested` whose value differs from `stored`, as
/// `key: stored -> requested`. `nodes_requested` says whether the request
/// named nodes at all ([[nodes]], replicas or base port); when it did not,
/// the generated default nodes are not a request to change them.
pub fn config_differences(
    requested: &Config,
    stored: &Config,
    nodes_requested: bool,
) -> Vec<String> {
    let (Ok(req), Ok(have)) = (Value::try_from(requested), Value::try_from(stored)) else {
        return vec!["configuration cannot be compared".into()];
    };
    let mut out = vec![];
    let mut req_flat = vec![];
    flatten("", &req, &mut req_flat);
    let mut have_flat = vec![];
    flatten("", &have, &mut have_flat);
    for (key, value) in &req_flat {
        if PINNED.contains(&key.as_str()) || (!nodes_requested && key == "nodes") {
            continue;
        }
        let stored_value = have_flat.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        if stored_value != Some(value) {
            let shown = stored_value.map_or_else(|| "(unset)".to_string(), ToString::to_string);
            out.push(format!("{key}: {shown} -> {value}"));
        }
    }
    out
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Table(table) => {
            for (k, v) in table {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgkeel_core::ReplicationMode;
    use pgkeel_core::config::{ConfigSources, load};

    #[test]
    fn same_request_has_no_difference_even_when_stored_pins_more() {
        let requested = load(&ConfigSources::default()).expect("defaults");
        let mut stored = requested.clone();
        stored.cluster.os_user = Some("postgres".into());
        stored.roles.superuser = Some("postgres".into());
        assert!(config_differences(&requested, &stored, true).is_empty());
    }

    #[test]
    fn changed_mode_and_nodes_are_reported() {
        let stored = load(&ConfigSources::default()).expect("defaults");
        let mut requested = stored.clone();
        requested.replication.mode = ReplicationMode::Async;
        requested.nodes.pop();
        assert_eq!(config_differences(&requested, &stored, false).len(), 1);
        let diff = config_differences(&requested, &stored, true);
        assert!(
            diff.iter()
                .any(|d| d.starts_with("replication.mode: \"quorum\" -> \"async\"")),
            "{diff:?}"
        );
        assert!(diff.iter().any(|d| d.starts_with("nodes:")), "{diff:?}");
    }
}
