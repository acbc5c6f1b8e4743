//! The cluster's identity in the DCS: which agent initialised it and the
//! system identifier its initdb chose. Every member's data must carry that
//! identifier; data with another one belongs to another cluster.

use serde::{Deserialize, Serialize};

/// The value of the `initialize` key.
///
/// Claimed (on the claimer's lease, so a claimer that dies before initdb
/// finished frees it) by the first agent that finds the cluster empty;
/// made persistent with `system_id` once initdb is done; `done` once the
/// roles, the database and the leader key exist and the others may clone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    /// The node that won the race and runs (or ran) initdb.
    pub node: String,
    /// PostgreSQL's system identifier, once initdb has run. Written as a
    /// string: JSON readers other than pgkeel lose precision above 2^53.
    #[serde(with = "system_id_text", default)]
    pub system_id: Option<u64>,
    /// The cluster is ready to be cloned from.
    #[serde(default)]
    pub done: bool,
}

impl ClusterIdentity {
    /// A fresh claim by `node`.
    pub fn claim(node: &str) -> Self {
        ClusterIdentity {
            node: node.to_string(),
            system_id: None,
            done: false,
        }
    }
}

mod system_id_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => s.serialize_some(&id.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| t.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_id_round_trips_as_text() -> Result<(), serde_json::Error> {
        let id = ClusterIdentity {
            node: "pg1".into(),
            system_id: Some(7_447_342_349_817_344_229),
            done: true,
        };
        let text = serde_json::to_string(&id)?;
        assert_eq!(
            text,
            r#"{"node":"pg1","system_id":"7447342349817344229","done":true}"#
        );
        assert_eq!(serde_json::from_str::<ClusterIdentity>(&text)?, id);
        let claim: ClusterIdentity = serde_json::from_str(r#"{"node":"pg2","system_id":null}"#)?;
        assert_eq!(claim, ClusterIdentity::claim("pg2"));
        Ok(())
    }
}
