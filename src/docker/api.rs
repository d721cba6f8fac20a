//! Typed Engine API calls (API 1.41 and newer) on top of [`super::client::Client`]: just the
//! endpoints the box manager needs. Each function is one HTTP exchange (or one hijack).

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::client::{Body, Client, DEFAULT_TIMEOUT, Hijacked};
use super::error::{DockerError, MAX_DAEMON_MESSAGE_BYTES};

/// Deadline for pulling an image, the whole pull (layers can be large).
pub(crate) const PULL_TIMEOUT: Duration = Duration::from_secs(600);
/// Extra read timeout granted to `stop` beyond its grace period.
pub(crate) const STOP_MARGIN: Duration = Duration::from_secs(20);

/// One container as `GET /containers/json` lists it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSummary {
    /// Full id.
    pub(crate) id: String,
    /// Names, each with a leading `/`.
    #[serde(default)]
    pub(crate) names: Vec<String>,
    /// Image as given at create.
    #[serde(default)]
    pub(crate) image: String,
    /// `created`, `running`, `exited`, …
    #[serde(default)]
    pub(crate) state: String,
    /// Human status.
    #[serde(default)]
    pub(crate) status: String,
    /// Creation time, unix seconds.
    #[serde(default)]
    pub(crate) created: i64,
    /// Labels.
    #[serde(default)]
    pub(crate) labels: HashMap<String, String>,
}

impl ContainerSummary {
    /// The first name without its leading `/`.
    pub(crate) fn name(&self) -> &str {
        self.names
            .first()
            .map(|n| n.strip_prefix('/').unwrap_or(n))
            .unwrap_or_default()
    }
}

fn q(s: &str) -> String {
    // Percent-encode everything outside the unreserved set (RFC 3986).
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Lists containers (all states) whose labels match every `key=value` in `labels`.
///
/// # Errors
/// Any [`DockerError`].
pub fn list_containers(
    c: &Client,
    labels: &[String],
) -> Result<Vec<ContainerSummary>, DockerError> {
    let filters = json!({ "label": labels }).to_string();
    c.call_json(
        "GET",
        &format!("/containers/json?all=1&filters={}", q(&filters)),
        &Body::None,
        DEFAULT_TIMEOUT,
    )
}

/// `GET /containers/{id}/json`.
///
/// # Errors
/// [`DockerError::NotFound`] for an unknown container, or any other error.
pub fn inspect_container(c: &Client, id: &str) -> Result<Value, DockerError> {
    c.call_json(
        "GET",
        &format!("/containers/{}/json", q(id)),
        &Body::None,
        DEFAULT_TIMEOUT,
    )
}

/// Creates a container from a full create body; returns its id.
///
/// # Errors
/// Any [`DockerError`] (a missing image is [`DockerError::NotFound`]).
pub fn create_container(c: &Client, name: &str, body: &Value) -> Result<String, DockerError> {
    let path = if name.is_empty() {
        "/containers/create".to_string()
    } else {
        format!("/containers/create?name={}", q(name))
    };
    let v: Value = c.call_json("POST", &path, &Body::Json(body), DEFAULT_TIMEOUT)?;
    answered_id(&v, "container create")
}

/// The `Id` of a create answer.
fn answered_id(v: &Value, what: &str) -> Result<String, DockerError> {
    v.get("Id")
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| DockerError::Protocol(format!("{what} answered without an Id")))
}

/// Starts a container.
///
/// # Errors
/// Any [`DockerError`].
pub(crate) fn start_container(c: &Client, id: &str) -> Result<(), DockerError> {
    c.call(
        "POST",
        &format!("/containers/{}/start", q(id)),
        &Body::None,
        DEFAULT_TIMEOUT,
    )
    .map(drop)
}

/// Sets the TTY size of a running container.
///
/// # Errors
/// Any [`DockerError`].
pub(crate) fn resize_container(
    c: &Client,
    id: &str,
    width: u32,
    height: u32,
) -> Result<(), DockerError> {
    c.call(
        "POST",
        &format!("/containers/{}/resize?h={height}&w={width}", q(id)),
        &Body::None,
        DEFAULT_TIMEOUT,
    )
    .map(drop)
}

/// Renames a container.
///
/// # Errors
/// Any [`DockerError`] (a taken name is [`DockerError::Conflict`]).
pub(crate) fn rename_container(c: &Client, id: &str, name: &str) -> Result<(), DockerError> {
    c.call(
        "POST",
        &format!("/containers/{}/rename?name={}", q(id), q(name)),
        &Body::None,
        DEFAULT_TIMEOUT,
    )
    .map(drop)
}

/// Stops a container: SIGTERM, then SIGKILL after `grace`. Already stopped is fine.
///
/// # Errors
/// Any [`DockerError`].
pub(crate) fn stop_container(c: &Client, id: &str, grace: Duration) -> Result<(), DockerError> {
    c.call(
        "POST",
        &format!("/containers/{}/stop?t={}", q(id), grace.as_secs()),
        &Body::None,
        grace + STOP_MARGIN,
    )
    .map(drop)
}

/// Removes a container with its anonymous volumes; `force` kills it first.
///
/// # Errors
/// Any [`DockerError`].
pub(crate) fn remove_container(c: &Client, id: &str, force: bool) -> Result<(), DockerError> {
    c.call(
        "DELETE",
        &format!("/containers/{}?v=1&force={}", q(id), u8::from(force)),
        &Body::None,
        DEFAULT_TIMEOUT + STOP_MARGIN,
    )
    .map(drop)
}

/// Extracts a tar archive into the container at `path`.
///
/// # Errors
/// Any [`DockerError`].
pub fn put_archive(c: &Client, id: &str, path: &str, tar: &[u8]) -> Result<(), DockerError> {
    c.call(
        "PUT",
        &format!("/containers/{}/archive?path={}", q(id), q(path)),
        &Body::Tar(tar),
        DEFAULT_TIMEOUT,
    )
    .map(drop)
}

/// Attaches to a container's streams; `stdin` also opens its input. No replayed history.
///
/// # Errors
/// Any [`DockerError`].
pub fn attach(
    c: &Client,
    id: &str,
    stdin: bool,
    timeout: Duration,
) -> Result<Hijacked, DockerError> {
    c.hijack(
        "POST",
        &format!(
            "/containers/{}/attach?stream=1&stdout=1&stderr=1&stdin={}",
            q(id),
            u8::from(stdin)
        ),
        &Body::None,
        timeout,
    )
}

/// The container's output: the last `tail` lines, raw (framed when it has no TTY).
///
/// # Errors
/// Any [`DockerError`].
pub(crate) fn logs(c: &Client, id: &str, tail: usize) -> Result<Vec<u8>, DockerError> {
    c.call(
        "GET",
        &format!("/containers/{}/logs?stdout=1&stderr=1&tail={tail}", q(id)),
        &Body::None,
        DEFAULT_TIMEOUT,
    )
    .map(|r| r.body)
}

/// Creates an exec instance without a TTY running as `user` (Docker's `uid:gid` form), with
/// `env` added to the container's environment; returns its id.
///
/// # Errors
/// Any [`DockerError`].
pub(crate) fn exec_create(
    c: &Client,
    id: &str,
    cmd: &[String],
    user: &str,
    env: &[String],
) -> Result<String, DockerError> {
    let body = json!({
        "AttachStdin": false, "AttachStdout": true, "AttachStderr": true,
        "Tty": false, "Cmd": cmd, "User": user, "Env": env,
    });
    let v: Value = c.call_json(
        "POST",
        &format!("/containers/{}/exec", q(id)),
        &Body::Json(&body),
        DEFAULT_TIMEOUT,
    )?;
    answered_id(&v, "exec create")
}

/// Starts an exec instance and hands back its multiplexed output stream.
///
/// # Errors
/// Any [`DockerError`].
pub(crate) fn exec_start(
    c: &Client,
    exec_id: &str,
    timeout: Duration,
) -> Result<Hijacked, DockerError> {
    c.hijack(
        "POST",
        &format!("/exec/{}/start", q(exec_id)),
        &Body::Json(&json!({"Detach": false, "Tty": false})),
        timeout,
    )
}

/// The exit code of a finished exec (`None` while it still runs).
///
/// # Errors
/// Any [`DockerError`].
pub(crate) fn exec_exit_code(c: &Client, exec_id: &str) -> Result<Option<i64>, DockerError> {
    let v: Value = c.call_json(
        "GET",
        &format!("/exec/{}/json", q(exec_id)),
        &Body::None,
        DEFAULT_TIMEOUT,
    )?;
    if v.get("Running").and_then(Value::as_bool) == Some(true) {
        return Ok(None);
    }
    Ok(v.get("ExitCode").and_then(Value::as_i64))
}

/// True when the image is present locally.
///
/// # Errors
/// Any [`DockerError`] other than not-found.
pub(crate) fn image_exists(c: &Client, image: &str) -> Result<bool, DockerError> {
    match c.call(
        "GET",
        &format!("/images/{}/json", q(image)),
        &Body::None,
        DEFAULT_TIMEOUT,
    ) {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Pulls `image` (default tag `latest`). The daemon streams progress as JSON lines; an
/// `error` line in that stream is a failure too.
///
/// # Errors
/// Any [`DockerError`]; the daemon's words are kept.
pub(crate) fn pull_image(c: &Client, image: &str) -> Result<(), DockerError> {
    let (name, tag) = split_image(image);
    let resp = c.call(
        "POST",
        &format!("/images/create?fromImage={}&tag={}", q(name), q(tag)),
        &Body::None,
        PULL_TIMEOUT,
    )?;
    for line in resp.body.split(|&b| b == b'\n') {
        if let Ok(v) = serde_json::from_slice::<Value>(line)
            && let Some(err) = v.get("error").and_then(Value::as_str)
        {
            return Err(DockerError::Api {
                status: 500,
                message: super::error::clip(err.to_string(), MAX_DAEMON_MESSAGE_BYTES),
            });
        }
    }
    Ok(())
}

/// Splits `repo[:tag][@digest]` into the repository and the tag (or digest).
fn split_image(image: &str) -> (&str, &str) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, digest);
    }
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

/// Creates a bridge network with labels; returns its id.
///
/// # Errors
/// Any [`DockerError`].
pub(crate) fn create_network(
    c: &Client,
    name: &str,
    labels: &HashMap<String, String>,
) -> Result<String, DockerError> {
    let body = json!({
        "Name": name, "Driver": "bridge", "CheckDuplicate": true, "Labels": labels,
    });
    let v: Value = c.call_json(
        "POST",
        "/networks/create",
        &Body::Json(&body),
        DEFAULT_TIMEOUT,
    )?;
    answered_id(&v, "network create")
}

/// One network as `GET /networks` lists it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NetworkSummary {
    /// Name.
    pub(crate) name: String,
    /// Labels.
    #[serde(default)]
    pub(crate) labels: HashMap<String, String>,
}

/// Lists networks whose labels match every `key=value` in `labels`.
///
/// # Errors
/// Any [`DockerError`].
pub(crate) fn list_networks(
    c: &Client,
    labels: &[String],
) -> Result<Vec<NetworkSummary>, DockerError> {
    let filters = json!({ "label": labels }).to_string();
    c.call_json(
        "GET",
        &format!("/networks?filters={}", q(&filters)),
        &Body::None,
        DEFAULT_TIMEOUT,
    )
}

/// Connects a container to a network.
///
/// # Errors
/// Any [`DockerError`].
pub(crate) fn connect_network(
    c: &Client,
    network: &str,
    container: &str,
) -> Result<(), DockerError> {
    c.call(
        "POST",
        &format!("/networks/{}/connect", q(network)),
        &Body::Json(&json!({ "Container": container })),
        DEFAULT_TIMEOUT,
    )
    .map(drop)
}

/// Disconnects a container from a network (forced).
///
/// # Errors
/// Any [`DockerError`].
pub(crate) fn disconnect_network(
    c: &Client,
    network: &str,
    container: &str,
) -> Result<(), DockerError> {
    c.call(
        "POST",
        &format!("/networks/{}/disconnect", q(network)),
        &Body::Json(&json!({ "Container": container, "Force": true })),
        DEFAULT_TIMEOUT,
    )
    .map(drop)
}

/// `GET /networks/{id}`.
///
/// # Errors
/// Any [`DockerError`].
pub(crate) fn inspect_network(c: &Client, network: &str) -> Result<Value, DockerError> {
    c.call_json(
        "GET",
        &format!("/networks/{}", q(network)),
        &Body::None,
        DEFAULT_TIMEOUT,
    )
}

/// Removes a network.
///
/// # Errors
/// Any [`DockerError`].
pub(crate) fn remove_network(c: &Client, network: &str) -> Result<(), DockerError> {
    c.call(
        "DELETE",
        &format!("/networks/{}", q(network)),
        &Body::None,
        DEFAULT_TIMEOUT,
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_split_into_name_and_tag() {
        assert_eq!(split_image("busybox"), ("busybox", "latest"));
        assert_eq!(split_image("a/b:1.2"), ("a/b", "1.2"));
        assert_eq!(split_image("reg:5000/a"), ("reg:5000/a", "latest"));
        assert_eq!(split_image("a@sha256:ff"), ("a", "sha256:ff"));
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            q(r#"{"label":["a=b"]}"#),
            "%7B%22label%22%3A%5B%22a%3Db%22%5D%7D"
        );
        assert_eq!(q("llmbox-abc_1.2~"), "llmbox-abc_1.2~");
    }
}
