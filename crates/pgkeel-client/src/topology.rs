//! Who is the primary and who are the replicas. A [`TopologySource`]
//! answers; the pool asks at start-up and again whenever what it sees
//! contradicts the answer (the primary is unreachable or read-only, a
//! replica accepts writes, SQLSTATE 25006).
//!
//! [`ProbeTopology`] asks the nodes themselves. A source backed by a
//! pgkeel agent's REST `/cluster` endpoint (or Patroni's, or a service
//! registry) implements the same trait; the pool needs nothing else.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use futures_util::future::join_all;

use crate::probe::{Probe, connect, probe};
use crate::{Error, ErrorKind, NodeAddr, PoolConfig, Result};

/// A boxed future, so [`TopologySource`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a node is for the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Takes writes. At most one member has it.
    Primary,
    /// A streaming standby: takes reads.
    Replica,
    /// Unreachable, read-only without being a standby (a fenced primary),
    /// or not known yet. Watched, not used; when it turns into a primary or
    /// a standby the pool asks the source again.
    Unknown,
}

/// One node and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Where it is reached (with the pool's credentials).
    pub addr: NodeAddr,
    /// What it is.
    pub role: Role,
}

/// Tells the pool the cluster's members and their roles. Implement it to
/// take the topology from somewhere else than the nodes (an HA agent, a
/// service registry); the pool probes members itself for health and lag
/// either way, and asks again when a member contradicts its role.
///
/// ```
/// use pgkeel_client::{BoxFuture, Member, NodeAddr, PoolConfig, Result, Role, TopologySource};
///
/// /// A topology written down by hand (an agent's `/cluster` would be
/// /// fetched here instead).
/// #[derive(Debug)]
/// struct Fixed(Vec<Member>);
///
/// impl TopologySource for Fixed {
///     fn discover<'a>(&'a self, _config: &'a PoolConfig) -> BoxFuture<'a, Result<Vec<Member>>> {
///         Box::pin(async move { Ok(self.0.clone()) })
///     }
/// }
///
/// let source = Fixed(vec![
///     Member { addr: NodeAddr::new("10.0.0.1", 5432), role: Role::Primary },
///     Member { addr: NodeAddr::new("10.0.0.2", 5432), role: Role::Replica },
/// ]);
/// // ReplicatedPool::with_topology(config, source).await?
/// # let _ = source;
/// ```
pub trait TopologySource: Send + Sync + fmt::Debug + 'static {
    /// The current members. `config` carries the pool's node list and
    /// credentials. An error keeps the pool on its previous topology (or
    /// fails the pool's construction).
    fn discover<'a>(&'a self, config: &'a PoolConfig) -> BoxFuture<'a, Result<Vec<Member>>>;
}

/// Finds the topology by asking every configured node, in parallel,
/// whether it is in recovery and whether it accepts writes: the check
/// libpq's `target_session_attrs=read-write` makes, done on all nodes at
/// once so the replicas are learnt too. Of several writable nodes the one
/// on the newest timeline wins (an old primary that came back after a
/// failover); two writable nodes on one timeline are not one cluster and
/// are reported as an error.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProbeTopology;

impl TopologySource for ProbeTopology {
    fn discover<'a>(&'a self, config: &'a PoolConfig) -> BoxFuture<'a, Result<Vec<Member>>> {
        Box::pin(async move {
            let probes = join_all(config.nodes.iter().map(|addr| async move {
                let pg = config.pg_config(addr);
                let client = connect(&pg, addr, config.connect_timeout).await?;
                probe(&client, addr, config.connect_timeout).await
            }))
            .await;
            members_from_probes(&config.nodes, probes)
        })
    }
}

/// Turns probe results into members: fails when no node answered (with
/// each node's reason) or when credentials are wrong.
pub(crate) fn members_from_probes(
    nodes: &[NodeAddr],
    probes: Vec<Result<Probe>>,
) -> Result<Vec<Member>> {
    if let Some(auth) = probes
        .iter()
        .filter_map(|p| p.as_ref().err())
        .find(|e| e.kind() == ErrorKind::Auth)
    {
        return Err(Error::new(ErrorKind::Auth, auth.to_string()));
    }
    if !probes.is_empty() && probes.iter().all(Result::is_err) {
        let reasons: Vec<String> = probes
            .iter()
            .filter_map(|p| p.as_ref().err().map(ToString::to_string))
            .collect();
        return Err(Error::new(
            ErrorKind::Connect,
            format!(
                "no node of the cluster could be reached: {}: check that the servers run and the hosts and ports are right",
                reasons.join("; ")
            ),
        ));
    }
    let answered: Vec<Option<Probe>> = probes.iter().map(|p| p.as_ref().ok().copied()).collect();
    let primary = choose_primary(nodes, &answered)?;
    Ok(nodes
        .iter()
        .zip(&answered)
        .enumerate()
        .map(|(i, (addr, p))| Member {
            addr: addr.clone(),
            role: match p {
                _ if Some(i) == primary => Role::Primary,
                Some(p) if p.in_recovery => Role::Replica,
                _ => Role::Unknown,
            },
        })
        .collect())
}

/// The writable node, if any; of several, the one on the highest
/// timeline.
pub(crate) fn choose_primary(
    nodes: &[NodeAddr],
    probes: &[Option<Probe>],
) -> Result<Option<usize>> {
    let writable: Vec<(usize, u32)> = probes
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            p.filter(Probe::writable)
                .map(|p| (i, p.timeline.unwrap_or(0)))
        })
        .collect();
    let Some(&(best, timeline)) = writable.iter().max_by_key(|(_, tl)| *tl) else {
        return Ok(None);
    };
    let rivals: Vec<String> = writable
        .iter()
        .filter(|&&(i, tl)| i != best && tl == timeline)
        .map(|&(i, _)| nodes[i].to_string())
        .collect();
    if !rivals.is_empty() {
        return Err(Error::config(format!(
            "{} and {} both accept writes on timeline {timeline}: they are not one cluster; list only the nodes of one cluster",
            nodes[best],
            rivals.join(", ")
        )));
    }
    Ok(Some(best))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgkeel_core::Lsn;

    fn node(i: u16) -> NodeAddr {
        NodeAddr::new("h", 5000 + i)
    }

    fn primary(tl: u32) -> Probe {
        Probe {
            in_recovery: false,
            read_only: false,
            position: Some(Lsn(10)),
            timeline: Some(tl),
        }
    }

    const STANDBY: Probe = Probe {
        in_recovery: true,
        read_only: true,
        position: Some(Lsn(10)),
        timeline: None,
    };

    #[test]
    fn roles_from_probes() -> Result<()> {
        let nodes = [node(0), node(1), node(2), node(3)];
        let fenced = Probe {
            read_only: true,
            ..primary(1)
        };
        let members = members_from_probes(
            &nodes,
            vec![
                Ok(primary(1)),
                Ok(STANDBY),
                Err(Error::new(ErrorKind::Connect, "refused")),
                Ok(fenced),
            ],
        )?;
        let roles: Vec<Role> = members.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [Role::Primary, Role::Replica, Role::Unknown, Role::Unknown]
        );
        Ok(())
    }

    #[test]
    fn newest_timeline_wins_and_ties_are_refused() {
        let nodes = [node(0), node(1), node(2)];
        let chosen = choose_primary(&nodes, &[Some(primary(1)), Some(primary(2)), Some(STANDBY)]);
        assert_eq!(chosen.ok(), Some(Some(1)));
        let tie = choose_primary(&nodes, &[Some(primary(3)), Some(primary(3)), None]);
        assert!(tie.is_err_and(|e| e.to_string().contains("not one cluster")));
        assert_eq!(
            choose_primary(&nodes, &[Some(STANDBY), None, None]).ok(),
            Some(None)
        );
    }

    #[test]
    fn nobody_answering_lists_every_reason() {
        let nodes = [node(0), node(1)];
        let e = members_from_probes(
            &nodes,
            vec![
                Err(Error::new(ErrorKind::Connect, "a refused")),
                Err(Error::new(ErrorKind::Connect, "b timed out")),
            ],
        );
        assert!(e.is_err_and(|e| {
            let m = e.to_string();
            e.kind() == ErrorKind::Connect && m.contains("a refused") && m.contains("b timed out")
        }));
    }

    #[test]
    fn bad_credentials_win_over_everything() {
        let nodes = [node(0), node(1)];
        let e = members_from_probes(
            &nodes,
            vec![Ok(primary(1)), Err(Error::new(ErrorKind::Auth, "password"))],
        );
        assert!(e.is_err_and(|e| e.kind() == ErrorKind::Auth));
    }
}
