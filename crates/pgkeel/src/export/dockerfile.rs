//! The image of an exported compose cluster: Debian with PostgreSQL and
//! etcd from Debian's packages, plus the pgkeel binaries. Pure text.

use super::container_config::{CONFIG_PATH, DATA_ROOT};

/// The base image when the `BASE_IMAGE` build argument is not given.
pub const DEFAULT_BASE_IMAGE: &str = "debian:bookworm-slim";

/// The `Dockerfile`. The build context holds `bin/pgkeel`,
/// `bin/pgkeel-proxy` and `pgkeel.toml` (see [`dockerignore`]).
pub fn dockerfile() -> String {
    format!(
        r#"# Image of every node and of the proxy of a pgkeel cluster, written by
# `pgkeel export compose`: Debian bookworm, PostgreSQL and etcd from Debian's
# packages, the pgkeel binaries from bin/ and the cluster's pgkeel.toml.
#
#   docker-compose build
#       from {DEFAULT_BASE_IMAGE} (installs PostgreSQL 15, etcd, pgBackRest, curl, tini)
#   BASE_IMAGE=my-debian-with-postgres docker-compose build
#       from an image that has them already: nothing is downloaded
ARG BASE_IMAGE={DEFAULT_BASE_IMAGE}
FROM ${{BASE_IMAGE}}

# Only what the base image lacks is installed, so a prepared base image
# builds with no network. The packages' default "main" cluster is removed:
# the agents initialise or clone their own.
RUN set -eu; \
    missing=""; \
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$missing postgresql-15"; \
    command -v etcd >/dev/null 2>&1 || missing="$missing etcd-server"; \
    command -v pgbackrest >/dev/null 2>&1 || missing="$missing pgbackrest"; \
    command -v curl >/dev/null 2>&1 || missing="$missing curl"; \
    [ -x /usr/bin/tini ] || missing="$missing tini"; \
    if [ -n "$missing" ]; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates $missing; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    rm -rf /etc/postgresql/*/main /var/lib/postgresql/*/main; \
    install -d -m 0700 -o postgres -g postgres {DATA_ROOT}

COPY bin/pgkeel bin/pgkeel-proxy /usr/local/bin/
COPY pgkeel.toml {CONFIG_PATH}

# tini reaps the children the agent leaves behind and forwards signals.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/pgkeel"]
CMD ["--help"]
"#
    )
}

/// The `.dockerignore`: only the binaries and the config are sent to the
/// builder, never the secrets.
pub fn dockerignore() -> &'static str {
    "# Only the binaries and the config go into the image; never secrets/.\n\
     *\n\
     !bin/pgkeel\n\
     !bin/pgkeel-proxy\n\
     !pgkeel.toml\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_image_is_an_argument_and_installs_are_conditional() {
        let d = dockerfile();
        let lines: Vec<&str> = d.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines[0], "ARG BASE_IMAGE=debian:bookworm-slim");
        assert_eq!(lines[1], "FROM ${BASE_IMAGE}");
        assert!(!d.contains("# syntax"));
        assert!(d.contains("|| missing=\"$missing postgresql-15\""));
        assert!(d.contains("|| missing=\"$missing etcd-server\""));
        assert!(d.contains("|| missing=\"$missing pgbackrest\""));
        assert!(d.contains("if [ -n \"$missing\" ]; then"));
        assert!(d.contains("COPY bin/pgkeel bin/pgkeel-proxy /usr/local/bin/"));
        assert!(d.contains("COPY pgkeel.toml /etc/pgkeel/pgkeel.toml"));
        assert!(d.contains("ENTRYPOINT [\"/usr/bin/tini\", \"--\", \"/usr/local/bin/pgkeel\"]"));
    }

    #[test]
    fn secrets_stay_out_of_the_build_context() {
        let ignore = dockerignore();
        assert!(ignore.lines().any(|l| l == "*"));
        assert!(!ignore.contains("secrets\n!"), "{ignore}");
        assert!(!ignore.lines().any(|l| l.starts_with("!secrets")));
    }
}
