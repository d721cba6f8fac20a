//! One file per command: parse flags into a validated config, wire the parts, run.
//! Only `main` turns a [`CliError`] into an exit code.

pub mod apikey;
pub mod hub;
pub mod reap;
pub mod spoke;
pub(crate) mod spoke_token;

use std::fmt;

use simplelog::{ColorChoice, ConfigBuilder, LevelFilter, TermLogger, TerminalMode};

/// Exit code for a runtime failure.
pub(crate) const EXIT_RUNTIME: u8 = 1;
/// Exit code for bad flags or arguments.
pub const EXIT_USAGE: u8 = 2;
/// Exit code for a spoke whose enrollment the hub rejected.
pub(crate) const EXIT_REJECTED: u8 = 3;

/// A command's failure: what to print and which exit code `main` uses.
#[derive(Debug)]
pub struct CliError {
    /// One of the `EXIT_*` codes.
    pub code: u8,
    /// The full message, printed after `llmbox: `.
    pub message: String,
}

impl CliError {
    /// A runtime failure (exit 1).
    pub fn runtime(message: impl fmt::Display) -> Self {
        CliError {
            code: EXIT_RUNTIME,
            message: message.to_string(),
        }
    }

    /// Bad flags or arguments (exit 2).
    pub fn usage(message: impl fmt::Display) -> Self {
        CliError {
            code: EXIT_USAGE,
            message: message.to_string(),
        }
    }

    /// The hub rejected this spoke's enrollment (exit 3).
    pub(crate) fn rejected(message: impl fmt::Display) -> Self {
        CliError {
            code: EXIT_REJECTED,
            message: message.to_string(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Default for every command's `--log-level`.
pub(crate) const DEFAULT_LOG_LEVEL: &str = "info";

/// Parses a `--log-level` value (`off`, `error`, `warn`, `info`, `debug`, `trace`).
///
/// # Errors
/// A usage error naming the accepted levels.
pub(crate) fn parse_log_level(level: &str) -> Result<LevelFilter, CliError> {
    level.parse().map_err(|_| {
        CliError::usage(format!(
            "invalid --log-level {level:?}: use off, error, warn, info, debug or trace"
        ))
    })
}

/// Starts logging to stderr at `level`, in colour only when stderr is a terminal.
///
/// # Errors
/// A usage error for a bad level.
pub(crate) fn init_logging(level: &str) -> Result<(), CliError> {
    let filter = parse_log_level(level)?;
    let config = ConfigBuilder::new()
        .set_target_level(LevelFilter::Error)
        .set_thread_level(LevelFilter::Off)
        // RFC 3339 in UTC with the date (simplelog's default is the time of day only): a log
        // read days later, or merged from several hosts, still orders.
        .set_time_format_rfc3339()
        // tungstenite logs whole messages (join tokens, credentials, codes) at trace level.
        .add_filter_ignore_str("tungstenite")
        .build();
    let colour = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    };
    // A second init (tests that run several commands in one process) keeps the first logger.
    let _ = TermLogger::init(filter, config, TerminalMode::Stderr, colour);
    Ok(())
}

/// Parses a duration flag, naming the flag in the error.
///
/// # Errors
/// A usage error.
pub(crate) fn parse_duration_flag(
    flag: &str,
    value: &str,
) -> Result<std::time::Duration, CliError> {
    crate::util::duration::parse_duration(value)
        .map_err(|e| CliError::usage(format!("{flag}: {e}")))
}

/// The box-manager flags `llmbox hub` (for its `local` spoke) and `llmbox spoke` share; one
/// place turns them into a [`crate::docker::ManagerConfig`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BoxFlags<'a> {
    /// `--docker-host`.
    pub(crate) docker_host: Option<&'a str>,
    /// `--claude-bin`.
    pub(crate) claude_bin: Option<&'a std::path::Path>,
    /// `--remote-args`.
    pub(crate) remote_args: Option<&'a str>,
    /// `--max-boxes`.
    pub(crate) max_boxes: Option<usize>,
    /// `--memory-mb`.
    pub(crate) memory_mb: Option<u64>,
    /// `--cpus`.
    pub(crate) cpus: Option<f64>,
    /// `--pids-limit`.
    pub(crate) pids_limit: Option<i64>,
    /// `--box-peer` (repeatable).
    pub(crate) box_peers: &'a [String],
    /// `--exec-user UID[:GID]`.
    pub(crate) exec_user: Option<&'a str>,
}

impl BoxFlags<'_> {
    /// Checks the values a Docker create would otherwise reject late, or silently misread
    /// (`--cpus nan` would mean no CPU limit at all).
    ///
    /// # Errors
    /// A usage error naming the flag.
    pub(crate) fn validate(&self) -> Result<(), CliError> {
        if let Some(cpus) = self.cpus
            && !(cpus.is_finite() && cpus > 0.0 && cpus <= 1024.0)
        {
            return Err(CliError::usage(format!(
                "invalid --cpus {cpus}: use a number of CPUs above 0, like 0.5 or 2"
            )));
        }
        if self
            .memory_mb
            .is_some_and(|mb| !(6..=1 << 30).contains(&mb))
        {
            return Err(CliError::usage(
                "invalid --memory-mb: use at least 6 (Docker's minimum), in MiB",
            ));
        }
        if self.pids_limit.is_some_and(|n| n < 1) {
            return Err(CliError::usage("invalid --pids-limit: use at least 1"));
        }
        if self.max_boxes == Some(0) {
            return Err(CliError::usage("invalid --max-boxes: use at least 1"));
        }
        self.exec_user()?;
        if let Some(bin) = self.claude_bin
            && !bin.is_file()
        {
            return Err(CliError::usage(format!(
                "--claude-bin {}: no such file",
                bin.display()
            )));
        }
        Ok(())
    }

    /// The user `exec` runs as: `--exec-user`, else [`crate::docker::ExecUser::DEFAULT`].
    ///
    /// # Errors
    /// A usage error naming the flag.
    pub(crate) fn exec_user(&self) -> Result<crate::docker::ExecUser, CliError> {
        self.exec_user
            .map_or(Ok(crate::docker::ExecUser::DEFAULT), |v| {
                crate::docker::ExecUser::parse(v)
                    .map_err(|e| CliError::usage(format!("invalid --exec-user: {e}")))
            })
    }

    /// Logs, once at start, what `--exec-user 0` exposes (nothing when exec is unprivileged).
    pub(crate) fn warn_if_root_exec(&self) {
        if self.exec_user().is_ok_and(|u| u.is_root()) {
            log::warn!("{}", crate::docker::ROOT_EXEC_WARNING);
        }
    }

    /// The manager settings for `namespace`: the defaults, overridden by every flag given.
    /// (Call [`BoxFlags::validate`] first: an invalid `--exec-user` falls back to the default.)
    pub(crate) fn manager_config(&self, namespace: &str) -> crate::docker::ManagerConfig {
        let mut c = crate::docker::ManagerConfig::new(namespace);
        if let Some(h) = self.docker_host {
            c.docker_host = h.to_string();
        }
        c.claude_bin = self.claude_bin.map(std::path::Path::to_path_buf);
        if let Some(r) = self.remote_args {
            c.remote_args = r.to_string();
        }
        if let Some(n) = self.max_boxes {
            c.max_boxes = n;
        }
        if let Some(n) = self.memory_mb {
            c.memory_mb = n;
        }
        if let Some(n) = self.cpus {
            c.cpus = n;
        }
        if let Some(n) = self.pids_limit {
            c.pids_limit = n;
        }
        c.box_peers = self.box_peers.to_vec();
        c.exec_user = self.exec_user().unwrap_or_default();
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::ExecUser;

    #[test]
    fn exec_user_defaults_to_1000_and_takes_uid_or_uid_gid() {
        let user = |v: Option<&str>| {
            BoxFlags {
                exec_user: v,
                ..Default::default()
            }
            .manager_config("n")
            .exec_user
        };
        assert_eq!(
            user(None),
            ExecUser {
                uid: 1000,
                gid: 1000
            }
        );
        assert_eq!(
            user(Some("1234")),
            ExecUser {
                uid: 1234,
                gid: 1234
            }
        );
        assert_eq!(user(Some("5:6")), ExecUser { uid: 5, gid: 6 });
        assert!(user(Some("0")).is_root());
        assert!(!user(None).is_root());
    }

    #[test]
    fn box_flags_refuse_values_docker_would_misread() {
        let ok = BoxFlags {
            cpus: Some(0.5),
            memory_mb: Some(512),
            pids_limit: Some(100),
            max_boxes: Some(1),
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
        for (bad, flag) in [
            (
                BoxFlags {
                    cpus: Some(f64::NAN),
                    ..ok
                },
                "--cpus",
            ),
            (
                BoxFlags {
                    cpus: Some(0.0),
                    ..ok
                },
                "--cpus",
            ),
            (
                BoxFlags {
                    cpus: Some(-1.0),
                    ..ok
                },
                "--cpus",
            ),
            (
                BoxFlags {
                    memory_mb: Some(1),
                    ..ok
                },
                "--memory-mb",
            ),
            (
                BoxFlags {
                    pids_limit: Some(0),
                    ..ok
                },
                "--pids-limit",
            ),
            (
                BoxFlags {
                    max_boxes: Some(0),
                    ..ok
                },
                "--max-boxes",
            ),
            (
                BoxFlags {
                    claude_bin: Some(std::path::Path::new("/nonexistent/claude")),
                    ..ok
                },
                "--claude-bin",
            ),
            (
                BoxFlags {
                    exec_user: Some("node"),
                    ..ok
                },
                "--exec-user",
            ),
            (
                BoxFlags {
                    exec_user: Some("1000:"),
                    ..ok
                },
                "--exec-user",
            ),
            (
                BoxFlags {
                    exec_user: Some("-1"),
                    ..ok
                },
                "--exec-user",
            ),
        ] {
            let err = bad.validate().expect_err(flag);
            assert_eq!(err.code, EXIT_USAGE);
            assert!(err.message.contains(flag), "{}", err.message);
        }
    }
}
