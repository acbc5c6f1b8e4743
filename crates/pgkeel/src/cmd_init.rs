//! `pgkeel init --node NAME=HOST ...`: a multi-host cluster's config and
//! its secrets directory, the two things every host gets a copy of.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use pgkeel_cluster::etcd_pki::generate_pki;
use pgkeel_cluster::skeleton::{generate_etcd_secrets, generate_secrets};
use pgkeel_core::config::multi_host::{
    ETCD_USER, MultiHostSpec, parse_node_spec, render_multi_host,
};
use pgkeel_core::config::{ConfigSources, load};
use pgkeel_pg::OsUser;

/// The `init` flags of a multi-host config.
pub struct InitRequest {
    /// Where the config goes; `secrets/` goes beside it.
    pub output: PathBuf,
    /// Overwrite the config (secrets that exist are kept).
    pub force: bool,
    /// `NAME=HOST[:PORT]` per node.
    pub nodes: Vec<String>,
    /// An existing etcd.
    pub etcd_endpoints: Vec<String>,
    /// Cluster name.
    pub name: Option<String>,
    /// Data root on every host.
    pub data_dir: Option<PathBuf>,
}

/// Writes the config, validated by loading it back, then the secrets.
/// Nothing is written when the config would be invalid.
pub fn init_multi_host(req: &InitRequest) -> Result<()> {
    if req.output.exists() && !req.force {
        bail!(
            "{} already exists: pass --force to overwrite it (its secrets/ are kept)",
            req.output.display()
        );
    }
    let spec = MultiHostSpec {
        name: req.name.clone().unwrap_or_else(|| "pgkeel".into()),
        data_dir: req
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/pgkeel"))
            .display()
            .to_string(),
        nodes: req
            .nodes
            .iter()
            .map(|n| parse_node_spec(n))
            .collect::<Result<_, _>>()?,
        etcd_endpoints: req.etcd_endpoints.clone(),
    };
    let text = render_multi_host(&spec);
    load(&ConfigSources {
        file: Some((req.output.display().to_string(), text.clone())),
        ..Default::default()
    })
    .context("the nodes given do not make a valid cluster; nothing was written")?;
    let dir = req.output.parent().filter(|p| !p.as_os_str().is_empty());
    let secrets = dir.map_or_else(|| PathBuf::from("secrets"), |d| d.join("secrets"));
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&req.output, text)
        .with_context(|| format!("cannot write {}", req.output.display()))?;
    let owner = OsUser::current()?;
    generate_secrets(&secrets, &owner, "")?;
    if spec.etcd_endpoints.is_empty() {
        // Our own etcd members: TLS and authentication from the start.
        let hosts: Vec<String> = spec.nodes.iter().map(|n| n.host.clone()).collect();
        let pki = generate_pki(&spec.name, &hosts, ETCD_USER)?;
        generate_etcd_secrets(&secrets, &owner, Some(&pki), true)?;
    }
    say!(
        "wrote {} and {}/ ({} nodes; etcd TLS certificates and passwords included unless --etcd-endpoints). Copy both to every host, then on each: pgkeel agent --config {} --node NAME --with-etcd",
        req.output.display(),
        secrets.display(),
        spec.nodes.len(),
        req.output.display()
    );
    Ok(())
}
