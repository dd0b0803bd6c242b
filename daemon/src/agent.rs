//! The join, as a state machine (architecture.md, "The join"):
//!
//! load-config → already-joined? → gate-kubelet → preflight → discovery → join
//! (kubeadm, with the handoff to kubelet inside it) → tls-bootstrap → verify → serve.
//!
//! Every phase logs one journal line (`PHASE=`, with `ATTEMPT=` and `NODE_NAME=` from
//! the attempt span), updates `STATUS=` and the state file. Every failure is classified
//! (failure.rs), logged once with its cause and fix (`FAILURE=`), kubelet is gated again,
//! and the policy decides: clean up and retry after a full-jitter backoff, or stop.

use crate::backoff;
use crate::config::{self, ConfigError, Settings};
use crate::discovery::{self, ClusterInfo, DiscoveryError};
use crate::failure::{Failure, Policy};
use crate::kubeadm::{self, ConfigApi, JoinConfigInput, KubeadmVersion, Limits};
use crate::kubelet::{self, Gate, KubeletCredentials, KubeletView};
use crate::node;
use crate::paths::Paths;
use crate::pki;
use crate::preflight::{self, Verdict};
use crate::reload;
use crate::state::{self, State};
use crate::systemd::Systemd;
use crate::telemetry;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{Instrument, error, info, warn};

/// The phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Parse, merge, validate the configuration.
    LoadConfig,
    /// Is there a valid kubelet.conf already?
    AlreadyJoined,
    /// Stop and mask kubelet.
    GateKubelet,
    /// Host, kernel, tools, runtime, network.
    Preflight,
    /// cluster-info, JWS, CA pin.
    Discovery,
    /// kubeadm join under supervision.
    Join,
    /// kubeadm's kubelet files are valid: unmask and start kubelet.
    Handoff,
    /// Wait for kubelet.conf and the client certificate.
    TlsBootstrap,
    /// The Node exists in the API server.
    Verify,
    /// Joined: stay running, watch the client certificate.
    Serve,
}

impl Phase {
    /// The name used in `PHASE=`, the state file and `STATUS=`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::LoadConfig => "load-config",
            Phase::AlreadyJoined => "already-joined",
            Phase::GateKubelet => "gate-kubelet",
            Phase::Preflight => "preflight",
            Phase::Discovery => "discovery",
            Phase::Join => "join",
            Phase::Handoff => "handoff",
            Phase::TlsBootstrap => "tls-bootstrap",
            Phase::Verify => "verify",
            Phase::Serve => "serve",
        }
    }
}

/// How the daemon ends (the unit's RestartPreventExitStatus lists 69 and 78).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// EX_CONFIG: bad configuration, or a failure only the operator can fix.
    Config = 78,
    /// EX_UNAVAILABLE: the retry budget is spent.
    GaveUp = 69,
    /// A local error (D-Bus unavailable): let systemd restart the agent.
    Restart = 1,
}

/// The runtime's unit, restarted by the optional remediation.
const CONTAINERD_UNIT: &str = "containerd.service";
/// Transient waits inside a phase poll at this pace, at most.
const MAX_POLL: Duration = Duration::from_secs(10);
/// A token created moments ago is signed within seconds by the controller manager's
/// bootstrap signer; past this grace a missing signature means the token is dead.
const TOKEN_SIGNATURE_GRACE: Duration = Duration::from_secs(60);
/// After the handoff, the kubelet normally has its certificate within a second or two
/// (real kubelet 1.20 and 1.29); past this, the agent looks at what holds it up.
const BOOTSTRAP_FIRST_LOOK: Duration = Duration::from_secs(15);
/// And looks again this often while kubeadm keeps waiting.
const BOOTSTRAP_LOOK_EVERY: Duration = Duration::from_secs(30);
/// How often the serve phase rechecks the kubelet's client certificate.
const SERVE_CHECK: Duration = Duration::from_secs(600);
/// Warn this long before the kubelet client certificate expires.
const EXPIRY_WARNING_SECS: i64 = 7 * 24 * 3600;

/// The running agent.
pub struct Agent {
    paths: Paths,
    settings: Settings,
    systemd: Systemd,
    state: Mutex<State>,
    ready_sent: Mutex<bool>,
}

/// A completed join.
struct Joined {
    creds: KubeletCredentials,
    ca: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// `kube-join-agent run`.
pub async fn run(paths: Paths) -> Exit {
    let settings = match load_settings(&paths) {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let systemd = match Systemd::connect().await {
        Ok(s) => s,
        Err(e) => {
            error!(failure = "local", "cannot talk to systemd: {e}");
            return Exit::Restart;
        }
    };
    let mut state = State::load(&paths.state_file()).unwrap_or_else(|e| {
        warn!("{e}");
        State::default()
    });
    // Attempts count per boot and per configuration: a reboot or a fixed config (a new
    // token) deserves a fresh budget; a crash loop within one boot does not.
    let boot = state::boot_id(&paths.proc());
    let stamp = config_stamp(&settings);
    if state.boot_id != boot || state.config_fingerprint != stamp {
        state.attempt = 0;
        state.boot_id = boot;
        state.config_fingerprint = stamp;
    }
    state.node_name = settings.join.node_name.clone();
    // Logged once the configuration is read, so that it carries the node name and the
    // attempt about to start like every other phase line.
    info!(
        phase = Phase::LoadConfig.name(),
        attempt = state.attempt + 1,
        node_name = %settings.join.node_name,
        "phase load-config: {} file(s) read: {}",
        settings.files.len(),
        settings.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
    );
    let agent = Agent {
        paths,
        settings,
        systemd,
        state: Mutex::new(state),
        ready_sent: Mutex::new(false),
    };
    telemetry::spawn_watchdog();
    agent.main_loop().await
}

fn load_settings(paths: &Paths) -> Result<Settings, Exit> {
    config::load(paths).map_err(|e: ConfigError| {
        error!(
            phase = Phase::LoadConfig.name(),
            failure = "config-invalid",
            "configuration error: {e}; nothing was changed on this node"
        );
        telemetry::notify_status(&format!("configuration error: {e}"));
        Exit::Config
    })
}

fn config_stamp(settings: &Settings) -> String {
    format!("{}-{}", settings.fingerprint, settings.join.token.id())
}

impl Agent {
    async fn main_loop(mut self) -> Exit {
        loop {
            let attempt = self.bump_attempt();
            let span =
                tracing::info_span!("attempt", attempt, node_name = %self.settings.join.node_name);
            let result = self.attempt().instrument(span.clone()).await;
            match result {
                Ok(joined) => return self.serve(joined).instrument(span).await,
                Err(failure) => {
                    if let Some(exit) = self.after_failure(failure, attempt).instrument(span).await
                    {
                        return exit;
                    }
                }
            }
            // Each attempt rereads the configuration: a new token or a fixed value
            // dropped in while the agent waited is used without a restart.
            match load_settings(&self.paths) {
                Ok(s) => self.settings = s,
                Err(exit) => return exit,
            }
            let stamp = config_stamp(&self.settings);
            let mut state = self.state.lock().expect("state lock");
            if state.config_fingerprint != stamp {
                // A fixed configuration (a new token) gets a fresh retry budget.
                state.attempt = 0;
                state.config_fingerprint = stamp;
            }
        }
    }

    fn bump_attempt(&self) -> u32 {
        let mut state = self.state.lock().expect("state lock");
        state.attempt += 1;
        state.attempt
    }

    /// Logs the phase line, updates STATUS= and the state file.
    fn enter(&self, phase: Phase, message: &str) {
        info!(phase = phase.name(), "phase {}: {message}", phase.name());
        telemetry::notify_status(&format!("{}: {message}", phase.name()));
        let mut state = self.state.lock().expect("state lock");
        state.phase = phase.name().to_string();
        if let Err(e) = state.save(&self.paths.state_file()) {
            warn!("cannot save state: {e}");
        }
    }

    fn ready(&self) {
        let mut sent = self.ready_sent.lock().expect("ready lock");
        if !*sent {
            telemetry::notify_ready();
            *sent = true;
        }
    }

    /// Everything kubeadm's output must never show.
    fn secrets(&self) -> Vec<&crate::secret::Secret> {
        let mut secrets = vec![self.settings.join.token.secret()];
        if let Some(cp) = &self.settings.join.control_plane {
            secrets.push(&cp.certificate_key);
        }
        secrets
    }

    fn gate(&self) -> Gate<'_> {
        Gate::new(&self.systemd, &self.paths, &self.settings.kubelet_unit)
    }

    async fn attempt(&self) -> Result<Joined, Failure> {
        let s = &self.settings;

        self.enter(Phase::AlreadyJoined, "looking for a valid kubelet.conf");
        if let Some(joined) = self.already_joined()? {
            info!(
                phase = Phase::AlreadyJoined.name(),
                "node is already joined ({}); not running kubeadm", joined.creds.summary.subject
            );
            self.ready();
            self.enter(
                Phase::Handoff,
                "starting kubelet with its existing credentials",
            );
            self.gate().open().await?;
            return self.verify(joined).await;
        }

        self.enter(
            Phase::GateKubelet,
            &format!(
                "stopping and masking {} until its configuration is valid",
                s.kubelet_unit
            ),
        );
        let method = self.gate().close().await?;
        info!(
            phase = Phase::GateKubelet.name(),
            "{} gated ({method:?})", s.kubelet_unit
        );
        // READY means "kubelet is gated or handed off": boot continues, kubelet's own
        // start job (ordered after us) finds the unit masked.
        self.ready();

        self.enter(
            Phase::Preflight,
            "checking host, kernel, kubeadm, container runtime and API server",
        );
        let version = self.preflight().await?;

        self.enter(
            Phase::Discovery,
            &format!("fetching cluster-info from {}", s.join.api_server),
        );
        let cluster = self.discovery().await?;

        crate::node_name::settle(&self.paths, s, &cluster).await?;

        let leftovers = preflight::leftovers::present(&self.paths);
        if !leftovers.is_empty() {
            warn!(
                "removing files from an earlier join attempt with `kubeadm reset -f`: {}",
                leftovers
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            self.reset().await?;
            self.gate().close().await?;
        }

        self.enter(
            Phase::Join,
            &format!(
                "running kubeadm join ({version}, {})",
                ConfigApi::for_version(version).api_version()
            ),
        );
        self.join(version, &cluster).await?;

        self.enter(
            Phase::TlsBootstrap,
            "waiting for kubelet.conf and the kubelet client certificate",
        );
        let creds = kubelet::wait_for_tls_bootstrap(
            &self.paths,
            &cluster.ca,
            &s.join.node_name,
            Instant::now() + s.timeouts.tls_bootstrap,
            async || {
                kubelet::view::observe(&self.systemd, &self.paths, &self.settings, &cluster).await
            },
        )
        .await?;
        info!(
            phase = Phase::TlsBootstrap.name(),
            "kubelet client certificate valid: {}, expires {}",
            creds.summary.subject,
            creds.summary.not_after
        );
        self.verify(Joined {
            creds,
            ca: cluster.ca,
        })
        .await
    }

    /// A valid kubelet.conf for this cluster means the node is joined.
    fn already_joined(&self) -> Result<Option<Joined>, Failure> {
        let s = &self.settings;
        if !self.paths.kubelet_conf().exists() {
            info!(
                phase = Phase::AlreadyJoined.name(),
                "not joined: {} does not exist",
                self.paths.kubelet_conf().display()
            );
            return Ok(None);
        }
        let ca_pem = match std::fs::read(self.paths.cluster_ca()) {
            Ok(pem) => pem,
            Err(e) => {
                warn!(
                    "{} exists but {} cannot be read ({e}): rejoining",
                    self.paths.kubelet_conf().display(),
                    self.paths.cluster_ca().display()
                );
                return Ok(None);
            }
        };
        let ca = match pki::pem_certificates(&ca_pem, "cluster CA") {
            Ok(ca) => ca,
            Err(e) => {
                warn!("{e}: rejoining");
                return Ok(None);
            }
        };
        if !s.join.ca_pins.is_empty() {
            let pins: Vec<_> = ca
                .iter()
                .filter_map(|c| pki::spki_pin(c, "cluster CA").ok())
                .collect();
            if !pins.iter().any(|p| s.join.ca_pins.contains(p)) {
                return Err(Failure::HostNotReady {
                    check: "leftovers".into(),
                    reason: format!(
                        "this node is joined to another cluster: {} has CA {} which matches no configured pin",
                        self.paths.cluster_ca().display(),
                        pins.iter().map(|p| p.0.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                    fix: "if the node should move to the configured cluster, run `kubeadm reset -f` and restart kube-join-agent; otherwise correct join.ca_cert_hashes".into(),
                });
            }
        }
        match kubelet::check_kubelet_conf(&self.paths, &ca, &s.join.node_name) {
            Ok(creds) => Ok(Some(Joined { creds, ca })),
            Err(problem) => {
                warn!(
                    phase = Phase::AlreadyJoined.name(),
                    "kubelet.conf is not usable ({problem}): the node will be joined again"
                );
                Ok(None)
            }
        }
    }

    async fn preflight(&self) -> Result<KubeadmVersion, Failure> {
        let s = &self.settings;
        for finding in preflight::static_checks(&self.paths, s) {
            log_finding(&finding);
        }
        if let Some(f) = preflight::first_failure(&preflight::static_checks(&self.paths, s)) {
            return Err(failure_of(f));
        }
        let version = kubeadm::query_version(&s.kubeadm_path).await?;
        info!(
            phase = Phase::Preflight.name(),
            "[pass] kubeadm: {version} at {}",
            s.kubeadm_path.display()
        );

        for finding in
            preflight::downgrade(vec![self.kubelet_flags().await], &s.preflight.warn_only)
        {
            log_finding(&finding);
            if matches!(finding.verdict, Verdict::Fail { .. }) {
                return Err(failure_of(&finding));
            }
        }

        // Waitable checks: the runtime and the API server may simply not be up yet.
        let started = Instant::now();
        let mut restarted_containerd = false;
        let mut pause = Duration::from_secs(1);
        let mut last_reported = String::new();
        loop {
            let mut findings = vec![preflight::runtime::check(&s.containerd_socket).await];
            findings.extend(preflight::network::check(&s.join.api_server).await);
            let findings = preflight::downgrade(findings, &s.preflight.warn_only);
            if let Some(f) = preflight::first_failure(&findings) {
                return Err(failure_of(f));
            }
            let waiting: Vec<_> = findings
                .iter()
                .filter(|f| matches!(f.verdict, Verdict::Wait(_)))
                .collect();
            if waiting.is_empty() {
                findings.iter().for_each(log_finding);
                return Ok(version);
            }
            let waited = started.elapsed();
            for f in &waiting {
                let Verdict::Wait(why) = &f.verdict else {
                    continue;
                };
                if f.check == "container-runtime"
                    && !restarted_containerd
                    && s.containerd_restart_after
                        .is_some_and(|after| waited >= after)
                {
                    restarted_containerd = true;
                    warn!(
                        phase = Phase::Preflight.name(),
                        "containerd has not been ready for {} ({why}): restarting containerd.service (containerd.restart_when_not_ready)",
                        humantime::format_duration(Duration::from_secs(waited.as_secs()))
                    );
                    match self
                        .systemd
                        .restart(CONTAINERD_UNIT, Duration::from_secs(90))
                        .await
                    {
                        Ok(()) => info!(
                            phase = Phase::Preflight.name(),
                            "containerd.service restarted"
                        ),
                        Err(e) => warn!("restarting containerd.service failed: {e}"),
                    }
                }
                if f.check == "container-runtime" && waited >= s.containerd_ready_timeout {
                    return Err(Failure::ContainerdNotReady {
                        detail: why.clone(),
                        waited,
                    });
                }
                if f.check != "container-runtime" && waited >= s.timeouts.discovery {
                    return Err(Failure::ApiServerUnreachable {
                        detail: why.clone(),
                        port: s.join.api_server.port,
                    });
                }
            }
            let summary = waiting
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            if summary != last_reported {
                info!(phase = Phase::Preflight.name(), "waiting: {summary}");
                telemetry::notify_status(&format!("preflight: waiting: {summary}"));
                last_reported = summary;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_POLL);
        }
    }

    /// kubelet must be started with a kubeconfig (kubeadm's drop-in passes
    /// --bootstrap-kubeconfig and --kubeconfig), or after the join it runs standalone.
    async fn kubelet_flags(&self) -> preflight::Finding {
        let unit = &self.settings.kubelet_unit;
        let verdict = match self.systemd.unit_info(unit).await {
            Err(e) => Verdict::Warn {
                reason: e.to_string(),
                fix: "check that systemd answers on D-Bus".into(),
            },
            Ok(info) => {
                let mut files: Vec<PathBuf> = info
                    .drop_in_paths
                    .iter()
                    .map(|p| self.paths.resolve(Path::new(p)))
                    .collect();
                if !info.fragment_path.is_empty() {
                    files.push(self.paths.resolve(Path::new(&info.fragment_path)));
                }
                // kubeadm's drop-in reads these environment files for extra flags.
                files.push(self.paths.at("/etc/default/kubelet"));
                files.push(self.paths.at("/etc/sysconfig/kubelet"));
                let texts: Vec<String> = files
                    .iter()
                    .filter_map(|f| std::fs::read_to_string(f).ok())
                    .collect();
                preflight::kubelet_unit::verdict(unit, &texts)
            }
        };
        preflight::Finding {
            check: "kubelet-flags",
            verdict,
        }
    }

    async fn discovery(&self) -> Result<ClusterInfo, Failure> {
        let s = &self.settings;
        let started = Instant::now();
        let mut warned_token = false;
        let mut last_seen = String::new();
        let mut pause = Duration::from_secs(1);
        loop {
            match discovery::discover(&s.join.api_server, &s.join.token, &s.join.ca_pins).await {
                Ok(info) => {
                    if s.join.ca_pins.is_empty() {
                        warn!(
                            "cluster CA accepted without a pin (unsafe_skip_ca_verification = true)"
                        );
                    }
                    if let Some(skew) = info.clock_skew_secs.filter(|s| s.abs() > 60) {
                        warn!(
                            "this node's clock is {}s {} the API server's: certificates may look not-yet-valid or expired; fix time synchronization (systemd-timesyncd, chrony)",
                            skew.abs(),
                            if skew > 0 { "ahead of" } else { "behind" }
                        );
                    }
                    let pins: Vec<_> = info
                        .ca
                        .iter()
                        .filter_map(|c| pki::spki_pin(c, "ca").ok())
                        .map(|p| p.0)
                        .collect();
                    info!(
                        phase = Phase::Discovery.name(),
                        "cluster-info verified: token signature valid, CA {} pinned",
                        pins.join(", ")
                    );
                    return Ok(info);
                }
                Err(DiscoveryError::TokenUnknown { token_id }) => {
                    if started.elapsed() >= TOKEN_SIGNATURE_GRACE.min(s.timeouts.discovery) {
                        return Err(Failure::TokenInvalid {
                            token_id,
                            source_name: s.join.token_source.to_string(),
                        });
                    }
                    if !warned_token {
                        warn!(
                            "cluster-info has no signature for token id \"{token_id}\" yet: the token is unknown, expired, or was created moments ago; retrying for up to {}s",
                            TOKEN_SIGNATURE_GRACE.as_secs()
                        );
                        warned_token = true;
                    }
                }
                // Established by the token's signature or the pin: no retry changes it.
                Err(e @ DiscoveryError::CaPinMismatch { .. }) => {
                    return Err(Failure::CaPinMismatch {
                        detail: e.to_string(),
                    });
                }
                Err(e) if e.is_verified() => {
                    return Err(Failure::ClusterInfoInvalid {
                        detail: e.to_string(),
                    });
                }
                // Anything else may be a starting API server, or anyone on the path:
                // waited out until timeouts.discovery, then named as what it is.
                Err(e) => {
                    let waited = started.elapsed();
                    if waited >= s.timeouts.discovery {
                        return Err(if e.is_outage() {
                            Failure::ApiServerUnreachable {
                                detail: e.to_string(),
                                port: s.join.api_server.port,
                            }
                        } else {
                            Failure::ClusterInfoInvalid {
                                detail: format!(
                                    "{e} (answered so for the {} of timeouts.discovery)",
                                    humantime::format_duration(s.timeouts.discovery)
                                ),
                            }
                        });
                    }
                    let text = e.to_string();
                    if text != last_seen {
                        info!(
                            phase = Phase::Discovery.name(),
                            "waiting: {text}; retrying for up to {} more (timeouts.discovery)",
                            humantime::format_duration(Duration::from_secs(
                                (s.timeouts.discovery - waited).as_secs()
                            ))
                        );
                        telemetry::notify_status(&format!("discovery: waiting: {text}"));
                        last_seen = text;
                    }
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// kubeadm join (whole, or phase by phase for a control plane), with the handoff to
    /// kubelet the moment its files are valid.
    async fn join(&self, version: KubeadmVersion, cluster: &ClusterInfo) -> Result<(), Failure> {
        let s = &self.settings;
        let api = ConfigApi::for_version(version);
        let yaml =
            kubeadm::render(
                api,
                &JoinConfigInput {
                    api_server: &s.join.api_server,
                    token: &s.join.token,
                    ca_pins: &s.join.ca_pins,
                    unsafe_skip_ca_verification: s.join.unsafe_skip_ca_verification,
                    node_name: &s.join.node_name,
                    cri_socket: &s.containerd_socket,
                    discovery_timeout: s.timeouts.discovery,
                    tls_bootstrap_timeout: s.timeouts.tls_bootstrap,
                    control_plane: s.join.control_plane.as_ref().map(|cp| {
                        kubeadm::ControlPlaneInput {
                            certificate_key: &cp.certificate_key,
                            advertise_address: cp.advertise_address,
                        }
                    }),
                },
            );
        let config_path = self.paths.join_config();
        kubeadm::write_private(&config_path, &yaml).map_err(|e| Failure::Local {
            detail: format!("writing {}: {e}", config_path.display()),
        })?;
        let config = config_path.display().to_string();
        let result = if s.join.control_plane.is_some() {
            let job = crate::control_plane::ControlPlaneJoin {
                paths: &self.paths,
                settings: s,
                config_path: &config_path,
            };
            crate::control_plane::join(&job, async |args: Vec<String>| {
                // A whole join, or its kubelet-start phase, writes the kubelet files.
                let whole = !args.iter().any(|a| a == "phase");
                let handoff = whole || args.iter().any(|a| a == "kubelet-start");
                self.run_kubeadm(&args, handoff.then_some(cluster)).await
            })
            .await
        } else {
            let args = vec!["join".to_string(), "--config".to_string(), config];
            self.run_kubeadm(&args, Some(cluster)).await
        };
        // The file holds the token: keep it on disk no longer than kubeadm needs it.
        let _ = std::fs::remove_file(&config_path);
        result?;
        if !self.gate().kubelet_active().await? {
            // kubeadm succeeded without the agent seeing valid files (an older kubeadm
            // that waits differently): validate now and hand off.
            kubelet::wait_for_kubelet_files(
                &self.paths,
                &cluster.ca,
                Instant::now() + Duration::from_secs(10),
            )
            .await?;
            self.enter(Phase::Handoff, &format!("starting {}", s.kubelet_unit));
            self.gate().open().await?;
        }
        Ok(())
    }

    /// One supervised kubeadm run, classified. With `handoff`, kubelet is started the
    /// moment kubeadm's kubelet files are valid, while kubeadm waits for it; while it
    /// waits for the kubelet's TLS bootstrap, the agent looks at the kubelet side itself,
    /// so a bootstrap that does not finish is named (pending CSR, kubelet down, no CSR)
    /// instead of looking like a silent kubeadm.
    async fn run_kubeadm(
        &self,
        args: &[String],
        handoff: Option<&ClusterInfo>,
    ) -> Result<(), Failure> {
        let s = &self.settings;
        let limits = Limits {
            deadline: s.timeouts.join_phase,
            no_progress: s.timeouts.no_progress,
        };
        let secrets = self.secrets();
        info!(
            phase = Phase::Join.name(),
            "running {} {}",
            s.kubeadm_path.display(),
            args.join(" ")
        );
        let run = kubeadm::run(&s.kubeadm_path, args, limits, &secrets, true);
        let deadline = Instant::now() + s.timeouts.join_phase;
        let cluster = handoff;
        let handoff = async {
            let Some(cluster) = cluster else {
                return std::future::pending().await;
            };
            kubelet::wait_for_kubelet_files(&self.paths, &cluster.ca, deadline).await?;
            self.enter(
                Phase::Handoff,
                &format!(
                    "kubeadm's kubelet files are valid; unmasking and starting {}",
                    s.kubelet_unit
                ),
            );
            self.gate().open().await?;
            info!(phase = Phase::Handoff.name(), "{} started", s.kubelet_unit);
            Ok::<(), Failure>(())
        };
        tokio::pin!(run, handoff);
        let mut handed_off: Option<Instant> = None;
        let mut next_look: Option<Instant> = None;
        let mut last_said = String::new();
        let finished = loop {
            let look_at = next_look.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                finished = &mut run => break finished,
                result = &mut handoff, if handed_off.is_none() => {
                    // A failed handoff dooms this join: returning drops (kills) kubeadm.
                    result?;
                    handed_off = Some(Instant::now());
                    next_look = Some(Instant::now() + BOOTSTRAP_FIRST_LOOK);
                }
                _ = tokio::time::sleep_until(look_at), if next_look.is_some() => {
                    let (Some(cluster), Some(since)) = (cluster, handed_off) else {
                        next_look = None;
                        continue;
                    };
                    if kubelet::check_kubelet_conf(&self.paths, &cluster.ca, &s.join.node_name).is_ok() {
                        next_look = None;
                        continue;
                    }
                    let why = self.kubelet_side(cluster, true).await;
                    if why != last_said {
                        warn!(
                            phase = Phase::TlsBootstrap.name(),
                            "kubelet has not finished TLS bootstrap {}s after it started: {why}",
                            since.elapsed().as_secs()
                        );
                        telemetry::notify_status(&format!("join: waiting for the kubelet's TLS bootstrap: {why}"));
                        last_said = why;
                    }
                    next_look = Some(Instant::now() + BOOTSTRAP_LOOK_EVERY);
                }
            }
        };
        let finished = finished?;
        info!(
            phase = Phase::Join.name(),
            "kubeadm exited with {} after {:.1}s",
            finished
                .code
                .map(|c| format!("code {c}"))
                .unwrap_or_else(|| format!("signal {}", finished.signal.unwrap_or(0))),
            finished.elapsed.as_secs_f64()
        );
        let outcome = kubeadm::classify(
            &finished,
            &s.join.node_name,
            s.join.token.id(),
            &s.join.token_source.to_string(),
        );
        // kubeadm waiting for the TLS bootstrap: it gave up itself, or printed nothing
        // until the watchdog stopped it. Either way the kubelet side says why.
        let waiting_for_bootstrap = handed_off.is_some()
            || finished.said(kubeadm::TLS_BOOTSTRAP_WAIT)
            || finished.said(kubeadm::KUBELET_HEALTH_WAIT);
        let kubeadm_said = match outcome {
            Err(Failure::TlsBootstrapStuck { detail }) => detail,
            Err(Failure::Hang { what, last_line }) if waiting_for_bootstrap => format!(
                "kubeadm waited for the kubelet's TLS bootstrap and {what}: killed its process group (last output: {last_line})"
            ),
            other => return other,
        };
        if let Some(cluster) = cluster
            && kubelet::check_kubelet_conf(&self.paths, &cluster.ca, &s.join.node_name).is_ok()
        {
            // The kubelet finished just as kubeadm stopped: its TLS bootstrap did work.
            return Err(Failure::KubeadmFailed {
                code: finished.code.unwrap_or(-1),
                detail: kubeadm_said,
            });
        }
        let why = match cluster {
            Some(cluster) => self.kubelet_side(cluster, handed_off.is_some()).await,
            None => kubelet::tls::diagnose(&self.paths, None, &KubeletView::default()),
        };
        Err(Failure::TlsBootstrapStuck {
            detail: format!("{kubeadm_said}; {why}"),
        })
    }

    /// What the kubelet side shows while its TLS bootstrap does not finish. `started`:
    /// the agent started kubelet with kubeadm's validated bootstrap credentials.
    async fn kubelet_side(&self, cluster: &ClusterInfo, started: bool) -> String {
        let mut seen =
            kubelet::view::observe(&self.systemd, &self.paths, &self.settings, cluster).await;
        seen.had_bootstrap_conf |= started;
        kubelet::tls::diagnose(&self.paths, None, &seen)
    }

    async fn verify(&self, joined: Joined) -> Result<Joined, Failure> {
        let s = &self.settings;
        self.enter(
            Phase::Verify,
            &format!(
                "checking that Node \"{}\" exists, with the kubelet's credentials",
                s.join.node_name
            ),
        );
        let status = node::wait_for_node(
            &joined.creds,
            &joined.ca,
            &s.join.node_name,
            s.timeouts.node_registration,
        )
        .await?;
        match status.ready.as_str() {
            "True" => info!(
                phase = Phase::Verify.name(),
                "Node \"{}\" is registered and Ready", s.join.node_name
            ),
            other => info!(
                phase = Phase::Verify.name(),
                "Node \"{}\" is registered, Ready={} ({}); a node stays NotReady until a pod network (CNI) is installed",
                s.join.node_name,
                if other.is_empty() {
                    "not reported yet"
                } else {
                    other
                },
                status.detail
            ),
        }
        Ok(joined)
    }

    /// Classify, log once (cause, fix, and what happens next), clean up, gate kubelet
    /// again, then back off and retry, wait for a new token, or stop.
    async fn after_failure(&self, failure: Failure, attempt: u32) -> Option<Exit> {
        let s = &self.settings;
        let policy = failure.policy();
        let exhausted = matches!(policy, Policy::Retry { .. }) && attempt >= s.retry.max_attempts;
        let delay = backoff::delay(s.retry.initial_backoff, s.retry.max_backoff, attempt);
        let next = match policy {
            Policy::Stop => {
                "not retrying: this needs an operator; kubelet stays masked".to_string()
            }
            Policy::Retry { .. } if exhausted => format!(
                "giving up: retry.max_attempts ({}) reached; kubelet stays masked",
                s.retry.max_attempts
            ),
            Policy::Retry { cleanup } => format!(
                "{}retrying in {:.1}s (attempt {} of {})",
                if cleanup { "cleaning up, " } else { "" },
                delay.as_secs_f64(),
                attempt + 1,
                s.retry.max_attempts
            ),
            Policy::WaitForNewToken => format!(
                "waiting for a new token in {} (or SIGHUP after changing the configuration); kubelet stays masked",
                s.join.token_source
            ),
        };
        error!(
            failure = failure.class(),
            "attempt {attempt} failed: {failure}; {next}"
        );
        {
            let mut state = self.state.lock().expect("state lock");
            state.failure = Some(failure.class().to_string());
            state.last_error = Some(failure.to_string());
            if let Err(e) = state.save(&self.paths.state_file()) {
                warn!("cannot save state: {e}");
            }
        }
        if matches!(policy, Policy::Retry { cleanup: true })
            && !exhausted
            && let Err(e) = self.reset().await
        {
            warn!("cleanup after the failed attempt failed: {e}");
        }
        // Whatever happened, kubelet must not run without a valid configuration.
        if let Err(e) = self.gate().close().await {
            warn!("cannot gate {} after the failure: {e}", s.kubelet_unit);
        }
        self.ready();
        match policy {
            Policy::Stop => {
                telemetry::notify_status(&format!("stopped ({}): {failure}", failure.class()));
                Some(Exit::Config)
            }
            Policy::Retry { .. } if exhausted => {
                telemetry::notify_status(&format!(
                    "gave up after {attempt} attempts ({}): {failure}",
                    failure.class()
                ));
                Some(Exit::GaveUp)
            }
            Policy::Retry { .. } => {
                telemetry::notify_status(&format!(
                    "retrying in {}s after {}",
                    delay.as_secs(),
                    failure.class()
                ));
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = reload::reload_requested() => info!("SIGHUP: retrying now"),
                }
                None
            }
            Policy::WaitForNewToken => {
                telemetry::notify_status(&format!("waiting for a new bootstrap token: {failure}"));
                reload::wait_for_new_token(&self.paths, &self.settings).await;
                None
            }
        }
    }

    /// `kubeadm reset -f`: removes what a failed join left (certificates, kubeconfigs,
    /// kubelet state) so the next attempt passes kubeadm's preflight.
    async fn reset(&self) -> Result<(), Failure> {
        let s = &self.settings;
        info!("cleaning up with `kubeadm reset -f`");
        let limits = Limits {
            deadline: Duration::from_secs(180),
            no_progress: Duration::from_secs(120),
        };
        let args = vec!["reset".to_string(), "-f".to_string()];
        let finished = kubeadm::run(&s.kubeadm_path, &args, limits, &self.secrets(), true).await?;
        if finished.code != Some(0) {
            return Err(Failure::Local {
                detail: format!("`kubeadm reset -f` failed: {}", finished.last_line()),
            });
        }
        Ok(())
    }

    /// Joined: report, then watch the kubelet's credentials until stopped.
    async fn serve(self, joined: Joined) -> Exit {
        {
            let mut state = self.state.lock().expect("state lock");
            state.joined = true;
            state.failure = None;
            state.last_error = None;
        }
        self.enter(
            Phase::Serve,
            &format!(
                "node \"{}\" joined; kubelet running",
                self.settings.join.node_name
            ),
        );
        self.ready();
        let mut ca = joined.ca;
        loop {
            tokio::time::sleep(SERVE_CHECK).await;
            if let Ok(pem) = std::fs::read(self.paths.cluster_ca())
                && let Ok(fresh) = pki::pem_certificates(&pem, "cluster CA")
            {
                ca = fresh;
            }
            match kubelet::check_kubelet_conf(&self.paths, &ca, &self.settings.join.node_name) {
                Ok(creds) if creds.summary.expires_in_secs < EXPIRY_WARNING_SECS => warn!(
                    "the kubelet client certificate expires {} and has not been rotated; check that rotateCertificates is on and CSRs are approved",
                    creds.summary.not_after
                ),
                Ok(_) => {}
                Err(problem) => warn!(
                    failure = "tls-bootstrap-stuck",
                    "the kubelet's credentials are no longer valid ({problem}): the kubelet will run anonymous; restart kube-join-agent to rejoin"
                ),
            }
        }
    }
}

fn log_finding(f: &preflight::Finding) {
    match &f.verdict {
        Verdict::Warn { .. } => warn!(phase = Phase::Preflight.name(), check = f.check, "{f}"),
        _ => info!(phase = Phase::Preflight.name(), check = f.check, "{f}"),
    }
}

fn failure_of(f: &preflight::Finding) -> Failure {
    match &f.verdict {
        Verdict::Fail { reason, fix } => Failure::HostNotReady {
            check: f.check.to_string(),
            reason: reason.clone(),
            fix: fix.clone(),
        },
        other => Failure::Local {
            detail: format!("{}: {other:?}", f.check),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_named_as_the_architecture_lists_them() {
        let all = [
            Phase::LoadConfig,
            Phase::AlreadyJoined,
            Phase::GateKubelet,
            Phase::Preflight,
            Phase::Discovery,
            Phase::Join,
            Phase::Handoff,
            Phase::TlsBootstrap,
            Phase::Verify,
            Phase::Serve,
        ];
        let names: Vec<_> = all.iter().map(|p| p.name()).collect();
        assert_eq!(
            names,
            [
                "load-config",
                "already-joined",
                "gate-kubelet",
                "preflight",
                "discovery",
                "join",
                "handoff",
                "tls-bootstrap",
                "verify",
                "serve"
            ]
        );
        assert_eq!(Exit::Config as i32, 78);
    }
}
