//! Connecting to the Docker API and reading what enforcement needs from it.

use std::collections::HashSet;
use std::path::Path;

use bollard::models::Network;
use bollard::{Docker, API_DEFAULT_VERSION};

/// The network option dockerd uses for a bridge network's Linux bridge name.
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("{op} failed: {source}")]
    Api {
        op: String,
        source: bollard::errors::Error,
    },
    #[error(
        "{socket} does not answer as a Docker API ({why}); \
         check --docker-host / MTUVISOR_DOCKER_HOST"
    )]
    NotDocker { socket: String, why: String },
    #[error("the enforcement loop has stopped")]
    Closed,
    #[error("command not found: {program} (give the path of dockerd or of its wrapper after --)")]
    CommandNotFound { program: String },
}

impl DockerError {
    pub fn api(op: &str, source: bollard::errors::Error) -> DockerError {
        DockerError::Api {
            op: op.to_string(),
            source,
        }
    }
}

/// Connects to the API at `socket` and settles on an API version both sides
/// speak (Engine 20.10 offers 1.41).
pub async fn connect(socket: &Path) -> Result<Docker, DockerError> {
    let shown = socket.display().to_string();
    let not_docker = |why: String| DockerError::NotDocker {
        socket: shown.clone(),
        why,
    };
    let docker = Docker::connect_with_unix(&shown, 30, API_DEFAULT_VERSION)
        .map_err(|e| not_docker(e.to_string()))?;
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| not_docker(e.to_string()))?;
    docker.ping().await.map_err(|e| not_docker(e.to_string()))?;
    Ok(docker)
}

/// The Linux bridge behind every Docker network of the bridge driver:
/// `com.docker.network.bridge.name` when set (`docker0` for the default
/// network), otherwise `br-` and the first 12 digits of the network ID.
pub fn bridge_names(networks: &[Network]) -> HashSet<String> {
    networks.iter().filter_map(bridge_name).collect()
}

/// The Linux bridge of one network of the bridge driver.
pub fn bridge_name(n: &Network) -> Option<String> {
    if n.driver.as_deref() != Some("bridge") {
        return None;
    }
    let named = n
        .options
        .as_ref()
        .and_then(|o| o.get(BRIDGE_NAME_OPTION))
        .filter(|name| !name.is_empty())
        .cloned();
    named.or_else(|| {
        n.id.as_ref()
            .filter(|id| id.len() >= 12)
            .map(|id| format!("br-{}", &id[..12]))
    })
}

/// How long an existing socket gets to answer as Docker before it is
/// refused as bad input.
const DOCKER_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A socket that exists must answer as Docker: a wrong path is bad input,
/// better refused now than waited on for ever. One that does not exist yet
/// is fine (dockerd starting beside us).
pub async fn check_socket(socket: &Path) -> Result<(), DockerError> {
    if !socket.exists() {
        return Ok(());
    }
    match tokio::time::timeout(DOCKER_CHECK_TIMEOUT, connect(socket)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(DockerError::NotDocker {
            socket: socket.display().to_string(),
            why: format!("no answer within {}s", DOCKER_CHECK_TIMEOUT.as_secs()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn net(id: &str, driver: &str, bridge: Option<&str>) -> Network {
        Network {
            id: Some(id.into()),
            driver: Some(driver.into()),
            options: bridge
                .map(|b| HashMap::from([(BRIDGE_NAME_OPTION.to_string(), b.to_string())])),
            ..Network::default()
        }
    }

    #[test]
    fn bridge_names_follow_dockerd() {
        let names = bridge_names(&[
            net("aaaaaaaaaaaaaaaaaaaa", "bridge", Some("docker0")),
            net("0123456789abcdef0123", "bridge", None),
            net("ffffffffffffffffffff", "bridge", Some("ci-net0")),
            net("eeeeeeeeeeeeeeeeeeee", "host", None),
            net("dddddddddddddddddddd", "null", None),
        ]);
        let expected: HashSet<String> = ["docker0", "br-0123456789ab", "ci-net0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(names, expected);
    }
}
