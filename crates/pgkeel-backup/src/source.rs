//! Which nodes a backup uses: the primary (it starts and stops every
//! backup) and, when backups read from a replica, the streaming replica
//! furthest along. Pure: decided from a status snapshot.

use pgkeel_core::config::BackupSource;
use pgkeel_core::status::{ClusterStatus, Role};

/// The nodes a backup runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupNodes {
    /// The running primary.
    pub primary: String,
    /// The replica the files are read from (`None`: from the primary).
    pub standby: Option<String>,
    /// Why the files come from the primary although a replica was asked
    /// for.
    pub fallback: Option<String>,
}

/// Chooses the nodes for a backup from `status`, or says why none can run.
pub fn choose(status: &ClusterStatus, from: BackupSource) -> Result<BackupNodes, String> {
    let running = |role: Role| {
        status
            .nodes
            .iter()
            .filter(move |n| n.running && n.role == Some(role))
    };
    let primaries: Vec<_> = running(Role::Primary).collect();
    let primary = match primaries.as_slice() {
        [p] => p.name.clone(),
        [] => {
            return Err(
                "no running primary: a backup needs one to start and stop it; see `pgkeel status`"
                    .into(),
            );
        }
        _ => {
            return Err(
                "more than one node runs as primary: wait until the agents have fenced one (see `pgkeel status`)"
                    .into(),
            );
        }
    };
    if from == BackupSource::Primary {
        return Ok(BackupNodes {
            primary,
            standby: None,
            fallback: None,
        });
    }
    let standby = running(Role::Replica)
        .filter(|n| n.replication_state.as_deref() == Some("streaming"))
        .min_by_key(|n| (n.lag_bytes.unwrap_or(u64::MAX), n.name.clone()))
        .map(|n| n.name.clone());
    let fallback = standby
        .is_none()
        .then(|| "no replica is streaming: the files are read from the primary".to_string());
    Ok(BackupNodes {
        primary,
        standby,
        fallback,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgkeel_core::status::NodeStatus;

    fn node(
        name: &str,
        role: Role,
        running: bool,
        state: Option<&str>,
        lag: Option<u64>,
    ) -> NodeStatus {
        NodeStatus {
            name: name.into(),
            role: Some(role),
            running,
            replication_state: state.map(String::from),
            lag_bytes: lag,
            ..Default::default()
        }
    }

    fn status(nodes: Vec<NodeStatus>) -> ClusterStatus {
        ClusterStatus {
            cluster: "c".into(),
            mode: "quorum".into(),
            synchronous_standby_names: None,
            nodes,
            slots: vec![],
            leader: None,
            lease_ttl_left: None,
            paused: None,
            following: None,
            etcd_ok: None,
            proxy: None,
        }
    }

    #[test]
    fn the_streaming_replica_furthest_along_reads_the_files() {
        let s = status(vec![
            node("a", Role::Primary, true, None, None),
            node("b", Role::Replica, true, Some("streaming"), Some(900)),
            node("c", Role::Replica, true, Some("streaming"), Some(10)),
            node("d", Role::Replica, true, Some("catchup"), Some(0)),
            node("e", Role::Replica, false, Some("streaming"), Some(0)),
        ]);
        let n = choose(&s, BackupSource::Replica).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.primary, "a");
        assert_eq!(n.standby.as_deref(), Some("c"));
        assert_eq!(n.fallback, None);
        let n = choose(&s, BackupSource::Primary).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.standby, None);
    }

    #[test]
    fn without_a_streaming_replica_the_primary_serves_and_says_so() {
        let s = status(vec![
            node("a", Role::Primary, true, None, None),
            node("b", Role::Replica, false, None, None),
        ]);
        let n = choose(&s, BackupSource::Replica).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.standby, None);
        assert!(
            n.fallback
                .is_some_and(|f| f.contains("no replica is streaming"))
        );
    }

    #[test]
    fn no_primary_or_two_primaries_refuse() {
        let none = status(vec![node(
            "b",
            Role::Replica,
            true,
            Some("streaming"),
            Some(0),
        )]);
        assert!(
            choose(&none, BackupSource::Replica).is_err_and(|e| e.contains("no running primary"))
        );
        let two = status(vec![
            node("a", Role::Primary, true, None, None),
            node("b", Role::Primary, true, None, None),
        ]);
        assert!(choose(&two, BackupSource::Replica).is_err_and(|e| e.contains("more than one")));
    }
}
