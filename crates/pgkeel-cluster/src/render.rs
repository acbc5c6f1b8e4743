//! Writing a node's configuration files from the cluster configuration.

use std::net::{IpAddr, ToSocketAddrs};
use std::path::Path;

use pgkeel_core::config::{STANDBY_SOURCE, StandbyClusterSection};
use pgkeel_core::mode::synchronous_standby_names;
use pgkeel_core::size::parse_pg_size;
use pgkeel_core::tuning::performance_parameters;
use pgkeel_core::{NodeConfig, NodeName};
use pgkeel_pg::conf::{ConfInput, StandbySource, render_postgresql_conf};
use pgkeel_pg::fsutil::write_owned;
use pgkeel_pg::hba::{HbaInput, render_hba, render_ident};

use crate::{Cluster, ClusterError};

/// What a node's configuration files say about its place in the cluster.
#[derive(Debug, Clone, Copy)]
pub enum NodeRole<'a> {
    /// Accepts writes; `sync_names` is its `synchronous_standby_names`.
    Primary {
        /// Rendered `synchronous_standby_names`.
        sync_names: &'a str,
    },
    /// Streams from `upstream` (`None`: read-only, following nobody yet).
    Standby {
        /// The primary it follows.
        upstream: Option<&'a NodeConfig>,
    },
}

impl Cluster {
    /// `synchronous_standby_names` naming exactly `standbys` with `quorum`.
    pub fn sync_names(&self, standbys: &[String], quorum: usize) -> String {
        let names: Vec<NodeName> = standbys
            .iter()
            .filter_map(|s| NodeName::new(s).ok())
            .collect();
        synchronous_standby_names(self.config.replication.mode, quorum, &names)
    }

    /// The node a standby follows, as recorded when it was configured.
    pub fn recorded_upstream(&self, node: &str) -> Option<String> {
        std::fs::read_to_string(self.layout.upstream_file(node))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// `synchronous_standby_names` for `primary` with every other member
    /// as a candidate.
    pub fn sync_names_for(&self, primary: &NodeConfig) -> String {
        let standbys: Vec<NodeName> = self
            .nodes()
            .iter()
            .filter(|n| n.name != primary.name)
            .map(|n| n.name.clone())
            .collect();
        let repl = &self.config.replication;
        synchronous_standby_names(repl.mode, repl.sync_count, &standbys)
    }

    /// The primary cluster a standby cluster follows (`[standby_cluster]`),
    /// as an upstream its leader can stream from (named [`STANDBY_SOURCE`]).
    pub fn standby_source(&self) -> Option<NodeConfig> {
        standby_source_node(self.config.standby_cluster.as_ref()?)
    }

    /// The `primary_conninfo` of a standby `node` following `upstream`.
    pub fn primary_conninfo(&self, node: &NodeConfig, upstream: &NodeConfig) -> String {
        format!(
            "host={} port={} user={} passfile={} application_name={} connect_timeout=5 \
             keepalives=1 keepalives_idle=5 keepalives_interval=2 keepalives_count=3",
            upstream.host,
            upstream.port,
            self.config.roles.replication,
            self.layout.replication_passfile().display(),
            node.name
        )
    }

    /// Writes `postgresql.conf`, `pg_hba.conf`, `pg_ident.conf` and the
    /// standby marker into `data` for `node` in `role`.
    pub fn write_node_config(
        &self,
        node: &NodeConfig,
        data: &Path,
        role: NodeRole<'_>,
    ) -> Result<(), ClusterError> {
        let owner = self.os_user();
        let performance =
            performance_parameters(self.memory_per_node(), self.config.tuning.max_connections);
        let socket_dir = self.layout.socket_dir(node.name.as_str());
        let standby_source;
        let (sync_names, standby) = match role {
            NodeRole::Primary { sync_names } => (sync_names, None),
            NodeRole::Standby { upstream } => {
                standby_source = StandbySource {
                    conninfo: upstream
                        .map(|u| self.primary_conninfo(node, u))
                        .unwrap_or_default(),
                    // The primary cluster keeps no slot for another
                    // cluster's leader: the archive covers what it drops.
                    slot: if upstream.is_some_and(|u| u.name.as_str() == STANDBY_SOURCE) {
                        String::new()
                    } else {
                        node.name.to_string()
                    },
                };
                ("", Some(&standby_source))
            }
        };
        let repl = &self.config.replication;
        let archive = self.archive_settings(node)?;
        let conf = render_postgresql_conf(&ConfInput {
            cluster_name: &self.config.cluster.name,
            node_name: node.name.as_str(),
            listen: &node.host,
            port: node.port,
            socket_dir: &socket_dir,
            max_connections: self.config.tuning.max_connections,
            members: self.nodes().len(),
            wal_keep_size: &repl.wal_keep_size,
            max_slot_wal_keep_size: &repl.max_slot_wal_keep_size,
            synchronous_standby_names: sync_names,
            performance: &performance,
            standby,
            archive: archive.as_ref(),
            extra: &self.config.parameters,
        });
        write_owned(&data.join("postgresql.conf"), &conf, owner, 0o600)?;
        self.write_access(data)?;
        // pg_basebackup copies the primary's auto.conf; pgkeel owns the
        // settings, so start from an empty one.
        write_owned(
            &data.join("postgresql.auto.conf"),
            "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n",
            owner,
            0o600,
        )?;
        let upstream_file = self.layout.upstream_file(node.name.as_str());
        match role {
            NodeRole::Standby { upstream: Some(u) } => {
                write_owned(&upstream_file, u.name.as_str(), owner, 0o644)?
            }
            _ => {
                if upstream_file.exists() {
                    std::fs::remove_file(&upstream_file)
                        .map_err(|e| ClusterError::io("remove", &upstream_file, e))?;
                }
            }
        }
        let signal = data.join("standby.signal");
        if standby.is_some() {
            write_owned(&signal, "", owner, 0o600)?;
        } else if signal.exists() {
            std::fs::remove_file(&signal).map_err(|e| ClusterError::io("remove", &signal, e))?;
        }
        Ok(())
    }

    /// Writes `pg_hba.conf` and `pg_ident.conf` into `data` for the
    /// current members and networks; returns whether either changed (a
    /// running server then needs a reload).
    pub fn write_access(&self, data: &Path) -> Result<bool, ClusterError> {
        let owner = self.os_user();
        let mut local_users = vec![owner.name.clone()];
        if owner.name != "root" {
            local_users.push("root".to_string());
        }
        let addresses = self.member_addresses();
        let hba_input = HbaInput {
            superuser: &self.superuser,
            local_os_users: &local_users,
            replication_role: &self.config.roles.replication,
            member_addresses: &addresses,
            networks: &self.config.access.networks,
        };
        let mut changed = false;
        for (name, text) in [
            ("pg_hba.conf", render_hba(&hba_input)),
            ("pg_ident.conf", render_ident(&hba_input)),
        ] {
            let path = data.join(name);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                write_owned(&path, &text, owner, 0o600)?;
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Every address the members resolve to: replication is accepted only
    /// from these.
    pub fn member_addresses(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = Vec::new();
        for node in self.nodes() {
            let resolved = (node.host.as_str(), node.port)
                .to_socket_addrs()
                .map(|addrs| addrs.map(|a| a.ip()).collect::<Vec<_>>())
                .unwrap_or_default();
            for ip in resolved {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
        out
    }

    /// Memory one node may use: configured, or this machine's memory shared
    /// by the nodes it runs.
    pub fn memory_per_node(&self) -> u64 {
        if let Some(bytes) = parse_pg_size(&self.config.tuning.memory) {
            return bytes;
        }
        let total = machine_memory().unwrap_or(4 << 30);
        total / self.nodes().len().max(1) as u64
    }
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `source` as an upstream a standby cluster's leader can stream from.
pub fn standby_source_node(source: &StandbyClusterSection) -> Option<NodeConfig> {
    Some(NodeConfig {
        name: NodeName::new(STANDBY_SOURCE).ok()?,
        host: source.host.clone(),
        port: source.port,
        api_port: None,
        nofailover: true,
    })
}
