//! `llmbox reap`: one shot for cron. Removes pending boxes older than the TTL from this host's
//! Docker daemon (every namespace, or the one given), prints one line per box removed, and
//! exits 0; exits 1 with the clear "cannot reach Docker at …" message when the daemon is down.

use std::io::Write;
use std::time::Duration;

use argh::FromArgs;

use super::{CliError, DEFAULT_LOG_LEVEL, init_logging, parse_duration_flag};
use crate::boxes::is_valid_box_id;
use crate::docker::{self, ReapedBox};

/// Default `--ttl`: as long as the hub's `--auth-ttl`.
pub(crate) const DEFAULT_TTL: &str = "5m";

/// Remove pending boxes older than the TTL from this host's Docker (for cron).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "reap")]
pub struct Args {
    /// age after which a box still waiting for its sign-in is removed (default 5m)
    #[argh(option, default = "DEFAULT_TTL.to_string()")]
    pub(crate) ttl: String,
    /// docker daemon: unix:///var/run/docker.sock or tcp://host:port (default $DOCKER_HOST,
    /// else the local socket)
    #[argh(option)]
    pub(crate) docker_host: Option<String>,
    /// only reap boxes of this namespace (spoke name; `local` for the hub's own)
    #[argh(option)]
    pub(crate) namespace: Option<String>,
    /// the hub's state file: also drop the activation sessions of the reaped boxes
    #[argh(option)]
    pub(crate) state: Option<std::path::PathBuf>,
    /// log level: off, error, warn, info, debug, trace (default info)
    #[argh(option, default = "DEFAULT_LOG_LEVEL.to_string()")]
    pub(crate) log_level: String,
}

/// The validated form of [`Args`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Config {
    /// Pending boxes at least this old are removed.
    pub(crate) ttl: Duration,
    /// Daemon URL.
    pub(crate) docker_host: String,
    /// Restrict to one namespace.
    pub(crate) namespace: Option<String>,
}

impl Config {
    /// Checks the flags.
    ///
    /// # Errors
    /// A usage error for a bad duration or namespace.
    pub(crate) fn from_args(args: &Args) -> Result<Config, CliError> {
        let ttl = parse_duration_flag("--ttl", &args.ttl)?;
        if let Some(ns) = &args.namespace
            && !is_valid_box_id(ns)
        {
            return Err(CliError::usage(format!(
                "invalid --namespace {ns:?}: a spoke name is lowercase letters, digits and '-'"
            )));
        }
        let docker_host = match &args.docker_host {
            Some(h) => h.clone(),
            None => docker::ManagerConfig::new("local").docker_host,
        };
        Ok(Config {
            ttl,
            docker_host,
            namespace: args.namespace.clone(),
        })
    }
}

/// One output line per reaped box.
pub(crate) fn format_reaped(b: &ReapedBox) -> String {
    format!(
        "reaped {} namespace={} box_id={}",
        b.short_id, b.namespace, b.box_id
    )
}

/// Runs the command.
///
/// # Errors
/// Usage errors (exit 2); an unreachable daemon or a failed removal (exit 1).
pub fn run(args: Args) -> Result<(), CliError> {
    init_logging(&args.log_level)?;
    let config = Config::from_args(&args)?;
    let reaped = docker::reap(&config.docker_host, config.ttl, config.namespace.as_deref())
        .map_err(|e| CliError::runtime(format!("reap: {e}")))?;
    // Open the state file before reaping would be nicer, but a missing daemon must still say
    // so first; the file is only touched when something was reaped.
    if let Some(path) = &args.state {
        let store = crate::store::Store::open(path).map_err(CliError::runtime)?;
        let ids: Vec<String> = reaped.iter().map(|b| b.short_id.clone()).collect();
        let dropped = crate::hub::forget_reaped(&store, &ids).map_err(CliError::runtime)?;
        if dropped > 0 {
            log::info!("dropped {dropped} hub sessions of reaped boxes");
        }
    }
    // One timestamped line on stderr per run (and one per box, from the reap itself), so a
    // cron log says when; stdout keeps the one plain line per box that scripts read.
    log::info!(
        "reap: {} pending box(es) older than {} removed",
        reaped.len(),
        crate::util::duration::format_duration(config.ttl)
    );
    let mut out = String::new();
    for b in &reaped {
        out.push_str(&format_reaped(b));
        out.push('\n');
    }
    match std::io::stdout().write_all(out.as_bytes()) {
        // A closed pipe is not a failure (`llmbox reap | head -1`).
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::runtime(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(ttl: &str, ns: Option<&str>) -> Args {
        Args {
            ttl: ttl.into(),
            docker_host: Some("unix:///x.sock".into()),
            namespace: ns.map(String::from),
            state: None,
            log_level: "info".into(),
        }
    }

    #[test]
    fn flags_become_a_validated_config() {
        let c = Config::from_args(&args("90s", Some("edge-1"))).expect("config");
        assert_eq!(c.ttl, Duration::from_secs(90));
        assert_eq!(c.namespace.as_deref(), Some("edge-1"));
        assert_eq!(c.docker_host, "unix:///x.sock");
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        let e = Config::from_args(&args("soon", None)).expect_err("ttl");
        assert_eq!(e.code, crate::cli::EXIT_USAGE);
        assert!(e.message.contains("--ttl"), "{}", e.message);
        let e = Config::from_args(&args("5m", Some("Bad NS"))).expect_err("ns");
        assert_eq!(e.code, crate::cli::EXIT_USAGE);
    }

    #[test]
    fn an_unreachable_daemon_is_a_runtime_error_naming_it() {
        let mut a = args("0", None);
        a.docker_host = Some(format!(
            "unix:///tmp/llmbox-reap-nodaemon-{}.sock",
            std::process::id()
        ));
        a.log_level = "off".into();
        let e = run(a).expect_err("no daemon");
        assert_eq!(e.code, crate::cli::EXIT_RUNTIME);
        assert!(
            e.message
                .contains("cannot reach Docker at unix:///tmp/llmbox-reap-nodaemon-"),
            "{}",
            e.message
        );
    }
}
