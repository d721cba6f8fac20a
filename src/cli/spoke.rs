//! `llmbox spoke`: dial the hub and serve box verbs; its subcommands manage join tokens and
//! enrolled spokes on the hub's state file (`spoke_token`).

use std::path::PathBuf;
use std::sync::Arc;

use argh::FromArgs;

use crate::boxes::BoxManager;
use crate::cluster::ClusterError;
use crate::cluster::serve::Policy;
use crate::cluster::spoke::{self as spoke_loop, SpokeConfig, SpokeStop};
use crate::docker::ManagerConfig;

use super::{CliError, DEFAULT_LOG_LEVEL, init_logging, parse_duration_flag, spoke_token};

/// The usage line printed with a usage error.
pub(crate) const USAGE: &str = "usage: llmbox spoke --hub URL [--token T] [--credentials FILE] [--allowed-image IMG]... [--ca-file PEM] [--heartbeat DUR]";

/// Dial the hub and serve box verbs against this host's Docker; or manage tokens and spokes.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "spoke")]
pub struct Args {
    /// hub URL: ws://host:port or wss://host (path /spoke/connect is added)
    #[argh(option)]
    pub(crate) hub: Option<String>,
    /// one-time join token from `llmbox spoke token create` (first enrollment)
    #[argh(option)]
    pub(crate) token: Option<String>,
    /// credentials file, written 0600 at enrollment (default $LLMBOX_CREDENTIALS, else
    /// /var/lib/llmbox/llmbox-spoke.json as root, else $XDG_STATE_HOME/llmbox/llmbox-spoke.json)
    #[argh(option)]
    pub(crate) credentials: Option<PathBuf>,
    /// an image boxes may run (repeatable; none given: any image)
    #[argh(option)]
    pub(crate) allowed_image: Vec<String>,
    /// PEM file with extra CA certificates for wss:// (a private CA)
    #[argh(option)]
    pub(crate) ca_file: Option<PathBuf>,
    /// heartbeat interval (default 15s); 3 missed ones mean the hub is gone
    #[argh(option, default = "String::from(\"15s\")")]
    pub(crate) heartbeat: String,
    /// TCP connect and upgrade timeout (default 10s)
    #[argh(option, default = "String::from(\"10s\")")]
    pub(crate) connect_timeout: String,
    /// verbs running at once (default 32); past it a request is refused at once
    #[argh(option, default = "spoke_loop::DEFAULT_MAX_WORKERS")]
    pub(crate) max_workers: usize,
    /// the Docker daemon (default $DOCKER_HOST or unix:///var/run/docker.sock)
    #[argh(option)]
    pub(crate) docker_host: Option<String>,
    /// a Claude binary injected into every box at /usr/local/bin/claude
    #[argh(option)]
    pub(crate) claude_bin: Option<PathBuf>,
    /// extra arguments for `claude remote-control` (default "--spawn same-dir")
    #[argh(option)]
    pub(crate) remote_args: Option<String>,
    /// most boxes on this spoke (default 50)
    #[argh(option)]
    pub(crate) max_boxes: Option<usize>,
    /// memory limit per box in MiB (default 4096)
    #[argh(option)]
    pub(crate) memory_mb: Option<u64>,
    /// CPU limit per box (default 2)
    #[argh(option)]
    pub(crate) cpus: Option<f64>,
    /// process limit per box (default 4096)
    #[argh(option)]
    pub(crate) pids_limit: Option<i64>,
    /// uid[:gid] exec_llmbox commands run as in the boxes (default 1000:1000); 0 runs them as
    /// root, which exposes each person's Claude credentials to the caller
    #[argh(option)]
    pub(crate) exec_user: Option<String>,
    /// a container joined to every box's network (repeatable)
    #[argh(option)]
    pub(crate) box_peer: Vec<String>,
    /// log level: off, error, warn, info, debug, trace (default info)
    #[argh(option, default = "String::from(DEFAULT_LOG_LEVEL)")]
    pub(crate) log_level: String,
    #[argh(subcommand)]
    pub(crate) command: Option<spoke_token::Command>,
}

/// Runs the command.
///
/// # Errors
/// Usage errors (exit 2), a rejected enrollment (exit 3), runtime failures (exit 1).
pub fn run(args: Args) -> Result<(), CliError> {
    if let Some(command) = args.command {
        return spoke_token::run(command);
    }
    init_logging(&args.log_level)?;
    crate::util::signal::exit_on_termination();
    let usage = |msg: String| CliError::usage(format!("{msg}\n{USAGE}"));
    let Some(hub) = args.hub.clone() else {
        return Err(usage("--hub is required".into()));
    };
    let heartbeat =
        parse_duration_flag("--heartbeat", &args.heartbeat).map_err(|e| usage(e.message))?;
    let connect_timeout = parse_duration_flag("--connect-timeout", &args.connect_timeout)
        .map_err(|e| usage(e.message))?;
    if heartbeat.is_zero() || connect_timeout.is_zero() {
        return Err(usage(
            "--heartbeat and --connect-timeout must be above zero".into(),
        ));
    }
    if args.max_workers == 0 {
        return Err(usage("--max-workers must be at least 1".into()));
    }
    box_flags(&args).validate().map_err(|e| usage(e.message))?;
    box_flags(&args).warn_if_root_exec();
    spoke_loop::parse_hub_url(&hub).map_err(|e| usage(e.to_string()))?;
    let mut config = SpokeConfig::new(&hub);
    config.token = args.token.clone();
    let credentials = crate::paths::locate(
        crate::paths::FileKind::Credentials,
        args.credentials.as_deref(),
    )
    .map_err(CliError::runtime)?;
    log::info!("{credentials}");
    config.credentials = credentials.path;
    report_docker(&manager_config(&args, "probe").docker_host);
    config.policy = Policy {
        allowed_images: args.allowed_image.clone(),
    };
    config.ca_file = args.ca_file.clone();
    config.heartbeat = heartbeat;
    config.connect_timeout = connect_timeout;
    config.max_workers = args.max_workers;
    match crate::util::rlimit::raise_nofile_limit() {
        Ok(n) => log::debug!("open-file limit {n}"),
        Err(e) => log::warn!("cannot raise the open-file limit: {e}"),
    }
    let mut factory = |name: &str| box_manager(manager_config(&args, name)).map_err(|e| e.message);
    spoke_loop::run(&config, &mut factory, &SpokeStop::default()).map_err(|e| match e {
        ClusterError::Rejected(msg) => CliError::rejected(msg),
        ClusterError::Invalid(msg) => CliError::usage(format!("{msg}\n{USAGE}")),
        other => CliError::runtime(other),
    })
}

/// Logs, once at start, whether this host's Docker answers: a spoke whose socket is wrong still
/// enrolls and shows connected, and every create on it fails, so it says so at WARN.
fn report_docker(host: &str) {
    let answer = crate::docker::client::Client::new(host).and_then(|c| c.ping());
    match answer {
        Ok(version) => log::info!("Docker at {host} answers (API {version})"),
        Err(e) => log::warn!(
            "{e}: boxes cannot be created on this spoke until Docker answers (the hub's list_spokes shows this spoke's Docker error)"
        ),
    }
}

/// The Docker manager settings from the flags, for namespace `name` (the enrolled name).
pub(crate) fn manager_config(args: &Args, name: &str) -> ManagerConfig {
    box_flags(args).manager_config(name)
}

/// The box-manager flags, shared in shape with `llmbox hub`.
fn box_flags(args: &Args) -> super::BoxFlags<'_> {
    super::BoxFlags {
        docker_host: args.docker_host.as_deref(),
        claude_bin: args.claude_bin.as_deref(),
        remote_args: args.remote_args.as_deref(),
        max_boxes: args.max_boxes,
        memory_mb: args.memory_mb,
        cpus: args.cpus,
        pids_limit: args.pids_limit,
        box_peers: &args.box_peer,
        exec_user: args.exec_user.as_deref(),
    }
}

/// Builds this host's box manager. The one place `llmbox spoke` (and the hub's `local` spoke)
/// gets its manager. The daemon need not be up yet: the manager connects on first use.
///
/// # Errors
/// A `--docker-host` that is not a `unix://` or `tcp://` URL.
pub(crate) fn box_manager(config: ManagerConfig) -> Result<Arc<dyn BoxManager>, CliError> {
    let manager = crate::docker::DockerBoxManager::new(config).map_err(CliError::usage)?;
    Ok(Arc::new(manager))
}
