//! Command-line interface: every command and flag, with help that explains.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// pgkeel: PostgreSQL streaming replication, production-grade, in one command.
///
/// `pgkeel up` creates a primary and its streaming replicas on this machine
/// (no config needed: 3 nodes on ports 5432-5434 under ./pgkeel-data) and
/// returns once every replica streams. `pgkeel status` shows roles, WAL
/// positions, lag and slots; `pgkeel url` prints a connection URL.
#[derive(Debug, Parser)]
#[command(
    name = "pgkeel",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every command that works on a cluster.
#[derive(Debug, Args, Clone)]
pub struct Target {
    /// Configuration file (see `pgkeel init`). Default: ./pgkeel.toml if it
    /// exists, else built-in defaults.
    #[arg(
        long,
        short = 'c',
        env = "PGKEEL_CONFIG",
        value_name = "FILE",
        global = true
    )]
    pub config: Option<PathBuf>,
    /// The cluster's data root (overrides `cluster.data_dir`). Default:
    /// ./pgkeel-data.
    #[arg(
        long,
        short = 'd',
        env = "PGKEEL_DIR",
        value_name = "DIR",
        global = true
    )]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write an annotated pgkeel.toml listing every setting with its default;
    /// with --node, a multi-host cluster's config and its secrets.
    ///
    /// `pgkeel init --node pg1=10.0.0.11 --node pg2=10.0.0.12 --node
    /// pg3=10.0.0.13` writes pgkeel.toml (the nodes, one etcd member per
    /// host unless --etcd-endpoints names an existing etcd) and a secrets/
    /// directory beside it (0700, files 0600: passwords and the API
    /// token). Copy both to every host, then run `pgkeel agent --config
    /// pgkeel.toml --node NAME` on each.
    Init {
        /// Where to write it.
        #[arg(long, short = 'o', default_value = "pgkeel.toml")]
        output: PathBuf,
        /// Overwrite an existing file (existing secrets are kept).
        #[arg(long)]
        force: bool,
        /// A node of a multi-host cluster: NAME=HOST or NAME=HOST:PORT
        /// (PostgreSQL port, default 5432). Repeat per node; the first is
        /// preferred as the bootstrap primary only by chance: any may win.
        #[arg(long = "node", value_name = "NAME=HOST[:PORT]")]
        nodes: Vec<String>,
        /// Use an existing etcd (comma-separated client URLs) instead of
        /// one member per node host.
        #[arg(long, value_name = "URL,...", value_delimiter = ',')]
        etcd_endpoints: Vec<String>,
        /// Cluster name (PostgreSQL's cluster_name, etcd namespace).
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Data root on every host (default /var/lib/pgkeel).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Create the cluster (or start a stopped one) and wait until every
    /// replica streams.
    ///
    /// On a new data root: initdb with checksums, SCRAM roles with generated
    /// passwords, one slot per replica, replicas cloned with pg_basebackup,
    /// synchronous_standby_names set for the mode. On an existing cluster:
    /// starts what is stopped, re-clones a replica whose clone was
    /// interrupted, and changes nothing when all is running.
    Up {
        #[command(flatten)]
        target: Target,
        /// Number of replicas (generated nodes only).
        #[arg(long, value_name = "N")]
        replicas: Option<usize>,
        /// Replication mode: async (commits never wait), sync (FIRST n),
        /// quorum (ANY n, the default).
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        /// Standbys that must confirm each commit in sync/quorum mode.
        #[arg(long, value_name = "N")]
        sync_count: Option<usize>,
        /// First port; nodes take consecutive ports (generated nodes only).
        #[arg(long, value_name = "PORT")]
        base_port: Option<u16>,
        /// Print the resulting status as JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Only PostgreSQL: no etcd and no agents (no automatic failover).
        #[arg(long)]
        no_ha: bool,
        /// Port of the pooling proxy (default: first node's port + 1000,
        /// i.e. 6432; its admin endpoint takes the next port).
        #[arg(long, value_name = "PORT", conflicts_with = "no_proxy")]
        proxy_port: Option<u16>,
        /// Do not start the pooling proxy.
        #[arg(long)]
        no_proxy: bool,
    },
    /// Stop every node cleanly (primary first, so replicas get all its WAL).
    Down {
        #[command(flatten)]
        target: Target,
    },
    /// Stop every node and delete the cluster's data root.
    Destroy {
        #[command(flatten)]
        target: Target,
        /// Required: confirms that all data of the cluster is to be deleted.
        #[arg(long)]
        yes: bool,
    },
    /// Show each node's role, process, timeline, WAL positions, lag, sync
    /// state and WAL receiver, and the primary's replication slots.
    Status {
        #[command(flatten)]
        target: Target,
        /// Machine-readable JSON (one document; one line per refresh with
        /// --watch).
        #[arg(long)]
        json: bool,
        /// Refresh until interrupted.
        #[arg(long, short = 'w')]
        watch: bool,
        /// Seconds between refreshes with --watch.
        #[arg(long, default_value_t = 2.0, value_name = "SECONDS")]
        interval: f64,
    },
    /// Run the HA agent of one node (started by `pgkeel up`; on each host
    /// of a multi-host cluster, run it yourself).
    ///
    /// On a host with an empty data directory the agent bootstraps its
    /// node: the first agent to claim the cluster in etcd runs initdb, the
    /// others wait and clone from the leader. Then it supervises the node's
    /// PostgreSQL, publishes its state in etcd, holds or contends for the
    /// leader lease, fails over, fences, rejoins, and serves the REST
    /// health API on the node's `api_port`. Data of another cluster is
    /// refused, and nothing is touched.
    Agent {
        #[command(flatten)]
        target: Target,
        /// The node this agent runs for (a `[[nodes]]` name).
        #[arg(long, value_name = "NAME")]
        node: String,
        /// Also run this host's etcd member (when the node is one of
        /// `etcd.members`) in the agent's process: one process per host,
        /// as in a container.
        #[arg(long)]
        with_etcd: bool,
        /// On SIGTERM/SIGINT, stop PostgreSQL cleanly (fast shutdown: the
        /// standbys get the last WAL) before leaving, as a container or a
        /// unit whose processes all end with it needs. Without it the
        /// agent leaves PostgreSQL running (`pgkeel up`/`down` stop it).
        #[arg(long)]
        stop_postgres: bool,
    },
    /// Run and supervise this host's etcd member (started by `pgkeel up`;
    /// a systemd unit on multi-host clusters).
    #[command(hide = true)]
    EtcdSupervisor {
        #[command(flatten)]
        target: Target,
        /// The node whose host runs the member (default: the first member).
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
    },
    /// Planned change of primary with no data loss: the primary stops
    /// cleanly once the target has caught up, the target is promoted.
    /// Reports how long writes were unavailable.
    Switchover {
        #[command(flatten)]
        target: Target,
        /// The replica to promote (default: the most advanced one).
        #[arg(long, value_name = "NODE")]
        to: Option<String>,
    },
    /// Manual failover to a node when there is no healthy leader.
    Failover {
        #[command(flatten)]
        target: Target,
        /// The node to promote.
        #[arg(long, value_name = "NODE")]
        to: String,
    },
    /// Make a standby cluster (`[standby_cluster]`) a primary cluster, after
    /// the cluster it follows is lost: its leader is promoted and takes
    /// writes. Keep the old primary cluster from taking writes yourself.
    PromoteCluster {
        #[command(flatten)]
        target: Target,
    },
    /// Make this cluster follow another (a standby cluster): its leader
    /// stops taking writes, is rewound onto the other cluster's history (or
    /// cloned from it) and streams from it; its members cascade. For
    /// failing back after `promote-cluster` elsewhere.
    DemoteCluster {
        #[command(flatten)]
        target: Target,
        /// Address of the other cluster's primary (replication connections).
        #[arg(long)]
        host: String,
        /// Its port.
        #[arg(long)]
        port: u16,
    },
    /// Maintenance mode: agents keep publishing but take no automatic action.
    Pause {
        #[command(flatten)]
        target: Target,
    },
    /// Leave maintenance mode.
    Resume {
        #[command(flatten)]
        target: Target,
    },
    /// Finish removing a node: drop its replication slot on the primary and
    /// its keys in etcd.
    ///
    /// First take it out of `[[nodes]]` in the config on every host and
    /// restart their agents one at a time (PostgreSQL keeps running), and
    /// stop the node's agent and PostgreSQL; refused otherwise, saying
    /// which step is missing.
    Remove {
        #[command(flatten)]
        target: Target,
        /// The node to remove.
        node: String,
    },
    /// Take a backup now (`pgkeel backup [--full|--diff|--incr]`) or list
    /// the backups (`pgkeel backup list`).
    ///
    /// Needs a repository in `[backup]`. A backup reads its files from the
    /// streaming replica furthest along (the primary only starts and stops
    /// it) unless `backup.from = "primary"` or --from-primary; pgBackRest
    /// expires backups beyond `backup.retention_full` after each one.
    Backup(crate::cmd_backup::BackupArgs),
    /// Point-in-time recovery into a new cluster beside the source:
    /// `pgkeel restore --to latest|TIME|LSN --dir NEW [--from LABEL]`.
    ///
    /// Archives the source primary's newest WAL, restores the newest
    /// backup that ended before the target (or --from), replays WAL to the
    /// target and promotes, gives the copy a system identifier of its own
    /// (no agent, replica or backup stanza can mistake it for the source),
    /// then brings it up as a cluster: the same nodes, settings, passwords
    /// and repository, its own name, ports, etcd keys and stanza. The
    /// source keeps running, untouched.
    Restore(crate::cmd_restore::RestoreArgs),
    /// Manage the cluster's secrets.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Print a libpq connection URL: `psql "$(pgkeel url)"`.
    ///
    /// Default: the current primary, as the application role.
    Url {
        #[command(flatten)]
        target: Target,
        /// A specific node.
        #[arg(long, value_name = "NAME", conflicts_with_all = ["primary", "replica", "proxy"])]
        node: Option<String>,
        /// The node currently running as primary (the default).
        #[arg(long, conflicts_with_all = ["replica", "proxy"])]
        primary: bool,
        /// The pooling proxy: reads go to replicas, writes to the primary,
        /// through failovers (what applications should use).
        #[arg(long, conflicts_with = "replica")]
        proxy: bool,
        /// A running, streaming replica.
        #[arg(long)]
        replica: bool,
        /// The superuser's credentials (database `postgres`) instead of the
        /// application role's.
        #[arg(long)]
        superuser: bool,
    },
    /// Run the pooling proxy that sends reads to replicas and everything
    /// else to the primary (PostgreSQL protocol; default port 6432).
    ///
    /// `pgkeel up` starts one; run more yourself. Settings come from the
    /// cluster's `[proxy]` section, flags override them; SIGHUP re-reads
    /// the section and the secrets without dropping clients.
    Proxy(crate::cmd_proxy::ProxyArgs),
    /// Write deployment files for the cluster a configuration describes:
    /// `compose` (Dockerfile + docker-compose.yml, tested on Docker) or
    /// `systemd` (units for one host).
    #[command(subcommand)]
    Export(crate::cmd_export::ExportCommand),
}

/// `pgkeel secrets ...`.
#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Give a role a new generated password: set on the primary (only a
    /// SCRAM verifier crosses the wire), written into the secrets,
    /// picked up by the agents within a loop and by this host's proxy
    /// (SIGHUP). On a multi-host cluster, copy the new file to every host.
    Rotate {
        #[command(flatten)]
        target: Target,
        /// `app`, `replication`, `superuser`, or the role's name.
        role: String,
    },
}

/// `--mode` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// Commits never wait for standbys.
    Async,
    /// FIRST n (...): the first n healthy standbys confirm each commit.
    Sync,
    /// ANY n (...): any n standbys confirm each commit.
    Quorum,
}

impl ModeArg {
    /// The configuration value.
    pub fn as_str(self) -> &'static str {
        match self {
            ModeArg::Async => "async",
            ModeArg::Sync => "sync",
            ModeArg::Quorum => "quorum",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn every_command_and_flag_is_consistent() {
        // Duplicate names, conflicting global flags, bad defaults.
        Cli::command().debug_assert();
    }
}
