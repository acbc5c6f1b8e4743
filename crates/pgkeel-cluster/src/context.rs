//! A cluster ready to be worked on: its configuration, its paths and the
//! means to run its PostgreSQL.

use std::path::Path;

use pgkeel_core::config::{ConfigSources, load};
use pgkeel_core::{Config, NodeConfig};
use pgkeel_pg::probe::{NodeConn, connect};
use pgkeel_pg::{OsUser, PgBinaries, PgError, PgRunner};

use crate::{ClusterError, Layout};

/// One cluster and the tools to drive it.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Effective configuration (as stored in `cluster.toml` once created).
    pub config: Config,
    /// Paths under the data root.
    pub layout: Layout,
    /// Runs PostgreSQL binaries as the OS user.
    pub runner: PgRunner,
    /// Superuser role name.
    pub superuser: String,
}

impl Cluster {
    /// Resolves everything the configuration leaves open (OS user,
    /// superuser, bin dir) so the stored configuration pins them: a cluster
    /// created by root for `postgres` stays `postgres`'s whoever runs pgkeel
    /// later, and a PostgreSQL upgrade does not silently switch binaries.
    pub fn prepare(mut config: Config) -> Result<Self, ClusterError> {
        let layout = Self::layout_of(&config)?;
        let me = OsUser::current()?;
        let os_user = config.os_user(&me.name, me.is_root());
        let user = OsUser::lookup(&os_user)?;
        let bins = PgBinaries::discover(config.cluster.bin_dir.as_deref())?;
        let runner = PgRunner::new(bins.clone(), user)?;
        let superuser = config.superuser(&os_user);
        config.cluster.data_dir = layout.root().to_path_buf();
        if config.cluster.secrets_dir.is_some() {
            config.cluster.secrets_dir = Some(layout.secrets_dir());
        }
        config.cluster.os_user = Some(os_user);
        config.cluster.bin_dir = Some(bins.dir().to_path_buf());
        config.roles.superuser = Some(superuser.clone());
        Ok(Cluster {
            config,
            layout,
            runner,
            superuser,
        })
    }

    /// Opens the cluster stored at `dir`.
    pub fn open(dir: &Path) -> Result<Self, ClusterError> {
        Self::prepare(Self::open_stored(dir)?.0)
    }

    /// The configuration stored at `dir` and its paths, without resolving
    /// the OS user or PostgreSQL's binaries: for readers such as the proxy
    /// that need neither (`cluster.toml` pins the users).
    pub fn open_stored(dir: &Path) -> Result<(Config, Layout), ClusterError> {
        let config = Self::stored_config(dir)?.ok_or_else(|| ClusterError::NoCluster {
            dir: dir.to_path_buf(),
        })?;
        let layout = Self::layout_of(&config)?;
        Ok((config, layout))
    }

    /// The paths a configuration names.
    pub fn layout_of(config: &Config) -> Result<Layout, ClusterError> {
        Layout::with_secrets(
            &config.cluster.data_dir,
            config.cluster.secrets_dir.as_deref(),
        )
        .map_err(|e| ClusterError::io("resolve", &config.cluster.data_dir, e))
    }

    /// The configuration stored in `dir/cluster.toml`, if there is one.
    pub fn stored_config(dir: &Path) -> Result<Option<Config>, ClusterError> {
        let layout = Layout::new(dir).map_err(|e| ClusterError::io("resolve", dir, e))?;
        let path = layout.cluster_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ClusterError::io("read", path, e)),
        };
        let mut config = load(&ConfigSources {
            file: Some((path.display().to_string(), text)),
            ..Default::default()
        })?;
        // The stored file may have been copied elsewhere: the directory it
        // sits in is the truth.
        config.cluster.data_dir = layout.root().to_path_buf();
        Ok(Some(config))
    }

    /// A superuser session on `node` over its private socket.
    pub async fn connect(&self, node: &NodeConfig) -> Result<NodeConn, PgError> {
        connect(
            node.name.as_str(),
            &self.layout.socket_dir(node.name.as_str()),
            node.port,
            &self.superuser,
        )
        .await
    }

    /// Looks up a node by name, with an error listing the valid names.
    pub fn node(&self, name: &str) -> Result<&NodeConfig, ClusterError> {
        find_node(&self.config, name)
    }

    /// The OS user PostgreSQL runs as.
    pub fn os_user(&self) -> &OsUser {
        self.runner.user()
    }

    /// Nodes in configuration order.
    pub fn nodes(&self) -> &[NodeConfig] {
        &self.config.nodes
    }
}

/// The node `name` of `config`, or an error listing the valid names.
pub fn find_node<'a>(config: &'a Config, name: &str) -> Result<&'a NodeConfig, ClusterError> {
    config.node(name).ok_or_else(|| ClusterError::UnknownNode {
        name: name.to_string(),
        known: config
            .nodes
            .iter()
            .map(|n| n.name.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}
