//! `llmbox hub`: the MCP endpoint and activation page (HTTP front), the spoke plane, the
//! in-process `local` spoke on this host's Docker, and the reaper (DESIGN §2, §8).
//!
//! Flags are parsed into a validated [`Config`] first; `run` only wires parts together. A
//! Docker daemon that is down does not stop the hub: `local` reports disconnected and its verbs
//! fail clearly, while remote spokes are served as usual.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use argh::FromArgs;

use super::{CliError, DEFAULT_LOG_LEVEL, init_logging, parse_duration_flag};
use crate::cluster::plane::{self, PlaneConfig};
use crate::cluster::registry::Registry;
use crate::cluster::{LOCAL_SPOKE, SpokeDirectory};
use crate::docker::{DockerBoxManager, ManagerConfig};
use crate::hub::audit::AuditLog;
use crate::hub::auth::{Access, Surface};
use crate::hub::http::{FrontLimits, HttpFront};
use crate::hub::reaper::Reaper;
use crate::hub::signin::{GithubConfig, OidcConfig, Rules, Signin, SigninConfig, SigninError};
use crate::hub::{Hub, HubConfig};
use crate::paths::{self, FileKind};
use crate::store::Store;

/// Default `--listen`.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default `--spoke-listen`.
pub(crate) const DEFAULT_SPOKE_LISTEN: &str = "127.0.0.1:8081";

/// The usage line printed with a usage error.
pub(crate) const USAGE: &str = "usage: llmbox hub [--listen ADDR] [--mcp-listen ADDR] [--spoke-listen ADDR] [--public-url URL] [--state FILE] [--no-local] [--box-image IMAGE] [--claude-bin FILE] [--hook FILE]... (llmbox hub --help lists every flag)";

/// Run the hub: MCP and activation page (HTTP), spoke plane (WebSocket), local spoke, reaper.
#[derive(FromArgs, Debug, Default)]
#[argh(subcommand, name = "hub")]
pub struct Args {
    /// HTTP address for MCP and the activation page (default 127.0.0.1:8080)
    #[argh(option, default = "String::from(DEFAULT_LISTEN)")]
    pub(crate) listen: String,
    /// serve MCP (and /metrics) only on this address; --listen then serves the activation page
    /// and /healthz only
    #[argh(option)]
    pub(crate) mcp_listen: Option<String>,
    /// serve MCP without API keys even beyond loopback (only behind a proxy that authenticates)
    #[argh(switch)]
    pub(crate) insecure_no_auth: bool,
    /// append one JSON line per tool call and activation attempt to this file (0600; reopened
    /// on SIGHUP)
    #[argh(option)]
    pub(crate) audit_log: Option<PathBuf>,
    /// spoke-plane address spokes dial (default 127.0.0.1:8081)
    #[argh(option, default = "String::from(DEFAULT_SPOKE_LISTEN)")]
    pub(crate) spoke_listen: String,
    /// base of the links handed out, as people reach this hub (default http://<listen>)
    #[argh(option)]
    pub(crate) public_url: Option<String>,
    /// the URL spokes dial, as /admin and the start-up log show it (default: the public URL's
    /// host on the --spoke-listen port, wss:// when the public URL is https); set it when a
    /// proxy publishes the spoke plane elsewhere, like wss://hub.example
    #[argh(option)]
    pub(crate) spoke_url: Option<String>,
    /// state file (default $LLMBOX_STATE, else /var/lib/llmbox/llmbox-state.json as root, else
    /// $XDG_STATE_HOME/llmbox/llmbox-state.json); checked at start, locked while the hub runs
    #[argh(option)]
    pub(crate) state: Option<PathBuf>,
    /// serve no boxes on this host (no in-process `local` spoke)
    #[argh(switch)]
    pub(crate) no_local: bool,
    /// the Docker namespace label of the local spoke's boxes (default local); give each hub its
    /// own when several share one Docker daemon
    #[argh(option)]
    pub(crate) local_namespace: Option<String>,
    /// image for boxes whose create names none (default llmbox-box:latest)
    #[argh(option, default = "String::from(crate::hub::DEFAULT_BOX_IMAGE)")]
    pub(crate) box_image: String,
    /// pending boxes older than this are reaped (default 5m)
    #[argh(option, default = "String::from(\"5m\")")]
    pub(crate) auth_ttl: String,
    /// how often the reaper runs; 0 turns it off (default 30s)
    #[argh(option, default = "String::from(\"30s\")")]
    pub(crate) reap_interval: String,
    /// a box.create / box.destroy hook executable (repeatable, run in order)
    #[argh(option)]
    pub(crate) hook: Vec<PathBuf>,
    /// heartbeat to spokes (default 15s); 3 missed ones drop a spoke
    #[argh(option, default = "String::from(\"15s\")")]
    pub(crate) heartbeat: String,
    /// the Docker daemon of the local spoke (default $DOCKER_HOST or unix:///var/run/docker.sock)
    #[argh(option)]
    pub(crate) docker_host: Option<String>,
    /// a Claude binary injected into every local box at /usr/local/bin/claude
    #[argh(option)]
    pub(crate) claude_bin: Option<PathBuf>,
    /// extra arguments for `claude remote-control` (default "--spawn same-dir")
    #[argh(option)]
    pub(crate) remote_args: Option<String>,
    /// most boxes on the local spoke (default 50)
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
    /// a container joined to every local box's network (repeatable)
    #[argh(option)]
    pub(crate) box_peer: Vec<String>,
    /// log level: off, error, warn, info, debug, trace (default info)
    #[argh(option, default = "String::from(DEFAULT_LOG_LEVEL)")]
    pub(crate) log_level: String,
    /// an OpenID Connect issuer people sign in with on the activation page (repeatable; each
    /// with its own --oidc-client-id and --oidc-client-secret-file, in order)
    #[argh(option)]
    pub(crate) oidc_issuer: Vec<String>,
    /// the hub's client id at the matching --oidc-issuer
    #[argh(option)]
    pub(crate) oidc_client_id: Vec<String>,
    /// a file holding the client secret for the matching --oidc-issuer
    #[argh(option)]
    pub(crate) oidc_client_secret_file: Vec<PathBuf>,
    /// the button label of the matching --oidc-issuer (default: Google for Google, else the
    /// issuer's host)
    #[argh(option)]
    pub(crate) oidc_name: Vec<String>,
    /// a GitHub OAuth app's client id: people sign in with GitHub (their primary, verified email)
    #[argh(option)]
    pub(crate) github_client_id: Option<String>,
    /// a file holding that GitHub app's client secret
    #[argh(option)]
    pub(crate) github_client_secret_file: Option<PathBuf>,
    /// an email address that may activate boxes once signed in (repeatable)
    #[argh(option)]
    pub(crate) allow_email: Vec<String>,
    /// a domain whose verified addresses may activate boxes (repeatable; Google's hd claim for
    /// Google accounts)
    #[argh(option)]
    pub(crate) allow_domain: Vec<String>,
    /// an email address that may use /admin (repeatable; also allowed to activate)
    #[argh(option)]
    pub(crate) admin_email: Vec<String>,
    /// how long a sign-in lasts (default 12h)
    #[argh(option, default = "String::from(\"12h\")")]
    pub(crate) session_ttl: String,
    /// the hub is its own OAuth 2.1 authorization server for MCP (chatbot connectors); people
    /// sign in through the sign-in providers, so one is required
    #[argh(switch)]
    pub(crate) mcp_oauth: bool,
    /// how long an OAuth access token lives (default 1h)
    #[argh(option, default = "String::from(\"1h\")")]
    pub(crate) oauth_access_ttl: String,
    /// how long an OAuth refresh token lives (default 30d)
    #[argh(option, default = "String::from(\"30d\")")]
    pub(crate) oauth_refresh_ttl: String,
    /// TESTS ONLY: fetch client ID metadata documents over plain http from loopback
    #[argh(switch)]
    pub(crate) oauth_test_cimd_loopback: bool,
}

/// The validated form of [`Args`].
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// HTTP front address.
    pub(crate) listen: SocketAddr,
    /// The private MCP address (`--mcp-listen`); `None` serves MCP on `listen`.
    pub(crate) mcp_listen: Option<SocketAddr>,
    /// `--insecure-no-auth`.
    pub(crate) insecure_no_auth: bool,
    /// `--audit-log`.
    pub(crate) audit_log: Option<PathBuf>,
    /// Spoke plane address.
    pub(crate) spoke_listen: SocketAddr,
    /// The hub layer's settings.
    pub(crate) hub: HubConfig,
    /// `--state`; `None` takes the default of [`crate::paths`].
    pub(crate) state: Option<PathBuf>,
    /// The local spoke's manager settings; `None` with `--no-local`.
    pub(crate) local: Option<ManagerConfig>,
    /// Spoke heartbeat.
    pub(crate) heartbeat: Duration,
    /// The URL spokes dial (`--spoke-url`, else derived from the public URL).
    pub(crate) spoke_url: String,
    /// Sign-in on the activation page; `None` without `--oidc-issuer`.
    pub(crate) signin: Option<SigninConfig>,
    /// `--mcp-oauth`; `None` without it.
    pub(crate) oauth: Option<crate::hub::oauth::OAuthConfig>,
}

fn parse_addr(flag: &str, value: &str) -> Result<SocketAddr, CliError> {
    value.parse().map_err(|_| {
        CliError::usage(format!(
            "invalid {flag} {value:?}: use IP:PORT, like 127.0.0.1:8080\n{USAGE}"
        ))
    })
}

impl Config {
    /// Checks every flag.
    ///
    /// # Errors
    /// A usage error naming the flag.
    pub(crate) fn from_args(args: &Args) -> Result<Config, CliError> {
        let usage = |e: CliError| CliError::usage(format!("{}\n{USAGE}", e.message));
        let listen = parse_addr("--listen", &args.listen)?;
        let mcp_listen = args
            .mcp_listen
            .as_deref()
            .map(|a| parse_addr("--mcp-listen", a))
            .transpose()?;
        let spoke_listen = parse_addr("--spoke-listen", &args.spoke_listen)?;
        let heartbeat = parse_duration_flag("--heartbeat", &args.heartbeat).map_err(usage)?;
        let auth_ttl = parse_duration_flag("--auth-ttl", &args.auth_ttl).map_err(usage)?;
        let reap_interval =
            parse_duration_flag("--reap-interval", &args.reap_interval).map_err(usage)?;
        if heartbeat.is_zero() || auth_ttl.is_zero() {
            return Err(CliError::usage(format!(
                "--heartbeat and --auth-ttl must be above zero\n{USAGE}"
            )));
        }
        let public_url = args
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{listen}"));
        if !(public_url.starts_with("http://") || public_url.starts_with("https://"))
            || public_url.contains(char::is_whitespace)
        {
            return Err(CliError::usage(format!(
                "invalid --public-url {public_url:?}: use http(s)://host[:port][/prefix]\n{USAGE}"
            )));
        }
        if args.box_image.trim().is_empty() {
            return Err(CliError::usage(format!("--box-image is empty\n{USAGE}")));
        }
        for hook in &args.hook {
            if !hook.is_file() {
                return Err(CliError::usage(format!(
                    "--hook {}: no such file",
                    hook.display()
                )));
            }
        }
        box_flags(args)
            .validate()
            .map_err(|e| CliError::usage(format!("{}\n{USAGE}", e.message)))?;
        let mut hub = HubConfig::new(&public_url);
        hub.box_image = args.box_image.clone();
        hub.auth_ttl = auth_ttl;
        hub.reap_interval = reap_interval;
        hub.hooks = args.hook.clone();
        if let Some(ns) = &args.local_namespace
            && !crate::boxes::is_valid_box_id(ns)
        {
            return Err(CliError::usage(format!(
                "invalid --local-namespace {ns:?}: use lowercase letters, digits and '-'\n{USAGE}"
            )));
        }
        let local = (!args.no_local).then(|| local_manager_config(args));
        let spoke_url = match &args.spoke_url {
            Some(u) => {
                let u = u.trim_end_matches('/');
                if !(u.starts_with("ws://") || u.starts_with("wss://"))
                    || u.contains(char::is_whitespace)
                {
                    return Err(CliError::usage(format!(
                        "invalid --spoke-url {u:?}: use ws://host[:port] or wss://host[:port]\n{USAGE}"
                    )));
                }
                u.to_string()
            }
            None => spoke_url(&public_url, spoke_listen),
        };
        let signin = signin_config(args, &public_url, &spoke_url)?;
        let oauth = oauth_config(args, &public_url, signin.is_some()).map_err(usage)?;
        Ok(Config {
            listen,
            mcp_listen,
            insecure_no_auth: args.insecure_no_auth,
            audit_log: args.audit_log.clone(),
            spoke_listen,
            hub,
            state: args.state.clone(),
            local,
            heartbeat,
            spoke_url,
            signin,
            oauth,
        })
    }
}

/// `--mcp-oauth` and its flags, checked: it needs a sign-in provider.
fn oauth_config(
    args: &Args,
    public_url: &str,
    has_signin: bool,
) -> Result<Option<crate::hub::oauth::OAuthConfig>, CliError> {
    if !args.mcp_oauth {
        if args.oauth_test_cimd_loopback {
            return Err(CliError::usage(
                "--oauth-test-cimd-loopback needs --mcp-oauth",
            ));
        }
        return Ok(None);
    }
    if !has_signin {
        return Err(CliError::usage(
            "--mcp-oauth needs a sign-in provider (--oidc-issuer … or --github-client-id …) and an allow rule: people sign in there before a chatbot may act as them",
        ));
    }
    let access = parse_duration_flag("--oauth-access-ttl", &args.oauth_access_ttl)?;
    let refresh = parse_duration_flag("--oauth-refresh-ttl", &args.oauth_refresh_ttl)?;
    if access.is_zero() || refresh.is_zero() || refresh < access {
        return Err(CliError::usage(
            "--oauth-access-ttl and --oauth-refresh-ttl must be above zero, the refresh one at least as long",
        ));
    }
    let mut c = crate::hub::oauth::OAuthConfig::new(public_url);
    c.access_ttl = access;
    c.refresh_ttl = refresh;
    c.cimd_allow_loopback_http = args.oauth_test_cimd_loopback;
    Ok(Some(c))
}

/// The sign-in flags, checked; client secrets read from their files. `None` without any.
fn signin_config(
    args: &Args,
    public_url: &str,
    spoke_url: &str,
) -> Result<Option<SigninConfig>, CliError> {
    let usage = |m: String| CliError::usage(format!("{m}\n{USAGE}"));
    let n = args.oidc_issuer.len();
    let rules = Rules {
        emails: lowercased(&args.allow_email),
        domains: lowercased(&args.allow_domain),
        admins: lowercased(&args.admin_email),
    };
    let any_rule =
        !(rules.emails.is_empty() && rules.domains.is_empty() && rules.admins.is_empty());
    let github = match (&args.github_client_id, &args.github_client_secret_file) {
        (Some(id), Some(file)) => Some(GithubConfig::new(
            id,
            &read_secret("--github-client-secret-file", file).map_err(usage)?,
        )),
        (None, None) => None,
        _ => {
            return Err(usage(
                "--github-client-id and --github-client-secret-file go together".into(),
            ));
        }
    };
    if n == 0 && github.is_none() {
        if any_rule || !args.oidc_client_id.is_empty() || !args.oidc_client_secret_file.is_empty() {
            return Err(usage(
                "--allow-email, --allow-domain, --admin-email and --oidc-client-* need a sign-in provider (--oidc-issuer or --github-client-id)".into(),
            ));
        }
        return Ok(None);
    }
    let session_ttl =
        parse_duration_flag("--session-ttl", &args.session_ttl).map_err(|e| usage(e.message))?;
    if args.oidc_client_id.len() != n || args.oidc_client_secret_file.len() != n {
        return Err(usage(format!(
            "each --oidc-issuer needs its own --oidc-client-id and --oidc-client-secret-file ({n} issuers, {} ids, {} secret files)",
            args.oidc_client_id.len(),
            args.oidc_client_secret_file.len()
        )));
    }
    if args.oidc_name.len() > n {
        return Err(usage("more --oidc-name than --oidc-issuer".into()));
    }
    if !any_rule {
        return Err(usage(
            "a sign-in provider needs at least one --allow-email, --allow-domain or --admin-email: without one nobody could activate a box".into(),
        ));
    }
    if session_ttl.is_zero() {
        return Err(usage("--session-ttl must be above zero".into()));
    }
    let mut oidc = Vec::new();
    for i in 0..n {
        let issuer = args.oidc_issuer[i].trim_end_matches('/').to_string();
        if !crate::hub::signin::oidc::endpoint_allowed(&issuer) {
            return Err(usage(format!(
                "--oidc-issuer {issuer:?}: use https:// (plain http only for a provider on loopback)"
            )));
        }
        let secret = read_secret(
            "--oidc-client-secret-file",
            &args.oidc_client_secret_file[i],
        )
        .map_err(usage)?;
        let label = args.oidc_name.get(i).cloned().unwrap_or_else(|| {
            if issuer == "https://accounts.google.com" {
                "Google".into()
            } else {
                issuer
                    .split("://")
                    .nth(1)
                    .and_then(|r| r.split('/').next())
                    .unwrap_or("OpenID Connect")
                    .to_string()
            }
        });
        oidc.push(OidcConfig {
            label,
            issuer,
            client_id: args.oidc_client_id[i].clone(),
            client_secret: secret,
        });
    }
    Ok(Some(SigninConfig {
        public_url: public_url.trim_end_matches('/').to_string(),
        oidc,
        github,
        rules,
        session_ttl,
        spoke_url: spoke_url.to_string(),
    }))
}

/// The URL spokes dial, for the lines `/admin` hands out: the public URL's host on the spoke
/// plane's port, `wss://` when the public URL is https (a TLS proxy in front), else `ws://`.
fn spoke_url(public_url: &str, spoke_listen: SocketAddr) -> String {
    let (scheme, rest) = match public_url.strip_prefix("https://") {
        Some(rest) => ("wss", rest),
        None => (
            "ws",
            public_url.strip_prefix("http://").unwrap_or(public_url),
        ),
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.find(']') {
        Some(end) if authority.starts_with('[') => &authority[..=end],
        _ => authority.split(':').next().unwrap_or(""),
    };
    format!("{scheme}://{host}:{}", spoke_listen.port())
}

/// A client secret from its file, trimmed; an empty file is refused.
fn read_secret(flag: &str, file: &std::path::Path) -> Result<String, String> {
    let text =
        std::fs::read_to_string(file).map_err(|e| format!("{flag} {}: {e}", file.display()))?;
    let secret = text.trim().to_string();
    if secret.is_empty() {
        return Err(format!("{flag} {}: the file is empty", file.display()));
    }
    Ok(secret)
}

fn lowercased(list: &[String]) -> Vec<String> {
    list.iter().map(|s| s.trim().to_ascii_lowercase()).collect()
}

/// The local spoke's Docker manager settings from the box flags shared with `llmbox spoke`.
fn local_manager_config(args: &Args) -> ManagerConfig {
    box_flags(args).manager_config(args.local_namespace.as_deref().unwrap_or(LOCAL_SPOKE))
}

/// The box-manager flags, shared in shape with `llmbox spoke`.
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

/// Logs, once at start, where the local spoke's Docker is and whether it answers (with its API
/// version), and whether the default box image is there, with the line that fixes it.
fn report_local_docker(manager: &DockerBoxManager, image: &str) {
    let host = manager.docker_host();
    match manager.api_version() {
        Ok(version) => log::info!("local spoke: Docker at {host} answers (API {version})"),
        Err(e) => {
            log::warn!(
                "local spoke: {e}; it reports disconnected (and /readyz 503) until Docker answers, remote spokes are served as usual"
            );
            return;
        }
    }
    match manager.has_image(image) {
        Ok(true) => log::info!("default box image {image} is present"),
        Ok(false) => log::warn!("{}", missing_image_warning(image)),
        Err(e) => log::warn!("cannot check the default box image {image}: {e}"),
    }
}

/// The start-up warning for a default image this host's Docker does not have.
fn missing_image_warning(image: &str) -> String {
    let fix = if image == crate::hub::DEFAULT_BOX_IMAGE {
        "build it with `make box-image` (in the llmbox sources)".to_string()
    } else {
        format!("docker pull {image} (or docker load it)")
    };
    format!(
        "default box image {image} is not on this host: a create without an image tries to pull it and fails where no registry has it; {fix}, or start the hub with --box-image IMAGE naming an image this host has"
    )
}

/// The warning logged when MCP is served beyond loopback with `--insecure-no-auth`.
fn exposure_warning(mcp: &SocketAddr, insecure_no_auth: bool) -> Option<String> {
    (insecure_no_auth && !mcp.ip().is_loopback()).then(|| {
        format!(
            "--insecure-no-auth: MCP on {mcp} is not a loopback address and, until an API key exists, has no caller authentication; only a proxy in front that authenticates callers keeps the boxes safe"
        )
    })
}

/// Runs the hub until it is killed.
///
/// # Errors
/// Usage errors (exit 2); a bad state file or a busy address (exit 1).
pub fn run(args: Args) -> Result<(), CliError> {
    init_logging(&args.log_level)?;
    crate::util::signal::exit_on_termination();
    let config = Config::from_args(&args)?;
    if config.local.is_some() {
        box_flags(&args).warn_if_root_exec();
    }
    let nofile = match crate::util::rlimit::raise_nofile_limit() {
        Ok(n) => n,
        Err(e) => {
            log::warn!("cannot raise the open-file limit: {e}; budgeting for {FALLBACK_NOFILE}");
            FALLBACK_NOFILE
        }
    };
    let fds = FdSplit::of(nofile);
    log::debug!(
        "open-file limit {nofile}: {} kept for the process, {} for HTTP, {} for the spoke plane",
        fds.reserved,
        fds.http,
        fds.plane
    );
    let state =
        paths::locate(FileKind::State, config.state.as_deref()).map_err(CliError::runtime)?;
    log::info!("{state}");
    // Fail fast, naming the file: a hub that started on an unusable file learnt it only at the
    // first create, after a container had been made and removed.
    let store = Arc::new(Store::open(&state.path).map_err(CliError::runtime)?);
    store.check_writable().map_err(CliError::runtime)?;
    let _hub_lock = store.lock_hub().map_err(CliError::runtime)?;
    let mcp_addr = config.mcp_listen.unwrap_or(config.listen);
    if let Some(why) = crate::hub::auth::refuse_open_mcp(
        &store,
        mcp_addr,
        config.insecure_no_auth || config.oauth.is_some(),
    ) {
        return Err(CliError::usage(why));
    }
    let audit = match &config.audit_log {
        Some(path) => Some(Arc::new(AuditLog::open(path).map_err(|e| {
            CliError::runtime(format!("--audit-log {}: {e}", path.display()))
        })?)),
        None => None,
    };
    let registry = Arc::new(Registry::new(Arc::clone(&store)));
    if let Some(mc) = &config.local {
        let manager = Arc::new(
            DockerBoxManager::new(mc.clone())
                .map_err(|e| CliError::usage(format!("--docker-host: {e}")))?,
        );
        report_local_docker(&manager, &config.hub.box_image);
        let probe = Arc::clone(&manager);
        registry.set_local(
            manager,
            Arc::new(move || probe.ping().map_err(|e| e.to_string())),
        );
    } else {
        log::info!("no local spoke (--no-local): boxes run only on remote spokes");
    }
    let spoke_listener = TcpListener::bind(config.spoke_listen)
        .map_err(|e| CliError::runtime(format!("--spoke-listen {}: {e}", config.spoke_listen)))?;
    if let Err(e) = crate::util::backlog::set_backlog(
        &spoke_listener,
        crate::util::backlog::SPOKE_PLANE_BACKLOG,
    ) {
        log::warn!("spoke plane keeps the default accept queue: {e}");
    }
    let plane_config = PlaneConfig {
        heartbeat: config.heartbeat,
        max_connections: fds.plane_sockets(),
        // A quarter of the sockets at most may be strangers: the rest stays for spokes.
        max_strangers: (fds.plane_sockets() / 4).clamp(4, plane::DEFAULT_MAX_STRANGERS),
        ..PlaneConfig::default()
    };
    let plane = plane::start(spoke_listener, Arc::clone(&registry), plane_config)
        .map_err(CliError::runtime)?;
    let directory: Arc<dyn SpokeDirectory> = registry;
    let hub = Arc::new(Hub::new(config.hub.clone(), Arc::clone(&store), directory));
    let dropped = hub.reconcile();
    if dropped > 0 {
        log::info!("dropped {dropped} sessions whose boxes are gone");
    }
    let _reaper = Reaper::start(Arc::clone(&hub))
        .map_err(|e| CliError::runtime(format!("cannot start the reaper: {e}")))?;
    let signin = match &config.signin {
        Some(sc) => Some(Arc::new(Signin::start(sc.clone()).map_err(
            |e| match e {
                SigninError::Config(_) => CliError::usage(e),
                _ => CliError::runtime(e),
            },
        )?)),
        None => None,
    };
    let oauth = config
        .oauth
        .clone()
        .map(|c| Arc::new(crate::hub::oauth::OAuth::new(c)));
    if oauth.is_some() {
        log::info!(
            "MCP authorization: OAuth 2.1 at {}/mcp (metadata at /.well-known/oauth-protected-resource/mcp); API keys work beside it",
            config.hub.public_url
        );
    }
    let access = |surface| Access {
        surface,
        insecure_no_auth: config.insecure_no_auth,
        audit: audit.clone(),
        signin: signin.clone(),
        oauth: oauth.clone(),
    };
    // Two fronts share the HTTP descriptor budget.
    let budget = if config.mcp_listen.is_some() {
        fds.http / 2
    } else {
        fds.http
    };
    let start = |addr: SocketAddr, flag: &str, surface| {
        HttpFront::start_serving(
            Arc::clone(&hub),
            &addr.to_string(),
            FrontLimits::for_descriptors(budget),
            access(surface),
        )
        .map_err(|e| CliError::runtime(format!("{flag}: {e}")))
    };
    let (front, mcp_front) = match config.mcp_listen {
        None => (start(config.listen, "--listen", Surface::All)?, None),
        Some(mcp) => (
            start(config.listen, "--listen", Surface::Page)?,
            Some(start(mcp, "--mcp-listen", Surface::Mcp)?),
        ),
    };
    if let Some(warning) = exposure_warning(&mcp_addr, config.insecure_no_auth) {
        log::warn!("{warning}");
    }
    let mcp_url = match &mcp_front {
        Some(f) => format!("http://{}/mcp", f.local_addr()),
        None => format!("{}/mcp", config.hub.public_url),
    };
    log::info!(
        "public URL (activation pages, /readyz): {}",
        config.hub.public_url
    );
    log::info!("MCP: {mcp_url}");
    log::info!(
        "spoke plane: {} (spokes dial {})",
        plane.url(),
        config.spoke_url
    );
    log::info!(
        "hub serving (state {})",
        paths::absolute(&state.path).display()
    );
    let served = front.wait();
    drop(mcp_front);
    plane.stop();
    served.map_err(|e| {
        log::error!("{e}; exiting so a supervisor can restart the hub");
        CliError::runtime(e.to_string())
    })
}

/// The open-file limit assumed when it cannot be read.
const FALLBACK_NOFILE: u64 = 1024;

/// Descriptors the process keeps for itself whatever strangers do: stdio, the two listeners,
/// the state file and its temporary copy, Docker socket connections (one per concurrent Docker
/// call of the local spoke), hook pipes, logs.
const RESERVED_FDS: u64 = 256;

/// How the open-file limit is shared so that neither listener can starve the other or the
/// process: what is left after [`RESERVED_FDS`] goes one third to the HTTP front and two
/// thirds to the spoke plane (a spoke socket costs 1 descriptor, an HTTP connection 2, and
/// spokes are the hub's reason to exist). At 1024: 256 / 256 / 512; at 1,048,576 the caps
/// (8192 HTTP connections, 12,000 spoke sockets) bind before the split does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FdSplit {
    reserved: u64,
    http: u64,
    plane: u64,
}

impl FdSplit {
    fn of(nofile: u64) -> FdSplit {
        let reserved = RESERVED_FDS.min(nofile / 2);
        let rest = nofile - reserved;
        let http = rest / 3;
        FdSplit {
            reserved,
            http,
            plane: rest - http,
        }
    }

    /// Spoke sockets the plane's share holds (one descriptor each), at most the plane default.
    fn plane_sockets(&self) -> usize {
        usize::try_from(self.plane / plane::FDS_PER_SOCKET)
            .unwrap_or(usize::MAX)
            .clamp(16, plane::DEFAULT_MAX_CONNECTIONS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_descriptor_split_keeps_the_reserve_and_sums_to_the_limit() {
        let s = FdSplit::of(1024);
        assert_eq!((s.reserved, s.http, s.plane), (256, 256, 512));
        assert_eq!(s.plane_sockets(), 512);
        let small = FdSplit::of(100);
        assert_eq!(small.reserved + small.http + small.plane, 100);
        assert_eq!(small.reserved, 50);
        assert_eq!(
            FdSplit::of(1 << 20).plane_sockets(),
            plane::DEFAULT_MAX_CONNECTIONS
        );
    }

    fn args() -> Args {
        Args {
            listen: DEFAULT_LISTEN.into(),
            spoke_listen: DEFAULT_SPOKE_LISTEN.into(),
            state: None,
            box_image: crate::hub::DEFAULT_BOX_IMAGE.into(),
            auth_ttl: "5m".into(),
            reap_interval: "30s".into(),
            heartbeat: "15s".into(),
            log_level: "info".into(),
            ..Default::default()
        }
    }

    #[test]
    fn mcp_oauth_needs_a_sign_in_provider_and_sane_lifetimes() {
        let mut a = args();
        a.mcp_oauth = true;
        a.oauth_access_ttl = "1h".into();
        a.oauth_refresh_ttl = "30d".into();
        let e = oauth_config(&a, "https://hub.example", false).expect_err("no provider");
        assert_eq!(e.code, 2);
        assert!(
            e.message.contains("--mcp-oauth needs a sign-in provider"),
            "{}",
            e.message
        );
        let c = oauth_config(&a, "https://hub.example/", true)
            .expect("config")
            .expect("on");
        assert_eq!(c.access_ttl, Duration::from_secs(3600));
        assert_eq!(c.refresh_ttl, Duration::from_secs(30 * 86400));
        assert_eq!(c.public_url, "https://hub.example");
        a.oauth_refresh_ttl = "1m".into();
        assert!(oauth_config(&a, "https://hub.example", true).is_err());
        let mut off = args();
        assert!(
            oauth_config(&off, "https://hub.example", false)
                .expect("off")
                .is_none()
        );
        off.oauth_test_cimd_loopback = true;
        assert!(oauth_config(&off, "https://hub.example", false).is_err());
    }

    #[test]
    fn defaults_become_a_config() {
        let c = Config::from_args(&args()).expect("config");
        assert_eq!(c.hub.public_url, "http://127.0.0.1:8080");
        assert_eq!(c.hub.auth_ttl, Duration::from_secs(300));
        assert_eq!(c.hub.reap_interval, Duration::from_secs(30));
        assert_eq!(c.local.expect("local").namespace, "local");
    }

    #[test]
    fn box_flags_reach_the_local_manager_and_no_local_drops_it() {
        let mut a = args();
        a.max_boxes = Some(3);
        a.cpus = Some(0.5);
        a.box_peer = vec!["proxy".into()];
        a.remote_args = Some("--x".into());
        let local = Config::from_args(&a).expect("config").local.expect("local");
        assert_eq!((local.max_boxes, local.cpus), (3, 0.5));
        assert_eq!(local.box_peers, vec!["proxy".to_string()]);
        assert_eq!(local.remote_args, "--x");
        a.no_local = true;
        assert!(Config::from_args(&a).expect("config").local.is_none());
    }

    #[test]
    fn only_insecure_mcp_beyond_loopback_is_warned_about() {
        for quiet in ["127.0.0.1:8080", "[::1]:80", "127.0.0.2:1"] {
            assert_eq!(
                exposure_warning(&quiet.parse().expect("addr"), true),
                None,
                "{quiet}"
            );
        }
        for loud in ["0.0.0.0:8080", "192.168.1.5:80", "[::]:80"] {
            let addr = loud.parse().expect("addr");
            // Without --insecure-no-auth such a hub has keys (or does not start).
            assert_eq!(exposure_warning(&addr, false), None, "{loud}");
            let w = exposure_warning(&addr, true).expect(loud);
            assert!(w.contains("no caller authentication"), "{w}");
        }
    }

    #[test]
    fn sign_in_flags_are_checked_and_secrets_read_from_files() {
        let dir = std::env::temp_dir().join(format!("llmbox-cli-signin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, "  s3cret\n").unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let with = |f: &dyn Fn(&mut Args)| {
            let mut a = args();
            a.oidc_issuer = vec!["https://accounts.google.com".into()];
            a.oidc_client_id = vec!["cid".into()];
            a.oidc_client_secret_file = vec![secret.clone()];
            a.allow_domain = vec!["Example.ORG".into()];
            a.session_ttl = "12h".into();
            f(&mut a);
            Config::from_args(&a)
        };
        let c = with(&|_| {}).unwrap().signin.unwrap();
        assert_eq!(c.oidc[0].client_secret, "s3cret");
        assert_eq!(c.oidc[0].label, "Google");
        assert_eq!(c.rules.domains, vec!["example.org"]);
        assert_eq!(c.spoke_url, "ws://127.0.0.1:8081");
        assert_eq!(c.session_ttl, crate::hub::signin::DEFAULT_SESSION_TTL);
        type Change = Box<dyn Fn(&mut Args)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|a| a.allow_domain.clear()), "--allow-email"),
            (Box::new(|a| a.oidc_client_id.clear()), "--oidc-client-id"),
            (
                Box::new(|a| a.oidc_issuer = vec!["http://idp.example".into()]),
                "https",
            ),
            (Box::new(|a| a.session_ttl = "0s".into()), "--session-ttl"),
            (
                Box::new(|a| a.oidc_client_secret_file = vec!["/no/such".into()]),
                "--oidc-client-secret-file",
            ),
            (
                Box::new(|a| a.github_client_id = Some("g".into())),
                "--github-client-secret-file",
            ),
        ];
        for (change, flag) in cases {
            let err = with(&*change).unwrap_err();
            assert_eq!(err.code, super::super::EXIT_USAGE, "{flag}");
            assert!(err.message.contains(flag), "{flag}: {}", err.message);
        }
        let err = with(&|a| a.oidc_client_secret_file = vec![empty.clone()]).unwrap_err();
        assert!(err.message.contains("empty"), "{}", err.message);
        let mut a = args();
        a.allow_email = vec!["a@b.c".into()];
        assert!(
            Config::from_args(&a)
                .unwrap_err()
                .message
                .contains("need a sign-in provider")
        );
        assert!(Config::from_args(&args()).unwrap().signin.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn spoke_url_overrides_what_spokes_are_told_to_dial() {
        let mut a = args();
        assert_eq!(
            Config::from_args(&a).expect("config").spoke_url,
            "ws://127.0.0.1:8081"
        );
        a.spoke_url = Some("wss://hub.example/".into());
        assert_eq!(
            Config::from_args(&a).expect("config").spoke_url,
            "wss://hub.example"
        );
    }

    #[test]
    fn spokes_dial_the_public_host_on_the_plane_port() {
        let plane: SocketAddr = "0.0.0.0:8081".parse().unwrap();
        assert_eq!(
            spoke_url("https://hub.example/x", plane),
            "wss://hub.example:8081"
        );
        assert_eq!(
            spoke_url("http://10.0.0.5:8080", plane),
            "ws://10.0.0.5:8081"
        );
        assert_eq!(spoke_url("http://[::1]:8080", plane), "ws://[::1]:8081");
    }

    #[test]
    fn bad_flags_are_usage_errors_naming_the_flag() {
        type Change = Box<dyn Fn(&mut Args)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|a| a.listen = "nowhere".into()), "--listen"),
            (
                Box::new(|a| a.spoke_listen = "1.2.3.4".into()),
                "--spoke-listen",
            ),
            (Box::new(|a| a.auth_ttl = "soon".into()), "--auth-ttl"),
            (
                Box::new(|a| a.reap_interval = "-1s".into()),
                "--reap-interval",
            ),
            (Box::new(|a| a.heartbeat = "0".into()), "--heartbeat"),
            (
                Box::new(|a| a.public_url = Some("ftp://x".into())),
                "--public-url",
            ),
            (
                Box::new(|a| a.hook = vec!["/no/such/hook".into()]),
                "--hook",
            ),
            (
                Box::new(|a| a.claude_bin = Some("/no/claude".into())),
                "--claude-bin",
            ),
            (Box::new(|a| a.box_image = " ".into()), "--box-image"),
            (
                Box::new(|a| a.spoke_url = Some("https://hub.example".into())),
                "--spoke-url",
            ),
            (
                Box::new(|a| a.local_namespace = Some("Bad NS".into())),
                "--local-namespace",
            ),
            (
                Box::new(|a| a.exec_user = Some("root".into())),
                "--exec-user",
            ),
            (
                Box::new(|a| a.mcp_listen = Some("localhost".into())),
                "--mcp-listen",
            ),
        ];
        for (change, flag) in cases {
            let mut a = args();
            change(&mut a);
            let err = Config::from_args(&a).expect_err(flag);
            assert_eq!(err.code, crate::cli::EXIT_USAGE, "{flag}");
            assert!(err.message.contains(flag), "{flag}: {}", err.message);
        }
    }
}
