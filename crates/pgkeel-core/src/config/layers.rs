//! Layering: the file, then `PGKEEL_*` environment variables, then flags.
//! Layers are merged as TOML tables and deserialized once, so a bad value
//! from any layer gets the same precise error as one from the file.

use toml::{Table, Value};

use super::{Config, ConfigError, validate};

/// Sections an environment variable `PGKEEL_<SECTION>_<KEY>` may address.
const SECTIONS: [&str; 9] = [
    "cluster",
    "replication",
    "roles",
    "access",
    "tuning",
    "ha",
    "etcd",
    "proxy",
    "backup",
];

/// Short environment names kept for convenience, with the key they set.
const ALIASES: [(&str, &str, &str); 1] = [("PGKEEL_DIR", "cluster", "data_dir")];

/// Everything a configuration is built from, in increasing precedence.
#[derive(Debug, Default, Clone)]
pub struct ConfigSources {
    /// The file's name (for messages) and its text.
    pub file: Option<(String, String)>,
    /// The process environment; only `PGKEEL_*` names are looked at.
    pub env: Vec<(String, String)>,
    /// Command-line overrides as (section, key, value).
    pub overrides: Vec<(String, String, Value)>,
}

/// Builds the effective, validated configuration. Generated nodes are made
/// explicit, so the result can be stored and reloaded unchanged.
pub fn load(sources: &ConfigSources) -> Result<Config, ConfigError> {
    validate::finalize(parse(sources)?)
}

/// The merged layers exactly as written, before nodes are generated and
/// before validation: tells what the user actually asked for.
pub fn parse(sources: &ConfigSources) -> Result<Config, ConfigError> {
    let mut table = Table::new();
    if let Some((origin, text)) = &sources.file {
        // Parse the file alone first: its errors then carry line and column.
        toml::from_str::<Config>(text).map_err(|e| ConfigError::Parse {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
        table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
    }
    let mut origins = vec![];
    for (name, value) in &sources.env {
        if let Some((section, key)) = env_target(name) {
            set(&mut table, &section, &key, scalar(value));
            origins.push(name.clone());
        }
    }
    for (section, key, value) in &sources.overrides {
        set(&mut table, section, key, value.clone());
    }
    let config: Config = Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            origin: describe_origin(sources, &origins),
            message: e.message().to_string(),
        })?;
    Ok(config)
}

fn describe_origin(sources: &ConfigSources, env: &[String]) -> String {
    let mut parts = vec![];
    if let Some((origin, _)) = &sources.file {
        parts.push(origin.clone());
    }
    if !env.is_empty() {
        parts.push(format!("environment ({})", env.join(", ")));
    }
    if !sources.overrides.is_empty() {
        parts.push("command-line flags".into());
    }
    if parts.is_empty() {
        "defaults".into()
    } else {
        parts.join(" + ")
    }
}

/// Maps `PGKEEL_REPLICATION_MODE` to (`replication`, `mode`).
fn env_target(name: &str) -> Option<(String, String)> {
    if let Some((_, section, key)) = ALIASES.iter().find(|(n, _, _)| *n == name) {
        return Some((section.to_string(), key.to_string()));
    }
    let rest = name.strip_prefix("PGKEEL_")?.to_ascii_lowercase();
    SECTIONS.iter().find_map(|section| {
        rest.strip_prefix(section)
            .and_then(|r| r.strip_prefix('_'))
            .filter(|key| !key.is_empty())
            .map(|key| (section.to_string(), key.to_string()))
    })
}

/// Reads an environment value as a TOML value when it is one (`5`, `true`,
/// `["a"]`), otherwise as a plain string (`quorum`, `/srv/pg`).
fn scalar(text: &str) -> Value {
    toml::from_str::<Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(text.to_string()))
}

fn set(table: &mut Table, section: &str, key: &str, value: Value) {
    let entry = table
        .entry(section.to_string())
        .or_insert_with(|| Value::Table(Table::new()));
    if !entry.is_table() {
        *entry = Value::Table(Table::new());
    }
    if let Value::Table(t) = entry {
        t.insert(key.to_string(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReplicationMode;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_file_gives_three_local_nodes() {
        let cfg = load(&ConfigSources::default()).expect("defaults are valid");
        let names: Vec<_> = cfg.nodes.iter().map(|n| n.name.to_string()).collect();
        assert_eq!(names, ["primary", "replica1", "replica2"]);
        let ports: Vec<_> = cfg.nodes.iter().map(|n| n.port).collect();
        assert_eq!(ports, [5432, 5433, 5434]);
        assert_eq!(cfg.replication.mode, ReplicationMode::Quorum);
    }

    #[test]
    fn environment_overrides_file_and_flags_override_environment() {
        let sources = ConfigSources {
            file: Some((
                "test.toml".into(),
                "[replication]\nmode = \"sync\"\n[cluster]\nbase_port = 7000\n".into(),
            )),
            env: env(&[
                ("PGKEEL_REPLICATION_MODE", "async"),
                ("PGKEEL_CLUSTER_BASE_PORT", "8000"),
                ("PGKEEL_DIR", "/srv/pgk"),
                ("HOME", "/root"),
            ]),
            overrides: vec![("cluster".into(), "base_port".into(), Value::Integer(9000))],
        };
        let cfg = load(&sources).expect("valid");
        assert_eq!(cfg.replication.mode, ReplicationMode::Async);
        assert_eq!(cfg.nodes[0].port, 9000);
        assert_eq!(cfg.cluster.data_dir, std::path::PathBuf::from("/srv/pgk"));
    }

    #[test]
    fn unknown_key_in_file_is_named_with_its_line() {
        let sources = ConfigSources {
            file: Some((
                "x.toml".into(),
                "[cluster]\nname = \"a\"\nnmae = \"b\"\n".into(),
            )),
            ..Default::default()
        };
        let err = load(&sources).expect_err("unknown key").to_string();
        assert!(err.contains("nmae"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn unknown_key_from_environment_names_the_variable() {
        let sources = ConfigSources {
            env: env(&[("PGKEEL_TUNING_MEMROY", "1GB")]),
            ..Default::default()
        };
        let err = load(&sources).expect_err("unknown key").to_string();
        assert!(err.contains("memroy"), "{err}");
        assert!(err.contains("PGKEEL_TUNING_MEMROY"), "{err}");
    }

    #[test]
    fn unknown_mode_lists_the_valid_ones() {
        let sources = ConfigSources {
            env: env(&[("PGKEEL_REPLICATION_MODE", "semisync")]),
            ..Default::default()
        };
        let err = load(&sources).expect_err("bad mode").to_string();
        assert!(err.contains("semisync"), "{err}");
        assert!(err.contains("quorum"), "{err}");
    }

    #[test]
    fn proxy_defaults_follow_the_first_node_and_env_overrides_them() {
        let cfg = load(&ConfigSources {
            env: env(&[("PGKEEL_CLUSTER_BASE_PORT", "7000")]),
            ..Default::default()
        })
        .expect("valid");
        assert_eq!((cfg.proxy_port(), cfg.proxy_admin_port()), (8000, 8001));
        let cfg = load(&ConfigSources {
            env: env(&[
                ("PGKEEL_PROXY_PORT", "6500"),
                ("PGKEEL_PROXY_REPLICA_CHOICE", "least-outstanding"),
            ]),
            ..Default::default()
        })
        .expect("valid");
        assert_eq!((cfg.proxy_port(), cfg.proxy_admin_port()), (6500, 6501));
        assert_eq!(
            cfg.proxy.replica_choice,
            crate::config::ReplicaChoice::LeastOutstanding
        );
    }

    #[test]
    fn proxy_port_clashing_with_a_node_is_refused_unless_disabled() {
        let clash = [("PGKEEL_PROXY_PORT", "5433")];
        let err = load(&ConfigSources {
            env: env(&clash),
            ..Default::default()
        })
        .expect_err("clash")
        .to_string();
        assert!(
            err.contains("port 5433") && err.contains("proxy.port"),
            "{err}"
        );
        load(&ConfigSources {
            env: env(&[clash[0], ("PGKEEL_PROXY_ENABLED", "false")]),
            ..Default::default()
        })
        .expect("a disabled proxy claims no port");
    }

    #[test]
    fn bad_proxy_values_name_the_key_and_the_fix() {
        for (var, value, needle) in [
            ("PGKEEL_PROXY_POOL_SIZE", "0", "proxy.pool_size"),
            (
                "PGKEEL_PROXY_MAX_REPLICA_LAG",
                "lots",
                "proxy.max_replica_lag",
            ),
            ("PGKEEL_PROXY_HOST", "localhost", "proxy.host"),
            ("PGKEEL_PROXY_THREADS", "0", "proxy.threads"),
            ("PGKEEL_PROXY_QUEUE_WAIT", "0", "proxy.queue_wait"),
            ("PGKEEL_PROXY_LOGIN_TIMEOUT", "0.1", "proxy.login_timeout"),
            ("PGKEEL_PROXY_POOL_MODE", "statement", "transaction"),
        ] {
            let err = load(&ConfigSources {
                env: env(&[(var, value)]),
                ..Default::default()
            })
            .expect_err(var)
            .to_string();
            assert!(err.contains(needle), "{var}={value}: {err}");
        }
    }

    #[test]
    fn loaded_config_reloads_identically() {
        let cfg = load(&ConfigSources::default()).expect("valid");
        let text = toml::to_string(&cfg).expect("serializable");
        let again = load(&ConfigSources {
            file: Some(("stored".into(), text)),
            ..Default::default()
        })
        .expect("stored config is valid");
        assert_eq!(cfg, again);
    }
}
