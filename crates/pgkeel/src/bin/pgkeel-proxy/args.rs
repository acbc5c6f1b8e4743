//! The flags of `pgkeel-proxy`: the same as `pgkeel proxy`'s (which
//! validates them with clap and passes them on), read by a few lines of
//! code instead of clap, whose code would stay resident in every proxy.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use pgkeel_proxy::{ClusterProxyOptions, ClusterSource, PoolMode, TlsMode};

/// What `pgkeel-proxy` was asked to do.
#[derive(Debug, Default)]
pub struct ProxyArgs {
    /// The cluster: a data root, or a shared config file.
    pub source: Option<ClusterSource>,
    /// Overrides of the cluster's `[proxy]` section.
    pub options: ClusterProxyOptions,
    /// Threads serving clients (`None`: the section's).
    pub threads: Option<usize>,
    /// Where to write our PID.
    pub pid_file: Option<PathBuf>,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Parsed {
    /// Run the proxy.
    Run(Box<ProxyArgs>),
    /// Print this text and exit.
    Print(String),
}

const HELP: &str = "\
pgkeel-proxy: the pooling proxy of a pgkeel cluster, as a small executable.

It is what `pgkeel proxy` runs (same flags, same behaviour); run
`pgkeel proxy --help` for the full description of every flag.

Usage: pgkeel-proxy (--dir DIR | --config FILE [--dir DIR])
         [--listen ADDR] [--admin-listen ADDR]
         [--pool-mode transaction|session] [--pool-size N] [--threads N]
         [--pid-file FILE] [--tls-cert FILE --tls-key FILE]
         [--tls-mode allow|require] [--auth-query] [--allow-md5]

--dir defaults to $PGKEEL_DIR: the data root of a cluster `pgkeel up`
made. --config FILE: a multi-host cluster's shared pgkeel.toml (--dir then
names this host's data root, if it has one).
";

/// Parses `args` (without the program name).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed> {
    let mut out = ProxyArgs::default();
    let mut dir = std::env::var_os("PGKEEL_DIR").map(PathBuf::from);
    let mut config = None;
    let mut cert = None;
    let mut key = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg, None),
        };
        let mut value = || -> Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args.next().with_context(|| format!("{flag} needs a value")),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Print(HELP.into())),
            "-V" | "--version" => {
                return Ok(Parsed::Print(format!(
                    "pgkeel-proxy {}\n",
                    env!("CARGO_PKG_VERSION")
                )));
            }
            "-d" | "--dir" => dir = Some(PathBuf::from(value()?)),
            "-c" | "--config" => config = Some(PathBuf::from(value()?)),
            "--listen" => out.options.listen = Some(parsed(&flag, &value()?)?),
            "--admin-listen" => out.options.admin_listen = Some(parsed(&flag, &value()?)?),
            "--pool-mode" => out.options.pool_mode = Some(pool_mode(&value()?)?),
            "--pool-size" => out.options.pool_size = Some(parsed(&flag, &value()?)?),
            "--threads" => out.threads = Some(parsed(&flag, &value()?)?),
            "--pid-file" => out.pid_file = Some(PathBuf::from(value()?)),
            "--tls-cert" => cert = Some(PathBuf::from(value()?)),
            "--tls-key" => key = Some(PathBuf::from(value()?)),
            "--tls-mode" => out.options.tls_mode = Some(tls_mode(&value()?)?),
            "--auth-query" => out.options.auth_query = Some(true),
            "--allow-md5" => out.options.allow_md5 = Some(true),
            other => bail!("unexpected argument '{other}' (see pgkeel-proxy --help)"),
        }
    }
    out.options.tls = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together"),
    };
    out.source = Some(match config {
        Some(path) => ClusterSource::ConfigFile {
            path,
            data_root: dir,
        },
        None => ClusterSource::DataRoot(dir.context(
            "--dir (or PGKEEL_DIR) or --config is required: the cluster's data root or its shared pgkeel.toml",
        )?),
    });
    Ok(Parsed::Run(Box::new(out)))
}

fn parsed<T: FromStr>(flag: &str, value: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid value '{value}' for {flag}: {e}"))
}

fn pool_mode(value: &str) -> Result<PoolMode> {
    match value {
        "transaction" => Ok(PoolMode::Transaction),
        "session" => Ok(PoolMode::Session),
        _ => bail!("invalid value '{value}' for --pool-mode: transaction or session"),
    }
}

fn tls_mode(value: &str) -> Result<TlsMode> {
    match value {
        "allow" => Ok(TlsMode::Allow),
        "require" => Ok(TlsMode::Require),
        _ => bail!("invalid value '{value}' for --tls-mode: allow or require"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<ProxyArgs> {
        match parse(args.iter().map(|s| s.to_string()))? {
            Parsed::Run(a) => Ok(*a),
            Parsed::Print(text) => bail!("printed {text}"),
        }
    }

    #[test]
    fn a_config_file_with_or_without_a_data_root() -> Result<()> {
        let a = run(&["--config", "/etc/pgkeel/pgkeel.toml"])?;
        assert_eq!(
            a.source,
            Some(ClusterSource::ConfigFile {
                path: PathBuf::from("/etc/pgkeel/pgkeel.toml"),
                data_root: None,
            })
        );
        let a = run(&["-c", "/e/p.toml", "--dir", "/var/lib/pgkeel"])?;
        assert_eq!(
            a.source,
            Some(ClusterSource::ConfigFile {
                path: PathBuf::from("/e/p.toml"),
                data_root: Some(PathBuf::from("/var/lib/pgkeel")),
            })
        );
        Ok(())
    }

    #[test]
    fn every_flag_in_both_spellings() -> Result<()> {
        let a = run(&[
            "--dir",
            "/d",
            "--listen=127.0.0.1:7000",
            "--admin-listen",
            "127.0.0.1:7001",
            "--pool-mode",
            "session",
            "--pool-size=3",
            "--threads",
            "2",
            "--pid-file",
            "/p",
            "--tls-cert",
            "c.pem",
            "--tls-key=k.pem",
            "--tls-mode",
            "require",
            "--auth-query",
            "--allow-md5",
        ])?;
        assert_eq!(a.source, Some(ClusterSource::DataRoot(PathBuf::from("/d"))));
        assert_eq!(a.options.listen, Some("127.0.0.1:7000".parse()?));
        assert_eq!(a.options.admin_listen, Some("127.0.0.1:7001".parse()?));
        assert_eq!(a.options.pool_mode, Some(PoolMode::Session));
        assert_eq!(a.options.pool_size, Some(3));
        assert_eq!(a.threads, Some(2));
        assert_eq!(a.pid_file, Some(PathBuf::from("/p")));
        assert_eq!(
            a.options.tls,
            Some((PathBuf::from("c.pem"), PathBuf::from("k.pem")))
        );
        assert_eq!(a.options.tls_mode, Some(TlsMode::Require));
        assert_eq!(a.options.auth_query, Some(true));
        assert_eq!(a.options.allow_md5, Some(true));
        Ok(())
    }

    #[test]
    fn bad_input_is_refused_with_the_flag_named() {
        for (args, needle) in [
            (&["--dir", "/d", "--listen", "nowhere"][..], "--listen"),
            (&["--dir", "/d", "--pool-mode", "x"][..], "--pool-mode"),
            (&["--dir", "/d", "--tls-cert", "c"][..], "--tls-key"),
            (&["--dir", "/d", "--bogus"][..], "--bogus"),
            (&["--dir"][..], "--dir needs a value"),
        ] {
            match run(args) {
                Ok(a) => panic!("{args:?} accepted: {a:?}"),
                Err(e) => assert!(e.to_string().contains(needle), "{args:?}: {e}"),
            }
        }
    }
}
