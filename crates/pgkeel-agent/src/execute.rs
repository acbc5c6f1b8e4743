//! Carrying out the decisions of `pgkeel_ha::decide`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pgkeel_cluster::Cluster;
use pgkeel_cluster::archive_flush::flush_archive_on;
use pgkeel_cluster::layout::Secret;
use pgkeel_cluster::render::{NodeRole, standby_source_node};
use pgkeel_cluster::replica::ReplicaSource;
use pgkeel_core::NodeConfig;
use pgkeel_core::config::STANDBY_SOURCE;
use pgkeel_dcs::{ClusterView, Dcs, HistoryEntry, Optime, SyncState};
use pgkeel_ha::Action;
use pgkeel_pg::pgctl::{self, StopMode, running_pid};
use pgkeel_pg::probe::{NodeConn, connect_tcp};
use pgkeel_pg::secrets::read_password;

use crate::AgentError;
use crate::observe::Observation;
use crate::shared::Shared;

/// Milliseconds since the Unix epoch, for DCS records.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Stops the local postmaster immediately (SIGQUIT: no more commits, crash
/// recovery at next start), escalating to SIGKILL. Used for fencing: it
/// must work even when nothing else does. True when no postmaster runs
/// there any more (what allows telling others this node is fenced).
pub async fn fence(cluster: &Cluster, node: &str) -> bool {
    let data = cluster.layout.data_dir(node);
    let Some(pid) = running_pid(&data) else {
        return true;
    };
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    let _ = kill(Pid::from_raw(raw), Signal::SIGQUIT);
    let start = Instant::now();
    while running_pid(&data) == Some(pid) {
        if start.elapsed() > Duration::from_secs(3) {
            let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
        }
        if start.elapsed() > Duration::from_secs(6) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running_pid(&data).is_none()
}

/// Everything an action needs.
pub struct Context<'a> {
    /// The cluster.
    pub cluster: &'a Cluster,
    /// This node.
    pub node: &'a NodeConfig,
    /// etcd.
    pub dcs: &'a Dcs,
    /// Agent state.
    pub shared: &'a Shared,
    /// The view the decision was made on.
    pub view: &'a ClusterView,
    /// The local observation it was made on.
    pub obs: &'a Observation,
}

impl Context<'_> {
    fn name(&self) -> &str {
        self.node.name.as_str()
    }

    fn data(&self) -> std::path::PathBuf {
        self.cluster.layout.data_dir(self.name())
    }

    fn other(&self, name: &str) -> Result<&NodeConfig, AgentError> {
        Ok(self.cluster.node(name)?)
    }

    /// The node a standby streams from: a member, or the primary cluster a
    /// standby cluster's leader follows.
    fn upstream(&self, name: &str) -> Result<NodeConfig, AgentError> {
        if name == STANDBY_SOURCE {
            return crate::runner::following(&self.cluster.config, self.view)
                .and_then(standby_source_node)
                .ok_or_else(|| {
                    AgentError::Refused(
                        "asked to follow the primary cluster, but this cluster follows none ([standby_cluster], demote-cluster)"
                            .into(),
                    )
                });
        }
        Ok(self.other(name)?.clone())
    }

    /// A superuser session on another member over TCP.
    async fn connect_member(&self, member: &NodeConfig) -> Result<NodeConn, AgentError> {
        let password = read_password(&self.cluster.layout.password_file(Secret::Superuser))?;
        Ok(connect_tcp(
            member.name.as_str(),
            &member.host,
            member.port,
            &self.cluster.superuser,
            &password,
            Duration::from_secs(5),
        )
        .await?)
    }

    async fn start(&self) -> Result<(), AgentError> {
        let data = self.data();
        if running_pid(&data).is_some() {
            return Ok(()); // still starting up: the next loop sees it
        }
        self.cluster.ensure_node_dirs(self.name())?;
        pgctl::start(
            &self.cluster.runner,
            self.name(),
            &data,
            &self.cluster.layout.log_file(self.name()),
        )
        .await?;
        Ok(())
    }

    /// Runs one action.
    pub async fn run(&self, action: &Action) -> Result<(), AgentError> {
        let cluster = self.cluster;
        let name = self.name();
        match action {
            Action::Wait(_) => {}
            Action::Fence => {
                self.shared.set_leader(false);
                let _ = fence(cluster, name).await;
            }
            Action::AcquireLeader => {
                let Some(lease) = self.shared.valid_lease() else {
                    return Err(AgentError::Refused(
                        "no valid lease to take the leader key with".into(),
                    ));
                };
                if self.dcs.try_acquire_leader(name, lease).await? {
                    self.shared.set_leader(true);
                    let reason = if self.view.switchover.is_some() {
                        "switchover"
                    } else if self.view.failover.is_some() {
                        "manual failover"
                    } else if self.view.history.is_empty() {
                        "bootstrap"
                    } else {
                        "failover"
                    };
                    let lsn = self.obs.member.wal_position();
                    self.dcs
                        .append_history(HistoryEntry {
                            leader: name.to_string(),
                            timeline: self.obs.member.timeline,
                            lsn,
                            reason: reason.into(),
                            at_ms: now_ms(),
                        })
                        .await?;
                }
            }
            Action::ReleaseLeader => {
                self.shared.set_leader(false);
                self.dcs.release_leader(name).await?;
            }
            Action::StartPrimary => self.start().await?,
            Action::StartStandby { leader } => {
                let upstream = match leader {
                    Some(l) => Some(self.upstream(l)?),
                    None => None,
                };
                cluster.write_node_config(
                    self.node,
                    &self.data(),
                    NodeRole::Standby {
                        upstream: upstream.as_ref(),
                    },
                )?;
                self.start().await?;
            }
            Action::Promote => {
                pgctl::promote(&cluster.runner, name, &self.data()).await?;
                // Sync modes: name the other members at once, so commits
                // wait for a standby from the first one on (they reconnect
                // within about a second); the loop then narrows the set.
                let repl = &cluster.config.replication;
                let others: Vec<String> = cluster
                    .nodes()
                    .iter()
                    .filter(|n| n.name != self.node.name)
                    .map(|n| n.name.to_string())
                    .collect();
                let names = if repl.mode.is_synchronous() {
                    cluster.sync_names(&others, repl.sync_count.min(others.len()))
                } else {
                    String::new()
                };
                cluster.write_node_config(
                    self.node,
                    &self.data(),
                    NodeRole::Primary { sync_names: &names },
                )?;
                if let Ok(conn) = cluster.connect(self.node).await {
                    let _ = conn.reload().await;
                }
                if cluster.config.backup.enabled() {
                    let (cluster, node) = (cluster.clone(), self.node.clone());
                    tokio::spawn(async move {
                        let name = node.name.to_string();
                        // A promoted standby cluster archives under its
                        // own stanza from now on (idempotent otherwise).
                        if let Err(e) = cluster.prepare_backup_repository(&node).await {
                            tracing_line(&format!(
                                "{name}: cannot prepare the backup repository: {e}"
                            ));
                        }
                        match cluster.archive_previous_timeline(&node).await {
                            Ok(0) => {}
                            Ok(n) => tracing_line(&format!(
                                "{name}: archived {n} segment(s) of the previous timeline that the archive lacked"
                            )),
                            Err(e) => tracing_line(&format!(
                                "{name}: cannot archive the previous timeline's last segments: {e}"
                            )),
                        }
                    });
                }
            }
            Action::Demote { clean } => {
                self.shared.set_leader(false);
                if *clean {
                    pgctl::stop(&cluster.runner, name, &self.data(), StopMode::Fast).await?;
                } else {
                    let _ = fence(cluster, name).await;
                }
            }
            Action::Rewind { leader } => self.rewind(leader).await?,
            Action::Reclone { leader } => self.reclone(leader).await?,
            Action::Repoint { leader } => {
                let upstream = self.upstream(leader)?;
                cluster.write_node_config(
                    self.node,
                    &self.data(),
                    NodeRole::Standby {
                        upstream: Some(&upstream),
                    },
                )?;
                let conn = cluster.connect(self.node).await?;
                conn.reload().await?;
            }
            Action::SetSyncStandbys { standbys, quorum } => {
                // Publish the union first so every commit acknowledged under
                // the old set stays covered, then change PostgreSQL.
                let old = self.view.sync.clone().unwrap_or_default();
                let mut union = old.standbys.clone();
                for s in standbys {
                    if !union.contains(s) {
                        union.push(s.clone());
                    }
                }
                let widened = union.len() > standbys.len();
                let union_quorum = if widened {
                    old.quorum.min(*quorum).max(1)
                } else {
                    *quorum
                };
                let since = self.obs.member.lsn;
                self.dcs
                    .put_sync(&SyncState {
                        leader: name.to_string(),
                        standbys: union,
                        quorum: union_quorum,
                        since,
                    })
                    .await?;
                let names = cluster.sync_names(standbys, *quorum);
                cluster.write_node_config(
                    self.node,
                    &self.data(),
                    NodeRole::Primary { sync_names: &names },
                )?;
                cluster.connect(self.node).await?.reload().await?;
            }
            Action::NarrowSync { standbys, quorum } => {
                let since = self.view.sync.as_ref().and_then(|s| s.since);
                self.dcs
                    .put_sync(&SyncState {
                        leader: name.to_string(),
                        standbys: standbys.clone(),
                        quorum: *quorum,
                        since,
                    })
                    .await?;
            }
            Action::EnsureSlots => {
                let conn = cluster.connect(self.node).await?;
                for member in cluster.nodes().iter().filter(|n| n.name != self.node.name) {
                    conn.ensure_physical_slot(member.name.as_str()).await?;
                }
            }
            Action::PublishOptime => {
                if let Some(lsn) = self.obs.member.lsn {
                    self.dcs
                        .put_optime(&Optime {
                            leader: name.to_string(),
                            lsn,
                            timeline: self.obs.member.timeline,
                        })
                        .await?;
                }
            }
            Action::ClearHandover => self.dcs.clear_handover().await?,
        }
        Ok(())
    }

    /// CHECKPOINT on the new primary (so its control file names the new
    /// timeline), make sure this node's slot exists there, then pg_rewind;
    /// if rewind fails, clone afresh. Ends as a running standby.
    async fn rewind(&self, leader: &str) -> Result<(), AgentError> {
        let source = self.upstream(leader)?;
        let source = &source;
        // The secrets may have changed since the agent started.
        self.cluster.write_passfiles()?;
        let conn = self.connect_member(source).await?;
        conn.client()
            .batch_execute("CHECKPOINT")
            .await
            .map_err(|e| AgentError::Refused(format!("CHECKPOINT on {leader} failed: {e}")))?;
        // The primary cluster keeps no slot for another cluster's leader.
        let member = leader != STANDBY_SOURCE;
        if member {
            conn.ensure_physical_slot(self.name()).await?;
        }
        let conninfo = format!(
            "host={} port={} user={} dbname=postgres connect_timeout=5",
            source.host, source.port, self.cluster.superuser
        );
        let rewound = pgctl::rewind(
            &self.cluster.runner,
            self.name(),
            &self.data(),
            &conninfo,
            &self.cluster.layout.superuser_passfile(),
        )
        .await;
        if let Err(e) = rewound {
            tracing_line(&format!(
                "{}: pg_rewind failed, cloning afresh: {e}",
                self.name()
            ));
            return self.reclone(leader).await;
        }
        self.cluster.write_node_config(
            self.node,
            &self.data(),
            NodeRole::Standby {
                upstream: Some(source),
            },
        )?;
        self.start().await
    }

    /// Discards this node's data and clones it from `leader`.
    async fn reclone(&self, leader: &str) -> Result<(), AgentError> {
        let source = self.upstream(leader)?;
        let source = &source;
        self.cluster.write_passfiles()?;
        let conn = self.connect_member(source).await?;
        // Another cluster: no slot of ours there, and our repository holds
        // our backups, not its. A standby cluster's leader cannot switch
        // WAL: its replicas are cloned from it.
        let member = leader != STANDBY_SOURCE;
        let repository_usable =
            member && !crate::runner::is_standby_cluster(self.cluster, self.view);
        if member {
            conn.ensure_physical_slot(self.name()).await?;
        }
        if running_pid(&self.data()).is_some() {
            let _ = fence(self.cluster, self.name()).await;
        }
        // Kept as the base of a delta restore from the repository.
        self.cluster.set_aside_for_rebuild(self.name())?;
        let from_repository = match self.cluster.backup_engine() {
            Ok(Some(_)) if repository_usable => match flush_archive_on(&conn, leader).await {
                Ok(()) => true,
                Err(e) => {
                    tracing_line(&format!(
                        "{}: the leader's newest WAL is not archived ({e}): cloning from {leader} instead of the repository",
                        self.name()
                    ));
                    false
                }
            },
            _ => false,
        };
        let built = self
            .cluster
            .ensure_replica_data(
                self.node,
                source,
                from_repository,
                std::sync::Arc::new(pgkeel_cluster::SilentProgress),
            )
            .await?;
        if let Some(ReplicaSource::Repository { label, delta }) = built {
            tracing_line(&format!(
                "{}: rebuilt from backup {label} in the repository{}; replaying the archive, then streaming from {leader}",
                self.name(),
                if delta {
                    " (delta: matching files kept)"
                } else {
                    ""
                }
            ));
        }
        self.start().await
    }
}

/// One line in the agent's log (stderr, captured into agent.log).
pub fn tracing_line(message: &str) {
    let ms = now_ms();
    eprintln!("{}.{:03} {message}", ms / 1000, ms % 1000);
}
