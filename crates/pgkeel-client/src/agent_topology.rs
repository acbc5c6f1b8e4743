//! The topology as pgkeel's HA agents see it: `GET /cluster` on any agent
//! returns every member with its role and which one holds the leader key.
//! Following the agents instead of probing the nodes means the pool
//! follows a failover or switchover the moment the agents decide it, and
//! never mistakes a fenced or demoted primary for the writer.

use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::topology::{BoxFuture, Member, Role, TopologySource};
use crate::{Error, ErrorKind, NodeAddr, PoolConfig, Result};

/// Asks pgkeel agents (`http://host:port` of their REST API, any number;
/// the first that answers wins) for the cluster's members.
#[derive(Debug, Clone)]
pub struct AgentTopology {
    agents: Vec<String>,
}

impl AgentTopology {
    /// A source asking these agent URLs in order.
    pub fn new<I, S>(agents: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        AgentTopology {
            agents: agents.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct ClusterDoc {
    #[serde(default)]
    leader: Option<String>,
    members: Vec<MemberDoc>,
}

#[derive(Debug, Deserialize)]
struct MemberDoc {
    name: String,
    host: String,
    port: u16,
    #[serde(default)]
    role: String,
    #[serde(default)]
    running: bool,
}

/// Members from an agent's `/cluster` document: the leader-key holder that
/// runs as primary is the primary; running replicas are replicas; anything
/// else (stopped, a primary without the key) is watched but not used.
pub(crate) fn members_from_cluster_json(body: &str) -> Result<Vec<Member>> {
    let doc: ClusterDoc = serde_json::from_str(body).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("the agent's /cluster answer is not pgkeel's topology document ({e}): is the URL a pgkeel agent's API?"),
        )
    })?;
    Ok(doc
        .members
        .into_iter()
        .map(|m| {
            let leader = doc.leader.as_deref() == Some(m.name.as_str());
            let role = match (m.running, m.role.as_str()) {
                (true, "primary") if leader => Role::Primary,
                (true, "replica") => Role::Replica,
                _ => Role::Unknown,
            };
            Member {
                addr: NodeAddr::new(m.host, m.port),
                role,
            }
        })
        .collect())
}

/// One `GET` over HTTP/1.1; returns the body of a 200 answer.
async fn get(url: &str, timeout: Duration) -> std::result::Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: agent URLs look like http://host:port"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let exchange = async {
        let mut stream = TcpStream::connect(authority)
            .await
            .map_err(|e| e.to_string())?;
        let request =
            format!("GET /cluster HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = text.split_once("\r\n\r\n").ok_or("malformed HTTP answer")?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(head.lines().next().unwrap_or_default().to_string());
        }
        Ok(body.to_string())
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result.map_err(|e| format!("{url}: {e}")),
        Err(_) => Err(format!(
            "{url}: no answer within {} ms",
            timeout.as_millis()
        )),
    }
}

impl TopologySource for AgentTopology {
    fn discover<'a>(&'a self, config: &'a PoolConfig) -> BoxFuture<'a, Result<Vec<Member>>> {
        Box::pin(async move {
            if self.agents.is_empty() {
                return Err(Error::new(
                    ErrorKind::Config,
                    "AgentTopology needs at least one agent URL (http://host:api_port)",
                ));
            }
            let mut reasons = vec![];
            for url in &self.agents {
                match get(url, config.connect_timeout).await {
                    Ok(body) => return members_from_cluster_json(&body),
                    Err(reason) => reasons.push(reason),
                }
            }
            Err(Error::new(
                ErrorKind::Connect,
                format!(
                    "no pgkeel agent answered: {}: check that the agents run (`pgkeel status`)",
                    reasons.join("; ")
                ),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_running_as_primary_is_the_primary() {
        let body = r#"{"cluster":"c","leader":"b","members":[
            {"name":"a","host":"10.0.0.1","port":5432,"role":"primary","running":true},
            {"name":"b","host":"10.0.0.2","port":5432,"role":"primary","running":true},
            {"name":"c","host":"10.0.0.3","port":5432,"role":"replica","running":true},
            {"name":"d","host":"10.0.0.4","port":5432,"role":"replica","running":false}]}"#;
        let members = members_from_cluster_json(body).expect("valid");
        let roles: Vec<Role> = members.iter().map(|m| m.role).collect();
        // `a` runs as primary without the key (about to be demoted): unused.
        assert_eq!(
            roles,
            [Role::Unknown, Role::Primary, Role::Replica, Role::Unknown]
        );
        assert_eq!(members[1].addr, NodeAddr::new("10.0.0.2", 5432));
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let err = members_from_cluster_json("<html>").expect_err("not json");
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("pgkeel agent"), "{err}");
    }
}
