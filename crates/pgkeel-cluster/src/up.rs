//! `pgkeel up`: from nothing (or from a stopped or half-built cluster) to a
//! primary with every replica streaming in the configured mode.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::try_join_all;
use pgkeel_core::NodeConfig;
use pgkeel_pg::fsutil::{ensure_dir, write_owned};
use pgkeel_pg::pgctl::{self, initdb, is_data_dir, is_standby, running_pid};
use pgkeel_pg::secrets::{generate_password, pgpass_line, read_password};

use crate::layout::Secret;
use crate::preflight::{check_new_cluster, check_ports};
use crate::render::NodeRole;
use crate::{Cluster, ClusterError, Progress};

/// Longest wait for replicas to reach the streaming state.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Length of generated passwords.
const PASSWORD_LEN: usize = 32;

/// What `up` found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpOutcome {
    /// A new cluster was created.
    Created,
    /// Everything was already running; nothing was changed.
    AlreadyRunning,
    /// The cluster existed; these steps brought it back (started nodes,
    /// re-cloned replicas).
    Resumed(Vec<String>),
}

impl UpOutcome {
    /// The outcome once `action` (a step beyond PostgreSQL: agents, the
    /// proxy) was also done.
    pub fn with_action(self, action: String) -> UpOutcome {
        match self {
            UpOutcome::Created => UpOutcome::Created,
            UpOutcome::AlreadyRunning => UpOutcome::Resumed(vec![action]),
            UpOutcome::Resumed(mut done) => {
                done.push(action);
                UpOutcome::Resumed(done)
            }
        }
    }
}

/// Brings `cluster` up and returns only once every replica streams.
pub async fn up(cluster: &Cluster, progress: Arc<dyn Progress>) -> Result<UpOutcome, ClusterError> {
    let layout = &cluster.layout;
    let created = !layout.cluster_file().exists();
    if created {
        check_new_cluster(cluster)?;
    } else {
        let stopped = cluster
            .nodes()
            .iter()
            .filter(|n| running_pid(&layout.data_dir(n.name.as_str())).is_none());
        check_ports(stopped)?;
    }
    let mut actions = vec![];
    ensure_skeleton(cluster)?;
    let primary = current_primary(cluster)?;
    let pname = primary.name.as_str();

    if !is_data_dir(&layout.data_dir(pname)) {
        progress.step(pname, "initdb");
        init_primary(cluster, primary).await?;
        actions.push(format!("initialised {pname}"));
    }
    if start_if_stopped(cluster, primary, progress.as_ref()).await? {
        actions.push(format!("started {pname}"));
    }
    progress.step(pname, "roles, database and slots");
    prepare_primary(cluster, primary).await?;

    let standbys: Vec<&NodeConfig> = cluster
        .nodes()
        .iter()
        .filter(|n| n.name != primary.name)
        .collect();
    let results = try_join_all(standbys.iter().map(|node| {
        let progress = progress.clone();
        async move {
            let mut done = vec![];
            if cluster
                .ensure_replica_data(node, primary, progress.clone())
                .await?
            {
                done.push(format!("cloned {}", node.name));
            }
            if start_if_stopped(cluster, node, progress.as_ref()).await? {
                done.push(format!("started {}", node.name));
            }
            Ok::<_, ClusterError>(done)
        }
    }))
    .await?;
    actions.extend(results.into_iter().flatten());

    progress.step(pname, "waiting for replicas to stream");
    if apply_sync_names(cluster, primary).await? {
        actions.push(format!("set synchronous_standby_names on {pname}"));
    }
    cluster.wait_replication(primary, READY_TIMEOUT).await?;
    Ok(if created {
        UpOutcome::Created
    } else if actions.is_empty() {
        UpOutcome::AlreadyRunning
    } else {
        UpOutcome::Resumed(actions)
    })
}

/// The data root, the stored configuration and the secrets. The stored
/// configuration is written first so an interrupted `up` is resumed (and
/// `destroy` works) rather than mistaken for a foreign directory.
fn ensure_skeleton(cluster: &Cluster) -> Result<(), ClusterError> {
    let layout = &cluster.layout;
    let owner = cluster.os_user();
    ensure_dir(layout.root(), owner, 0o700)?;
    if !layout.cluster_file().exists() {
        let text = toml::to_string(&cluster.config).map_err(|e| {
            ClusterError::io(
                "serialize",
                layout.cluster_file(),
                std::io::Error::other(e.to_string()),
            )
        })?;
        let header = "# Written by `pgkeel up`: the configuration this cluster was created with.\n";
        write_owned(
            &layout.cluster_file(),
            &format!("{header}{text}"),
            owner,
            0o644,
        )?;
    }
    ensure_dir(&layout.secrets_dir(), owner, 0o700)?;
    for secret in [Secret::Superuser, Secret::Replication, Secret::App] {
        let path = layout.password_file(secret);
        if !path.exists() {
            write_owned(&path, &generate_password(PASSWORD_LEN)?, owner, 0o600)?;
        }
    }
    let passfile = layout.replication_passfile();
    if !passfile.exists() {
        let password = read_password(&layout.password_file(Secret::Replication))?;
        write_owned(
            &passfile,
            &pgpass_line(&cluster.config.roles.replication, &password),
            owner,
            0o600,
        )?;
    }
    let passfile = layout.superuser_passfile();
    if !passfile.exists() {
        let password = read_password(&layout.password_file(Secret::Superuser))?;
        write_owned(
            &passfile,
            &pgpass_line(&cluster.superuser, &password),
            owner,
            0o600,
        )?;
    }
    let token = layout.api_token_file();
    if !token.exists() {
        let value = if cluster.config.ha.api_token.is_empty() {
            generate_password(PASSWORD_LEN)?
        } else {
            cluster.config.ha.api_token.clone()
        };
        write_owned(&token, &value, owner, 0o600)?;
    }
    Ok(())
}

/// The node that holds primary data: the only one whose data directory is
/// complete and not marked as a standby; the first configured node when no
/// node has data yet.
pub fn current_primary(cluster: &Cluster) -> Result<&NodeConfig, ClusterError> {
    let layout = &cluster.layout;
    let with_data: Vec<&NodeConfig> = cluster
        .nodes()
        .iter()
        .filter(|n| is_data_dir(&layout.data_dir(n.name.as_str())))
        .collect();
    let primaries: Vec<&NodeConfig> = with_data
        .iter()
        .copied()
        .filter(|n| !is_standby(&layout.data_dir(n.name.as_str())))
        .collect();
    match (primaries.as_slice(), with_data.is_empty()) {
        ([one], _) => Ok(one),
        ([], true) => cluster.config.bootstrap_primary().ok_or_else(|| ClusterError::NoPrimary {
            detail: "the configuration lists no nodes".into(),
        }),
        ([], false) => Err(ClusterError::NoPrimary {
            detail: "every node with data is a standby (the primary's data directory is missing); restore it, or `pgkeel destroy --yes` and start over".into(),
        }),
        (many, _) => Err(ClusterError::NoPrimary {
            detail: format!(
                "{} all hold primary data; pgkeel will not start two primaries: turn all but one into standbys or destroy the cluster",
                many.iter().map(|n| n.name.to_string()).collect::<Vec<_>>().join(", ")
            ),
        }),
    }
}

/// initdb into `data.partial`, configure, then rename into place.
async fn init_primary(cluster: &Cluster, node: &NodeConfig) -> Result<(), ClusterError> {
    let name = node.name.as_str();
    cluster.discard_incomplete(name)?;
    cluster.ensure_node_dirs(name)?;
    let partial = cluster.layout.partial_dir(name);
    let pwfile = cluster.layout.password_file(Secret::Superuser);
    initdb(&cluster.runner, name, &partial, &cluster.superuser, &pwfile).await?;
    cluster.write_node_config(node, &partial, NodeRole::Primary { sync_names: "" })?;
    let data = cluster.layout.data_dir(name);
    std::fs::rename(&partial, &data).map_err(|e| ClusterError::io("rename into place", &data, e))
}

/// Starts `node` unless it runs; returns whether it was started.
async fn start_if_stopped(
    cluster: &Cluster,
    node: &NodeConfig,
    progress: &dyn Progress,
) -> Result<bool, ClusterError> {
    let name = node.name.as_str();
    let data = cluster.layout.data_dir(name);
    if running_pid(&data).is_some() {
        return Ok(false);
    }
    progress.step(name, "starting");
    cluster.ensure_node_dirs(name)?;
    pgctl::start(&cluster.runner, name, &data, &cluster.layout.log_file(name)).await?;
    Ok(true)
}

/// Roles with their generated passwords, the application database, and one
/// slot per standby. Idempotent.
async fn prepare_primary(cluster: &Cluster, primary: &NodeConfig) -> Result<(), ClusterError> {
    let conn = cluster.connect(primary).await?;
    let roles = &cluster.config.roles;
    let layout = &cluster.layout;
    let repl_password = read_password(&layout.password_file(Secret::Replication))?;
    let app_password = read_password(&layout.password_file(Secret::App))?;
    conn.ensure_login_role(&roles.replication, &repl_password, "REPLICATION")
        .await?;
    conn.ensure_login_role(
        &roles.app,
        &app_password,
        "NOSUPERUSER NOCREATEDB NOCREATEROLE",
    )
    .await?;
    conn.ensure_database(&roles.database, &roles.app).await?;
    for node in cluster.nodes().iter().filter(|n| n.name != primary.name) {
        conn.ensure_physical_slot(node.name.as_str()).await?;
    }
    Ok(())
}

/// Makes the primary's `synchronous_standby_names` match the mode. Done
/// after the replicas exist: setting it earlier would block the bootstrap's
/// own commits. Returns whether it changed anything.
async fn apply_sync_names(cluster: &Cluster, primary: &NodeConfig) -> Result<bool, ClusterError> {
    let wanted = cluster.sync_names_for(primary);
    let conn = cluster.connect(primary).await?;
    if conn.setting("synchronous_standby_names").await? == wanted {
        return Ok(false);
    }
    let data = cluster.layout.data_dir(primary.name.as_str());
    cluster.write_node_config(
        primary,
        &data,
        NodeRole::Primary {
            sync_names: &wanted,
        },
    )?;
    conn.reload().await?;
    Ok(true)
}
