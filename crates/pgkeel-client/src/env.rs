//! Pool configuration from the replication guide's environment variables,
//! so a service deployed the guide's way needs no new settings.

use crate::{Error, NodeAddr, PoolConfig, Result};

/// Port used when a `*_PORT` variable is absent. Always 5432, unlike the
/// guide's defaults (5433/5434 for replicas reached by in-network host
/// names, where the port is 5432: one of its defects).
const DEFAULT_PORT: u16 = 5432;

/// Variables that must be set: without them the pool would silently
/// connect somewhere else than meant.
const REQUIRED: [&str; 4] = [
    "POSTGRES_MASTER_HOST",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
];

impl PoolConfig {
    /// Settings from the process environment, using the guide's variables:
    ///
    /// | variable | meaning |
    /// | --- | --- |
    /// | `POSTGRES_MASTER_HOST` (required) / `POSTGRES_MASTER_PORT` (5432) | the primary at start-up |
    /// | `POSTGRES_REPLICA1_HOST` / `POSTGRES_REPLICA1_PORT` (5432), `REPLICA2`, ... | replicas, numbered from 1 without gaps |
    /// | `POSTGRES_USER`, `POSTGRES_PASSWORD`, `POSTGRES_DB` (required) | credentials and database |
    ///
    /// A missing or malformed variable is an [`ErrorKind::Config`](crate::ErrorKind::Config)
    /// error naming it.
    pub fn from_env() -> Result<PoolConfig> {
        Self::from_env_with(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through
    /// `lookup` (for tests, or another source of settings).
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use pgkeel_client::PoolConfig;
    ///
    /// let vars = HashMap::from([
    ///     ("POSTGRES_MASTER_HOST", "db-primary"),
    ///     ("POSTGRES_REPLICA1_HOST", "db-replica1"),
    ///     ("POSTGRES_USER", "app"),
    ///     ("POSTGRES_PASSWORD", "secret"),
    ///     ("POSTGRES_DB", "app"),
    /// ]);
    /// let config = PoolConfig::from_env_with(|k| vars.get(k).map(|v| v.to_string()))?;
    /// assert_eq!(config.nodes.len(), 2);
    /// # Ok::<(), pgkeel_client::Error>(())
    /// ```
    pub fn from_env_with(lookup: impl Fn(&str) -> Option<String>) -> Result<PoolConfig> {
        let missing: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .filter(|name| {
                lookup(name).is_none_or(|v| v.trim().is_empty() && *name != "POSTGRES_PASSWORD")
            })
            .collect();
        if !missing.is_empty() {
            let plural = missing.len() > 1;
            return Err(Error::config(format!(
                "environment variable{} {} {} not set: set {} (the primary's host, the role, its password and the database; POSTGRES_MASTER_PORT and POSTGRES_REPLICA<N>_HOST/_PORT are optional)",
                if plural { "s" } else { "" },
                missing.join(", "),
                if plural { "are" } else { "is" },
                if plural { "them" } else { "it" },
            )));
        }
        let var = |name: &str| lookup(name).unwrap_or_default();
        let mut nodes = vec![node(&lookup, "POSTGRES_MASTER")?];
        for i in 1.. {
            let prefix = format!("POSTGRES_REPLICA{i}");
            if lookup(&format!("{prefix}_HOST")).is_none() {
                if lookup(&format!("{prefix}_PORT")).is_some() {
                    return Err(Error::config(format!(
                        "{prefix}_PORT is set but {prefix}_HOST is not: set {prefix}_HOST too, or unset {prefix}_PORT"
                    )));
                }
                let next = format!("POSTGRES_REPLICA{}_HOST", i + 1);
                if lookup(&next).is_some() {
                    return Err(Error::config(format!(
                        "{next} is set but {prefix}_HOST is not: number replicas from 1 without gaps"
                    )));
                }
                break;
            }
            nodes.push(node(&lookup, &prefix)?);
        }
        let config = PoolConfig {
            nodes,
            user: var("POSTGRES_USER"),
            password: Some(var("POSTGRES_PASSWORD")),
            dbname: var("POSTGRES_DB"),
            ..PoolConfig::default()
        };
        config.validate()?;
        Ok(config)
    }
}

/// `<prefix>_HOST` and `<prefix>_PORT`.
fn node(lookup: &impl Fn(&str) -> Option<String>, prefix: &str) -> Result<NodeAddr> {
    let host_var = format!("{prefix}_HOST");
    let port_var = format!("{prefix}_PORT");
    let host = lookup(&host_var).unwrap_or_default().trim().to_string();
    if host.is_empty() {
        return Err(Error::config(format!(
            "{host_var} is empty: set it to the node's host name or address"
        )));
    }
    let port = match lookup(&port_var) {
        None => DEFAULT_PORT,
        Some(text) => match text.trim().parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                return Err(Error::config(format!(
                    "{port_var}=`{text}` is not a port: set it to a number from 1 to 65535 (or unset it for 5432)"
                )));
            }
        },
    };
    Ok(NodeAddr::new(host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use std::collections::HashMap;

    fn guide() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("POSTGRES_MASTER_HOST", "postgres_master"),
            ("POSTGRES_REPLICA1_HOST", "postgres_replica1"),
            ("POSTGRES_REPLICA1_PORT", "5433"),
            ("POSTGRES_REPLICA2_HOST", "postgres_replica2"),
            ("POSTGRES_USER", "app"),
            ("POSTGRES_PASSWORD", "pw"),
            ("POSTGRES_DB", "microservices_db"),
        ])
    }

    fn load(vars: &HashMap<&str, &str>) -> Result<PoolConfig> {
        PoolConfig::from_env_with(|k| vars.get(k).map(|v| v.to_string()))
    }

    fn err(vars: &HashMap<&str, &str>) -> String {
        match load(vars) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Config);
                e.to_string()
            }
        }
    }

    #[test]
    fn guide_variables() -> Result<()> {
        let c = load(&guide())?;
        assert_eq!(
            c.nodes,
            vec![
                NodeAddr::new("postgres_master", 5432),
                NodeAddr::new("postgres_replica1", 5433),
                NodeAddr::new("postgres_replica2", 5432),
            ]
        );
        assert_eq!(c.user, "app");
        assert_eq!(c.password.as_deref(), Some("pw"));
        assert_eq!(c.dbname, "microservices_db");
        Ok(())
    }

    #[test]
    fn replicas_are_optional_and_an_empty_password_is_allowed() -> Result<()> {
        let mut vars = guide();
        vars.retain(|k, _| !k.contains("REPLICA"));
        vars.insert("POSTGRES_PASSWORD", "");
        let c = load(&vars)?;
        assert_eq!(c.nodes.len(), 1);
        assert_eq!(c.password.as_deref(), Some(""));
        Ok(())
    }

    #[test]
    fn missing_variables_are_all_named() {
        let mut vars = guide();
        vars.remove("POSTGRES_MASTER_HOST");
        vars.remove("POSTGRES_DB");
        let m = err(&vars);
        assert!(
            m.contains("POSTGRES_MASTER_HOST, POSTGRES_DB are not set"),
            "{m}"
        );
        let mut vars = guide();
        vars.insert("POSTGRES_USER", " ");
        assert!(err(&vars).contains("POSTGRES_USER is not set"));
    }

    #[test]
    fn bad_ports_and_gaps_are_named() {
        let mut vars = guide();
        vars.insert("POSTGRES_MASTER_PORT", "54x2");
        assert!(err(&vars).contains("POSTGRES_MASTER_PORT=`54x2` is not a port"));
        let mut vars = guide();
        vars.insert("POSTGRES_REPLICA1_PORT", "0");
        assert!(err(&vars).contains("POSTGRES_REPLICA1_PORT=`0`"));
        let mut vars = guide();
        vars.remove("POSTGRES_REPLICA1_HOST");
        assert!(err(&vars).contains("POSTGRES_REPLICA1_PORT is set but POSTGRES_REPLICA1_HOST"));
        let mut vars = guide();
        vars.remove("POSTGRES_REPLICA1_HOST");
        vars.remove("POSTGRES_REPLICA1_PORT");
        assert!(err(&vars).contains("without gaps"));
    }
}
