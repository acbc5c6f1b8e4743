//! `pgkeel export compose|systemd`: reads the configuration, renders the
//! deployment files (`crate::export`) and writes them with the secrets and
//! binaries they need.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use pgkeel_cluster::Layout;
use pgkeel_cluster::etcd_pki::{files, generate_pki};
use pgkeel_cluster::skeleton::{
    SECRET_FILES, check_secrets, generate_etcd_secrets, required_secrets,
};
use pgkeel_core::Config;
use pgkeel_core::config::multi_host::ETCD_USER;
use pgkeel_core::config::{ConfigSources, load};
use pgkeel_pg::OsUser;

use crate::export::plan::{DEFAULT_PUBLISH_BASE, DEFAULT_SUBNET, Subnet, plan};
use crate::export::{compose, container_config, dockerfile, systemd};

/// What to export.
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// A Dockerfile and a docker-compose.yml running the cluster on one
    /// Docker host: one container per node (its agent, PostgreSQL and etcd
    /// member) and the proxy.
    ///
    /// Writes into DIR: Dockerfile, .dockerignore, docker-compose.yml, the
    /// containers' pgkeel.toml (node addresses rewritten to static
    /// addresses on the compose network), secrets/ (copied from the
    /// config's secrets directory; compose mounts them at /run/secrets)
    /// and bin/ (this pgkeel and the pgkeel-proxy beside it). Then:
    /// `cd DIR && docker-compose up -d --build`; set BASE_IMAGE to build
    /// from a local image that has PostgreSQL and etcd already.
    Compose(ComposeArgs),
    /// systemd units for one host: its agent, its etcd member (when the
    /// node is one of `etcd.members`) and a proxy.
    ///
    /// Writes pgkeel-agent.service, pgkeel-etcd.service and
    /// pgkeel-proxy.service into DIR. Copy them to /etc/systemd/system on
    /// that host, the config and its secrets/ to --installed-config's
    /// directory, then `systemctl daemon-reload && systemctl enable --now
    /// pgkeel-agent pgkeel-etcd`.
    Systemd(SystemdArgs),
}

/// Flags of `pgkeel export compose`.
#[derive(Debug, Args)]
pub struct ComposeArgs {
    /// The cluster's configuration (`pgkeel init --node ...` wrote it; its
    /// secrets/ directory is read too).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// Directory to write into (created if missing).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: PathBuf,
    /// First host port: node i is published on PORT+i, the proxy on
    /// PORT+1000.
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_PUBLISH_BASE)]
    pub publish_base: u16,
    /// The compose network (IPv4); the proxy gets host number 10, the
    /// nodes 11, 12, ... It is added to `access.networks`.
    #[arg(long, value_name = "CIDR", default_value = DEFAULT_SUBNET)]
    pub subnet: String,
    /// Overwrite files in a directory that already has an export.
    #[arg(long)]
    pub force: bool,
}

/// Flags of `pgkeel export systemd`.
#[derive(Debug, Args)]
pub struct SystemdArgs {
    /// The cluster's configuration.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// The node this host runs.
    #[arg(long, value_name = "NAME")]
    pub node: String,
    /// Directory to write the units into (created if missing).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: PathBuf,
    /// Where the pgkeel executable is on the host (pgkeel-proxy beside it).
    #[arg(long, value_name = "PATH", default_value = "/usr/local/bin/pgkeel")]
    pub binary: String,
    /// Where the configuration will be on the host (its secrets/ beside it).
    #[arg(long, value_name = "PATH", default_value = "/etc/pgkeel/pgkeel.toml")]
    pub installed_config: String,
}

/// Runs `pgkeel export ...`.
pub fn run(command: &ExportCommand) -> Result<()> {
    match command {
        ExportCommand::Compose(args) => export_compose(args),
        ExportCommand::Systemd(args) => export_systemd(args),
    }
}

/// The file's text and the configuration it loads to (the file alone: no
/// environment, so an export does not depend on the shell it ran in).
fn read_config(path: &Path) -> Result<(String, Config)> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read {} (write one with `pgkeel init --node NAME=HOST ...`)",
            path.display()
        )
    })?;
    let config = load(&ConfigSources {
        file: Some((path.display().to_string(), text.clone())),
        ..Default::default()
    })?;
    Ok((text, config))
}

fn export_compose(args: &ComposeArgs) -> Result<()> {
    let (text, config) = read_config(&args.config)?;
    let subnet = Subnet::parse(&args.subnet)?;
    let plan = plan(&config, subnet, args.publish_base)?;
    let container = container_config::container_config(&text, &plan)?;
    let container_parsed = load(&ConfigSources {
        file: Some(("the container configuration".into(), container.clone())),
        ..Default::default()
    })?;
    let secret_names = required_secrets(&container_parsed);
    let compose_yml = compose::compose_file(&plan, &secret_names);
    let secrets = secrets_source(&args.config, &config)?;
    check_secrets(&secrets, &SECRET_FILES)?;
    let exe = std::env::current_exe().context("cannot locate the running pgkeel executable")?;
    let proxy = exe.with_file_name("pgkeel-proxy");
    if !proxy.is_file() {
        bail!(
            "{} is missing: the image needs both executables; build both (`cargo build --release -p pgkeel`) and run this pgkeel from beside them",
            proxy.display()
        );
    }

    let out = &args.output;
    if out.join("docker-compose.yml").exists() && !args.force {
        bail!(
            "{} already holds an export: pass --force to overwrite it (volumes of a running cluster are kept by Docker)",
            out.display()
        );
    }
    make_dir(out, 0o755)?;
    write(&out.join("Dockerfile"), &dockerfile::dockerfile(), 0o644)?;
    write(
        &out.join(".dockerignore"),
        dockerfile::dockerignore(),
        0o644,
    )?;
    write(&out.join("docker-compose.yml"), &compose_yml, 0o644)?;
    write(&out.join("pgkeel.toml"), &container, 0o644)?;
    let bin = out.join("bin");
    make_dir(&bin, 0o755)?;
    copy(&exe, &bin.join("pgkeel"), 0o755)?;
    copy(&proxy, &bin.join("pgkeel-proxy"), 0o755)?;
    let secrets_out = out.join("secrets");
    make_dir(&secrets_out, 0o700)?;
    for name in SECRET_FILES {
        copy(&secrets.join(name), &secrets_out.join(name), 0o600)?;
    }
    // etcd's certificates name the containers' addresses: made anew for
    // them (the passwords are kept when the source has them).
    for name in [files::PASSWORD, files::ROOT_PASSWORD] {
        if secrets.join(name).is_file() {
            copy(&secrets.join(name), &secrets_out.join(name), 0o600)?;
        }
    }
    let hosts: Vec<String> = plan
        .nodes
        .iter()
        .flat_map(|n| [n.ip.to_string(), n.name.clone()])
        .collect();
    let pki = generate_pki(&plan.cluster, &hosts, ETCD_USER)?;
    for name in [
        files::CA_CERT,
        files::CA_KEY,
        files::SERVER_CERT,
        files::SERVER_KEY,
        files::CLIENT_CERT,
        files::CLIENT_KEY,
    ] {
        let _ = std::fs::remove_file(secrets_out.join(name));
    }
    generate_etcd_secrets(&secrets_out, &OsUser::current()?, Some(&pki), true)?;
    let ports: Vec<String> = plan
        .nodes
        .iter()
        .map(|n| format!("{} {}", n.name, n.published))
        .collect();
    say!(
        "wrote {dir}: Dockerfile, docker-compose.yml, pgkeel.toml, secrets/, bin/ ({n} nodes on {subnet}; published: {ports}, proxy {proxy_port}).\n\
         Start it:  cd {dir} && docker-compose up -d --build\n\
         (BASE_IMAGE=<image with PostgreSQL 15 and etcd> builds without downloading packages.)",
        dir = out.display(),
        n = plan.nodes.len(),
        ports = ports.join(", "),
        proxy_port = plan.proxy_published,
    );
    Ok(())
}

fn export_systemd(args: &SystemdArgs) -> Result<()> {
    let (_, config) = read_config(&args.config)?;
    let Some(node) = config.node(&args.node) else {
        let names: Vec<&str> = config.nodes.iter().map(|n| n.name.as_str()).collect();
        bail!(
            "node `{}` is not in {}; its nodes are: {}",
            args.node,
            args.config.display(),
            names.join(", ")
        );
    };
    if config.cluster.data_dir.is_relative() {
        bail!(
            "cluster.data_dir `{}` is relative: a unit has no working directory to resolve it against; set an absolute path (e.g. /var/lib/pgkeel) in {}",
            config.cluster.data_dir.display(),
            args.config.display()
        );
    }
    let layout = Layout::new(&config.cluster.data_dir)
        .with_context(|| format!("bad data_dir {}", config.cluster.data_dir.display()))?;
    let etcd_member = config.etcd_members().iter().any(|n| n.name == node.name);
    let spec = systemd::SystemdSpec {
        cluster: config.cluster.name.clone(),
        node: node.name.to_string(),
        etcd_member,
        binary: args.binary.clone(),
        config: args.installed_config.clone(),
        data_dir: layout.data_dir(node.name.as_str()).display().to_string(),
    };
    let units = systemd::units(&spec);
    make_dir(&args.output, 0o755)?;
    for unit in &units {
        write(&args.output.join(unit.name), &unit.text, 0o644)?;
    }
    let names: Vec<&str> = units.iter().map(|u| u.name).collect();
    let enable: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| *n != systemd::PROXY_UNIT)
        .collect();
    say!(
        "wrote {} into {}.\n\
         On the host of {}: copy them to /etc/systemd/system/, the config to {} with its secrets/ beside it, then\n\
         \x20 systemctl daemon-reload && systemctl enable --now {}\n\
         (and `systemctl enable --now {}` where a proxy should run).",
        names.join(", "),
        args.output.display(),
        spec.node,
        args.installed_config,
        enable.join(" "),
        systemd::PROXY_UNIT,
    );
    Ok(())
}

/// The configuration's secrets directory on this machine.
fn secrets_source(config_path: &Path, config: &Config) -> Result<PathBuf> {
    let Some(dir) = &config.cluster.secrets_dir else {
        bail!(
            "{} names no cluster.secrets_dir: the containers need the shared secrets `pgkeel init --node ...` writes beside the config",
            config_path.display()
        );
    };
    if dir.is_absolute() {
        return Ok(dir.clone());
    }
    let base = config_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok(base.join(dir))
}

fn make_dir(dir: &Path, mode: u32) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", dir.display()))
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    // Replace, not overwrite in place: a running binary cannot be written.
    let _ = std::fs::remove_file(to);
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", to.display()))
}
