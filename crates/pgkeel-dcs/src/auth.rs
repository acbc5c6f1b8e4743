//! Turning etcd's authentication on for a cluster pgkeel runs: a root
//! user (etcd requires one), a role allowed this namespace's keys and
//! nothing else, and pgkeel's user with that role. Every agent runs it at
//! start; it does nothing once authentication is on, and agents racing
//! through it at bootstrap cannot harm each other (each step tolerates
//! "already exists").

use etcd_client::{Client, Permission};

use crate::{Dcs, DcsError};

/// etcd's answer when authentication has not been enabled yet.
const NOT_ENABLED: &str = "authentication is not enabled";

impl Dcs {
    /// Makes sure etcd authenticates `user` (with `password`) and lets it
    /// read and write everything under `namespace`, enabling
    /// authentication (with `root_password` for etcd's root user) if it
    /// is off. Fails with [`DcsError::Refused`] when etcd refuses the
    /// password: the secrets are not this etcd's.
    pub async fn ensure_auth(
        &self,
        user: &str,
        password: &str,
        root_password: &str,
        namespace: &str,
    ) -> Result<(), DcsError> {
        match self.authenticate(user, password).await {
            Ok(()) => return Ok(()),
            Err(DcsError::Refused { detail, .. }) if detail.contains(NOT_ENABLED) => {}
            Err(e) => return Err(e),
        }
        let prefix = format!("{}/", namespace.trim_end_matches('/'));
        let (user, password, root_password) = (
            user.to_string(),
            password.to_string(),
            root_password.to_string(),
        );
        self.call("authentication setup", |c| {
            let (user, password, root_password, prefix) = (
                user.clone(),
                password.clone(),
                root_password.clone(),
                prefix.clone(),
            );
            async move { enable(c, &user, &password, &root_password, &prefix).await }
        })
        .await?;
        self.authenticate(&user, &password).await
    }

    /// Authenticates every member's client as `user`; refused credentials
    /// are an error, unreachable members are left for later (their client
    /// authenticates when etcd first asks).
    pub async fn authenticate(&self, user: &str, password: &str) -> Result<(), DcsError> {
        let creds = (user.to_string(), password.to_string());
        self.call("authentication", |mut c| {
            let creds = creds.clone();
            async move { c.update_user(Some(creds)).await }
        })
        .await
        .map_err(|e| match e {
            DcsError::Etcd {
                endpoints, source, ..
            } if !crate::connection::unreachable(&source) => DcsError::Refused {
                endpoints,
                user: user.to_string(),
                detail: source.to_string(),
            },
            other => other,
        })
    }
}

/// The setup itself, on a client that has no token (authentication off).
async fn enable(
    mut c: Client,
    user: &str,
    password: &str,
    root_password: &str,
    prefix: &str,
) -> Result<(), etcd_client::Error> {
    tolerate(c.user_add("root", root_password, None).await)?;
    tolerate(c.user_grant_role("root", "root").await)?;
    tolerate(c.role_add(user).await)?;
    tolerate(
        c.role_grant_permission(user, Permission::read_write(prefix).with_prefix())
            .await,
    )?;
    tolerate(c.user_add(user, password, None).await)?;
    tolerate(c.user_grant_role(user, user).await)?;
    match c.auth_enable().await {
        Ok(_) => Ok(()),
        // Another agent enabled it in the meantime: our token-less client
        // is refused now, which is what we wanted.
        Err(e)
            if e.to_string().contains("user name is empty")
                || e.to_string().contains("permission denied") =>
        {
            Ok(())
        }
        // Authentication went on meanwhile (another agent): the next
        // authentication tells whether it is usable.
        Err(e) if e.to_string().contains("permission denied") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Lets "already exists" (another agent got there first) through.
fn tolerate<T>(result: Result<T, etcd_client::Error>) -> Result<(), etcd_client::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("already exists") => Ok(()),
        Err(e) if e.to_string().contains("user name is empty") => Ok(()),
        // Authentication went on meanwhile (another agent): the next
        // authentication tells whether it is usable.
        Err(e) if e.to_string().contains("permission denied") => Ok(()),
        Err(e) => Err(e),
    }
}
