//! Pool configuration from libpq connection strings: one URL per node, or
//! one multi-host URL (`postgresql://u:p@h1:5432,h2:5432/db`).

use std::str::FromStr;

use tokio_postgres::config::{Host, SslMode};

use crate::{Error, NodeAddr, PoolConfig, Result};

const URL_SHAPE: &str = "expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE";
const DEFAULT_PORT: u16 = 5432;

impl PoolConfig {
    /// Settings from libpq URLs (or `key=value` strings) of the cluster's
    /// nodes, primary and replicas in any order. Every URL must use the same
    /// user, password and database; multi-host URLs contribute every host.
    /// Other settings keep their defaults.
    ///
    /// ```
    /// use pgkeel_client::PoolConfig;
    ///
    /// let config = PoolConfig::from_urls([
    ///     "postgresql://app:secret@10.0.0.1:5432/app",
    ///     "postgresql://app:secret@10.0.0.2:5432,10.0.0.3:5432/app",
    /// ])?;
    /// assert_eq!(config.nodes.len(), 3);
    /// assert_eq!(config.dbname, "app");
    /// # Ok::<(), pgkeel_client::Error>(())
    /// ```
    pub fn from_urls<I, S>(urls: I) -> Result<PoolConfig>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut config = PoolConfig::default();
        let mut first: Option<Credentials> = None;
        for (i, url) in urls.into_iter().enumerate() {
            let url = url.as_ref();
            let label = format!("URL #{} (`{}`)", i + 1, redact(url));
            let parsed = parse_one(url, &label)?;
            match &first {
                None => {
                    config.user = parsed.creds.user.clone();
                    config.password = parsed.creds.password.clone();
                    config.dbname = parsed.creds.dbname.clone();
                    if let Some(name) = &parsed.application_name {
                        config.application_name = name.clone();
                    }
                    if let Some(timeout) = parsed.connect_timeout {
                        config.connect_timeout = timeout;
                    }
                    first = Some(parsed.creds);
                }
                Some(creds) => creds.check_same(&parsed.creds, &label)?,
            }
            for node in parsed.nodes {
                if !config.nodes.contains(&node) {
                    config.nodes.push(node);
                }
            }
        }
        if first.is_none() {
            return Err(Error::config(format!(
                "no URLs given: pass at least the primary's URL ({URL_SHAPE})"
            )));
        }
        config.validate()?;
        Ok(config)
    }
}

/// What must be equal across the URLs of one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Credentials {
    user: String,
    password: Option<String>,
    dbname: String,
}

impl Credentials {
    fn check_same(&self, other: &Credentials, label: &str) -> Result<()> {
        let differs = if self.user != other.user {
            Some(format!("user `{}` instead of `{}`", other.user, self.user))
        } else if self.dbname != other.dbname {
            Some(format!(
                "database `{}` instead of `{}`",
                other.dbname, self.dbname
            ))
        } else if self.password != other.password {
            Some("a different password".to_string())
        } else {
            None
        };
        match differs {
            Some(what) => Err(Error::config(format!(
                "{label} uses {what} than URL #1: every node of one pool is reached with the same user, password and database"
            ))),
            None => Ok(()),
        }
    }
}

struct ParsedUrl {
    creds: Credentials,
    nodes: Vec<NodeAddr>,
    application_name: Option<String>,
    connect_timeout: Option<std::time::Duration>,
}

fn parse_one(url: &str, label: &str) -> Result<ParsedUrl> {
    if url.trim().is_empty() {
        return Err(Error::config(format!("{label} is empty: {URL_SHAPE}")));
    }
    let pg = tokio_postgres::Config::from_str(url).map_err(|e| {
        Error::config(format!(
            "{label} is not a valid PostgreSQL URL ({}): {URL_SHAPE}",
            crate::error::describe(&e)
        ))
    })?;
    if !matches!(pg.get_ssl_mode(), SslMode::Disable | SslMode::Prefer) {
        return Err(Error::config(format!(
            "{label} requires TLS (sslmode=require), which pgkeel-client does not speak: use sslmode=disable or sslmode=prefer, or reach the nodes over a trusted network"
        )));
    }
    let user = pg
        .get_user()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| Error::config(format!("{label} names no user: {URL_SHAPE}")))?
        .to_string();
    let password = match pg.get_password() {
        Some(bytes) => Some(String::from_utf8(bytes.to_vec()).map_err(|_| {
            Error::config(format!(
                "{label} has a password that is not UTF-8: percent-encode it as UTF-8"
            ))
        })?),
        None => None,
    };
    // libpq's rule: the database defaults to the user's name.
    let dbname = pg.get_dbname().unwrap_or(&user).to_string();
    Ok(ParsedUrl {
        creds: Credentials {
            user,
            password,
            dbname,
        },
        nodes: nodes_of(&pg, label)?,
        application_name: pg.get_application_name().map(str::to_string),
        connect_timeout: pg.get_connect_timeout().copied(),
    })
}

/// The URL's hosts with their ports, following libpq: one port for all
/// hosts, one per host, or none for 5432.
fn nodes_of(pg: &tokio_postgres::Config, label: &str) -> Result<Vec<NodeAddr>> {
    let hosts: Vec<String> = if pg.get_hostaddrs().is_empty() {
        pg.get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            })
            .collect()
    } else {
        pg.get_hostaddrs().iter().map(|a| a.to_string()).collect()
    };
    if hosts.is_empty() {
        return Err(Error::config(format!("{label} names no host: {URL_SHAPE}")));
    }
    let ports = pg.get_ports();
    let host_count = hosts.len();
    let port_of = |i: usize| match ports.len() {
        0 => Ok(DEFAULT_PORT),
        1 => Ok(ports[0]),
        n if n == host_count => Ok(ports[i]),
        n => Err(Error::config(format!(
            "{label} has {host_count} hosts but {n} ports: give one port for all hosts or one per host"
        ))),
    };
    hosts
        .into_iter()
        .enumerate()
        .map(|(i, host)| Ok(NodeAddr::new(host, port_of(i)?)))
        .collect()
}

/// The URL with its password replaced by `***`, safe to print in errors.
pub(crate) fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((userinfo, after)) = rest.split_once('@')
            && let Some((user, _password)) = userinfo.split_once(':')
        {
            return format!("{scheme}://{user}:***@{after}");
        }
        return url.to_string();
    }
    // key=value form: blank the value after `password=`.
    let mut out = Vec::new();
    for part in url.split_whitespace() {
        match part.split_once('=') {
            Some((key, _)) if key.trim() == "password" => out.push("password=***".to_string()),
            _ => out.push(part.to_string()),
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn err(urls: &[&str]) -> String {
        match PoolConfig::from_urls(urls) {
            Ok(c) => panic!("accepted {urls:?}: {c:?}"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Config);
                e.to_string()
            }
        }
    }

    #[test]
    fn one_url_per_node() -> Result<()> {
        let c = PoolConfig::from_urls([
            "postgresql://app:pw@127.0.0.1:5432/appdb",
            "postgres://app:pw@127.0.0.1:5433/appdb?application_name=svc",
        ])?;
        assert_eq!(
            c.nodes,
            vec![
                NodeAddr::new("127.0.0.1", 5432),
                NodeAddr::new("127.0.0.1", 5433)
            ]
        );
        assert_eq!(
            (c.user.as_str(), c.password.as_deref(), c.dbname.as_str()),
            ("app", Some("pw"), "appdb")
        );
        Ok(())
    }

    #[test]
    fn multi_host_and_key_value_forms() -> Result<()> {
        let c = PoolConfig::from_urls(["postgresql://app:pw@a:1,b:2,c:3/db?connect_timeout=7"])?;
        assert_eq!(c.nodes.len(), 3);
        assert_eq!(c.nodes[2], NodeAddr::new("c", 3));
        assert_eq!(c.connect_timeout, std::time::Duration::from_secs(7));
        let c = PoolConfig::from_urls(["host=x port=6000 user=u password=p dbname=d"])?;
        assert_eq!(c.nodes, vec![NodeAddr::new("x", 6000)]);
        let c = PoolConfig::from_urls(["postgresql://u@h"])?;
        assert_eq!((c.nodes[0].port, c.dbname.as_str()), (5432, "u"));
        Ok(())
    }

    #[test]
    fn duplicates_are_merged() -> Result<()> {
        let c = PoolConfig::from_urls(["postgresql://u:p@h:1/d", "postgresql://u:p@h:1,h:2/d"])?;
        assert_eq!(c.nodes.len(), 2);
        Ok(())
    }

    #[test]
    fn malformed_urls_name_the_url_and_the_shape() {
        let m = err(&["postgresql://app:secret@host:notaport/db"]);
        assert!(m.contains("URL #1"), "{m}");
        assert!(
            m.contains("postgresql://USER:PASSWORD@HOST:PORT/DATABASE"),
            "{m}"
        );
        assert!(!m.contains("secret"), "password leaked: {m}");
        assert!(err(&[""]).contains("is empty"));
        assert!(err(&[]).contains("no URLs"));
        assert!(err(&["postgresql://h:5432/db"]).contains("names no user"));
        assert!(err(&["postgresql://u:p@h/db?sslmode=require"]).contains("sslmode=disable"));
        assert!(err(&["host=a,b,c port=1,2 user=u"]).contains("3 hosts but 2 ports"));
    }

    #[test]
    fn mismatched_credentials_are_refused() {
        let m = err(&["postgresql://u:p@a/d", "postgresql://v:p@b/d"]);
        assert!(m.contains("URL #2") && m.contains("user `v`"), "{m}");
        let m = err(&["postgresql://u:p@a/d", "postgresql://u:q@b/d"]);
        assert!(
            m.contains("different password") && !m.contains(":q@"),
            "{m}"
        );
        let m = err(&["postgresql://u:p@a/d", "postgresql://u:p@b/e"]);
        assert!(m.contains("database `e`"), "{m}");
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("postgresql://u:pw@h/d"), "postgresql://u:***@h/d");
        assert_eq!(redact("postgresql://u@h/d"), "postgresql://u@h/d");
        assert_eq!(
            redact("host=h password=pw user=u"),
            "host=h password=*** user=u"
        );
    }
}
