//! `llmbox hub`: the spoke plane on `--spoke-listen` and, for now, `GET /healthz` on
//! `--listen`. (MCP, the activation page and the local spoke's boxes come with the hub layer;
//! it replaces the HTTP part here.)

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;

use argh::FromArgs;

use crate::cluster::plane::{self, PlaneConfig};
use crate::cluster::registry::Registry;
use crate::docker::ManagerConfig;
use crate::store::Store;

use super::{CliError, DEFAULT_LOG_LEVEL, init_logging, parse_duration_flag};

/// The usage line printed with a usage error.
pub const USAGE: &str = "usage: llmbox hub [--no-local] [--listen ADDR] [--spoke-listen ADDR] [--state FILE] [--heartbeat DUR]";

/// Run the hub: MCP and activation page (HTTP), spoke plane (WebSocket), local spoke.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "hub")]
pub struct Args {
    /// serve no boxes on this host (no in-process `local` spoke)
    #[argh(switch)]
    pub no_local: bool,
    /// HTTP address (default 127.0.0.1:8080)
    #[argh(option, default = "String::from(\"127.0.0.1:8080\")")]
    pub listen: String,
    /// spoke-plane address (default 127.0.0.1:8081)
    #[argh(option, default = "String::from(\"127.0.0.1:8081\")")]
    pub spoke_listen: String,
    /// state file (default llmbox-state.json)
    #[argh(option, default = "PathBuf::from(super::spoke_token::DEFAULT_STATE)")]
    pub state: PathBuf,
    /// heartbeat to spokes (default 15s); 3 missed ones drop a spoke
    #[argh(option, default = "String::from(\"15s\")")]
    pub heartbeat: String,
    /// log level: off, error, warn, info, debug, trace (default info)
    #[argh(option, default = "String::from(DEFAULT_LOG_LEVEL)")]
    pub log_level: String,
}

/// Runs the command until killed.
///
/// # Errors
/// Usage errors (exit 2); a bad state file or a busy address (exit 1).
pub fn run(args: Args) -> Result<(), CliError> {
    init_logging(&args.log_level)?;
    crate::util::signal::exit_on_termination();
    let heartbeat = parse_duration_flag("--heartbeat", &args.heartbeat)
        .map_err(|e| CliError::usage(format!("{}\n{USAGE}", e.message)))?;
    if heartbeat.is_zero() {
        return Err(CliError::usage(format!(
            "--heartbeat must be above zero\n{USAGE}"
        )));
    }
    match crate::util::rlimit::raise_nofile_limit() {
        Ok(n) => log::debug!("open-file limit {n}"),
        Err(e) => log::warn!("cannot raise the open-file limit: {e}"),
    }
    let store = Arc::new(Store::open(&args.state).map_err(CliError::runtime)?);
    let registry = Arc::new(Registry::new(store));
    if !args.no_local {
        match super::spoke::box_manager(ManagerConfig::new(crate::cluster::LOCAL_SPOKE)) {
            Ok(manager) => registry.set_local(manager, Arc::new(|| true)),
            Err(e) => log::warn!("no local spoke: {e}"),
        }
    }
    let spoke_listener = TcpListener::bind(&args.spoke_listen)
        .map_err(|e| CliError::runtime(format!("--spoke-listen {}: {e}", args.spoke_listen)))?;
    let http = tiny_http::Server::http(&args.listen)
        .map_err(|e| CliError::runtime(format!("--listen {}: {e}", args.listen)))?;
    let config = PlaneConfig {
        heartbeat,
        ..PlaneConfig::default()
    };
    let _plane = plane::start(spoke_listener, registry, config).map_err(CliError::runtime)?;
    log::info!("hub listening on http://{}", args.listen);
    for request in http.incoming_requests() {
        let (status, body) = match (request.method(), request.url()) {
            (tiny_http::Method::Get, "/healthz") => (200, "ok\n"),
            _ => (404, "not found\n"),
        };
        let _ = request.respond(tiny_http::Response::from_string(body).with_status_code(status));
    }
    Ok(())
}
