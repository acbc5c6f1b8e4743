//! The `docker-compose.yml` of an exported cluster: one service per node
//! (its agent, which runs PostgreSQL and the node's etcd member), and the
//! proxy. Pure text; strings are written as JSON strings, which YAML reads
//! as double-quoted scalars.

use super::container_config::{CONFIG_PATH, DATA_ROOT};
use super::dockerfile::DEFAULT_BASE_IMAGE;
use super::plan::ComposePlan;

/// Compose's file format: what docker-compose 1.27+ and `docker compose`
/// both read, with secrets, static addresses and health-check start periods.
pub const COMPOSE_VERSION: &str = "3.8";
/// The compose network's name.
pub const NETWORK: &str = "pgkeel";
/// The proxy's service name.
pub const PROXY_SERVICE: &str = "proxy";
/// Seconds a node may take to initialise or clone before failed health
/// checks count.
const START_PERIOD: &str = "120s";

fn q(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The compose file for `plan`, whose services mount the secret files
/// named in `secrets` (from `./secrets/`).
pub fn compose_file(plan: &ComposePlan, secrets: &[&str]) -> String {
    let mut y = String::new();
    y.push_str(&format!(
        "# Cluster `{}` on Docker Compose, written by `pgkeel export compose`.\n\
         # Every node runs its agent, its PostgreSQL and its etcd member; the\n\
         # first agent to claim the cluster runs initdb, the others clone it.\n\
         #   docker-compose up -d --build\n\
         #   BASE_IMAGE=<local image with PostgreSQL and etcd> docker-compose up -d --build\n\
         # Nodes are published on {}, the proxy on {}.\n\
         version: {}\n\n",
        plan.cluster,
        plan.nodes
            .iter()
            .map(|n| n.published.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        plan.proxy_published,
        q(COMPOSE_VERSION),
    ));
    let build = format!(
        "    build:\n      context: .\n      args:\n        BASE_IMAGE: {}\n",
        q(&format!("${{BASE_IMAGE:-{DEFAULT_BASE_IMAGE}}}"))
    );
    let secret_list: String = secrets
        .iter()
        .map(|s| format!("      - {}\n", q(s)))
        .collect();
    y.push_str("services:\n");
    for node in &plan.nodes {
        let command = [
            "agent",
            "--config",
            CONFIG_PATH,
            "--node",
            &node.name,
            "--with-etcd",
            "--stop-postgres",
        ]
        .map(q)
        .join(", ");
        let health = format!("http://{}:{}/health", node.ip, node.api_port);
        let health = [
            "CMD",
            "curl",
            "-fsS",
            "-o",
            "/dev/null",
            "--max-time",
            "2",
            &health,
        ]
        .map(q)
        .join(", ");
        y.push_str(&format!(
            "  {name}:\n{build}    hostname: {hn}\n    command: [{command}]\n    restart: unless-stopped\n\
             \x20   networks:\n      {NETWORK}:\n        ipv4_address: {ip}\n\
             \x20   ports:\n      - {ports}\n\
             \x20   volumes:\n      - {volume}\n\
             \x20   secrets:\n{secret_list}\
             \x20   healthcheck:\n      test: [{health}]\n      interval: 2s\n      timeout: 3s\n      retries: 3\n      start_period: {START_PERIOD}\n\n",
            name = node.name,
            hn = q(&node.name),
            ip = q(&node.ip.to_string()),
            ports = q(&format!("{}:{}", node.published, node.port)),
            volume = q(&format!("{}-data:{DATA_ROOT}", node.name)),
        ));
    }
    let command = ["proxy", "--config", CONFIG_PATH].map(q).join(", ");
    let depends: String = plan
        .nodes
        .iter()
        .map(|n| format!("      - {}\n", q(&n.name)))
        .collect();
    y.push_str(&format!(
        "  {PROXY_SERVICE}:\n{build}    hostname: {hn}\n    command: [{command}]\n    restart: unless-stopped\n\
         \x20   networks:\n      {NETWORK}:\n        ipv4_address: {ip}\n\
         \x20   ports:\n      - {ports}\n\
         \x20   secrets:\n{secret_list}\
         \x20   depends_on:\n{depends}\n",
        hn = q(PROXY_SERVICE),
        ip = q(&plan.proxy_ip.to_string()),
        ports = q(&format!("{}:{}", plan.proxy_published, plan.proxy_port)),
    ));
    y.push_str(&format!(
        "networks:\n  {NETWORK}:\n    ipam:\n      config:\n        - subnet: {}\n\n",
        q(&plan.subnet.to_string())
    ));
    y.push_str("volumes:\n");
    for node in &plan.nodes {
        y.push_str(&format!("  {}-data: {{}}\n", node.name));
    }
    y.push_str("\n# Compose mounts each file at /run/secrets/<name>, keeping its mode\n# (0600): keep secrets/ private on this host.\nsecrets:\n");
    for s in secrets {
        y.push_str(&format!(
            "  {}:\n    file: {}\n",
            q(s),
            q(&format!("./secrets/{s}"))
        ));
    }
    y
}

#[cfg(test)]
mod tests {
    use super::super::plan::{DEFAULT_SUBNET, Subnet, plan};
    use super::*;
    use anyhow::Result;

    fn rendered() -> Result<String> {
        let text = "[cluster]\nname = \"prod\"\n\
            [[nodes]]\nname = \"pg1\"\nhost = \"10.0.0.11\"\nport = 5432\n\
            [[nodes]]\nname = \"pg2\"\nhost = \"10.0.0.12\"\nport = 5432\n\
            [[nodes]]\nname = \"pg3\"\nhost = \"10.0.0.13\"\nport = 5432\n";
        let config = pgkeel_core::config::load(&pgkeel_core::config::ConfigSources {
            file: Some(("in".into(), text.into())),
            ..Default::default()
        })?;
        let p = plan(&config, Subnet::parse(DEFAULT_SUBNET)?, 15432)?;
        Ok(compose_file(&p, &["superuser.password", "api.token"]))
    }

    /// The lines of a top-level block (`services:`) up to the next one.
    fn block<'a>(text: &'a str, head: &str) -> Vec<&'a str> {
        text.lines()
            .skip_while(|l| *l != head)
            .skip(1)
            .take_while(|l| l.is_empty() || l.starts_with(' '))
            .collect()
    }

    #[test]
    fn one_service_per_node_with_its_address_port_volume_and_check() -> Result<()> {
        let y = rendered()?;
        assert!(y.contains("\nversion: \"3.8\"\n"));
        let services = block(&y, "services:");
        let names: Vec<&str> = services
            .iter()
            .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.ends_with(':'))
            .copied()
            .collect();
        assert_eq!(names, ["  pg1:", "  pg2:", "  pg3:", "  proxy:"]);
        assert!(y.contains(
            "command: [\"agent\", \"--config\", \"/etc/pgkeel/pgkeel.toml\", \"--node\", \"pg2\", \"--with-etcd\", \"--stop-postgres\"]"
        ));
        assert!(y.contains("ipv4_address: \"10.89.54.12\""));
        assert!(y.contains("- \"15433:5432\""));
        assert!(y.contains("- \"16432:6432\""));
        assert!(y.contains("- \"pg3-data:/var/lib/pgkeel\""));
        assert!(y.contains("\"http://10.89.54.13:7432/health\""));
        assert!(y.contains("BASE_IMAGE: \"${BASE_IMAGE:-debian:bookworm-slim}\""));
        assert!(y.contains("command: [\"proxy\", \"--config\", \"/etc/pgkeel/pgkeel.toml\"]"));
        Ok(())
    }

    #[test]
    fn network_volumes_and_file_secrets_are_declared() -> Result<()> {
        let y = rendered()?;
        assert!(block(&y, "networks:").contains(&"        - subnet: \"10.89.54.0/24\""));
        assert_eq!(
            block(&y, "volumes:"),
            ["  pg1-data: {}", "  pg2-data: {}", "  pg3-data: {}", ""]
        );
        let secrets = block(&y, "secrets:");
        assert!(secrets.contains(&"  \"api.token\":"));
        assert!(secrets.contains(&"    file: \"./secrets/api.token\""));
        Ok(())
    }
}
