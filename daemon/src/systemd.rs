//! The few systemd Manager and Unit calls the agent needs, over D-Bus (zbus).
//!
//! Unit control goes through D-Bus rather than `systemctl` so that every call has a
//! typed answer, and so the agent waits for a job's real result (JobRemoved) instead
//! of guessing from exit codes.

use futures_util::StreamExt;
use std::time::Duration;
use zbus::OwnedObjectPath;

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn mask_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;
    fn unmask_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;
    fn reload(&self) -> zbus::Result<()>;
    fn subscribe(&self) -> zbus::Result<()>;
    /// Sent (to every client) when a daemon-reload starts (true) and ends (false).
    #[zbus(signal)]
    fn reloading(&self, active: bool) -> zbus::Result<()>;
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
trait Unit {
    #[zbus(property(emits_changed_signal = "false"))]
    fn load_state(&self) -> zbus::Result<String>;
    #[zbus(property(emits_changed_signal = "false"))]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property(emits_changed_signal = "false"))]
    fn sub_state(&self) -> zbus::Result<String>;
    #[zbus(property(emits_changed_signal = "false"))]
    fn fragment_path(&self) -> zbus::Result<String>;
    #[zbus(property(emits_changed_signal = "false"))]
    fn unit_file_state(&self) -> zbus::Result<String>;
    #[zbus(property(emits_changed_signal = "false"))]
    fn drop_in_paths(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property(emits_changed_signal = "false"))]
    fn job(&self) -> zbus::Result<(u32, OwnedObjectPath)>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1"
)]
trait Service {
    #[zbus(property(emits_changed_signal = "false"))]
    fn main_pid(&self) -> zbus::Result<u32>;
    #[zbus(property(emits_changed_signal = "false"), name = "NRestarts")]
    fn n_restarts(&self) -> zbus::Result<u32>;
}

/// A failed D-Bus exchange with systemd.
#[derive(Debug, thiserror::Error)]
#[error("systemd: {action}: {source}")]
pub struct SystemdError {
    /// What was asked ("starting kubelet.service").
    pub action: String,
    /// The D-Bus error.
    #[source]
    pub source: zbus::Error,
}

/// A job that ended in anything but "done".
#[derive(Debug, thiserror::Error)]
#[error("systemd job {verb} {unit} ended with result \"{result}\"")]
pub struct JobFailed {
    /// "start" or "stop".
    pub verb: &'static str,
    /// The unit.
    pub unit: String,
    /// systemd's job result: failed, timeout, dependency, skipped, canceled, ...
    pub result: String,
}

/// What systemd knows about a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitInfo {
    /// loaded, not-found, masked, ...
    pub load_state: String,
    /// active, inactive, activating, failed, ...
    pub active_state: String,
    /// running, dead, auto-restart, ...
    pub sub_state: String,
    /// The unit file in use ("" when masked or not found).
    pub fragment_path: String,
    /// enabled, disabled, masked, masked-runtime, ...
    pub unit_file_state: String,
    /// Drop-in files applied to the unit.
    pub drop_in_paths: Vec<String>,
    /// Whether a job (a queued start, say) is pending for the unit.
    pub has_job: bool,
}

/// Either way a unit operation can fail.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    /// The D-Bus call failed.
    #[error(transparent)]
    Bus(#[from] SystemdError),
    /// The job ran and failed.
    #[error(transparent)]
    Job(#[from] JobFailed),
    /// The job did not finish in time.
    #[error("systemd job {verb} {unit} did not finish within {secs} s")]
    Timeout {
        /// "start" or "stop".
        verb: &'static str,
        /// The unit.
        unit: String,
        /// The limit.
        secs: u64,
    },
}

/// A connection to the system manager.
pub struct Systemd {
    conn: zbus::Connection,
    manager: ManagerProxy<'static>,
}

fn bus_err(action: impl Into<String>) -> impl FnOnce(zbus::Error) -> SystemdError {
    let action = action.into();
    move |source| SystemdError { action, source }
}

impl Systemd {
    /// Connects to the system bus and subscribes to job signals.
    pub async fn connect() -> Result<Self, SystemdError> {
        let conn = zbus::Connection::system()
            .await
            .map_err(bus_err("connecting to the system bus"))?;
        let manager = ManagerProxy::new(&conn)
            .await
            .map_err(bus_err("creating the Manager proxy"))?;
        manager
            .subscribe()
            .await
            .map_err(bus_err("subscribing to job signals"))?;
        Ok(Self { conn, manager })
    }

    /// Loads `unit` and reads its state.
    pub async fn unit_info(&self, unit: &str) -> Result<UnitInfo, SystemdError> {
        let action = || format!("reading the state of {unit}");
        let path = self
            .manager
            .load_unit(unit)
            .await
            .map_err(bus_err(action()))?;
        let proxy = UnitProxy::builder(&self.conn)
            .path(path)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(bus_err(action()))?;
        Ok(UnitInfo {
            load_state: proxy.load_state().await.map_err(bus_err(action()))?,
            active_state: proxy.active_state().await.map_err(bus_err(action()))?,
            sub_state: proxy.sub_state().await.map_err(bus_err(action()))?,
            fragment_path: proxy.fragment_path().await.map_err(bus_err(action()))?,
            unit_file_state: proxy.unit_file_state().await.map_err(bus_err(action()))?,
            drop_in_paths: proxy.drop_in_paths().await.map_err(bus_err(action()))?,
            has_job: proxy.job().await.map_err(bus_err(action()))?.0 != 0,
        })
    }

    async fn service(&self, unit: &str, action: &str) -> Result<ServiceProxy<'_>, SystemdError> {
        let path = self
            .manager
            .load_unit(unit)
            .await
            .map_err(bus_err(action))?;
        ServiceProxy::builder(&self.conn)
            .path(path)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(bus_err(action))
    }

    /// The main process of a service, if it runs.
    pub async fn main_pid(&self, unit: &str) -> Result<Option<u32>, SystemdError> {
        let action = format!("reading the main PID of {unit}");
        let proxy = self.service(unit, &action).await?;
        let pid = proxy.main_pid().await.map_err(bus_err(action))?;
        Ok((pid != 0).then_some(pid))
    }

    /// How often systemd restarted a service automatically (`Restart=`) since it was
    /// last started by hand or by a job.
    pub async fn restarts(&self, unit: &str) -> Result<u32, SystemdError> {
        let action = format!("reading the restart count of {unit}");
        let proxy = self.service(unit, &action).await?;
        proxy.n_restarts().await.map_err(bus_err(action))
    }

    /// Starts `unit` ("replace" mode) and waits for the job's result.
    pub async fn start(&self, unit: &str, limit: Duration) -> Result<(), UnitError> {
        self.run_job("start", unit, limit).await
    }

    /// Stops `unit` ("replace" mode: a queued start job is cancelled) and waits.
    pub async fn stop(&self, unit: &str, limit: Duration) -> Result<(), UnitError> {
        self.run_job("stop", unit, limit).await
    }

    /// Restarts `unit` and waits.
    pub async fn restart(&self, unit: &str, limit: Duration) -> Result<(), UnitError> {
        self.run_job("restart", unit, limit).await
    }

    async fn run_job(
        &self,
        verb: &'static str,
        unit: &str,
        limit: Duration,
    ) -> Result<(), UnitError> {
        // Take the signal stream before queueing the job, or a fast job's JobRemoved
        // could be missed.
        let mut removed = self
            .manager
            .receive_job_removed()
            .await
            .map_err(bus_err(format!("watching jobs for {unit}")))?;
        let action = format!("{verb} {unit}");
        let job = match verb {
            "start" => self.manager.start_unit(unit, "replace").await,
            "stop" => self.manager.stop_unit(unit, "replace").await,
            _ => self.manager.restart_unit(unit, "replace").await,
        }
        .map_err(bus_err(action))?;
        let wait = async {
            while let Some(signal) = removed.next().await {
                let Ok(args) = signal.args() else { continue };
                if args.job == job {
                    return Some(args.result.clone());
                }
            }
            None
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(Some(result)) if result == "done" => Ok(()),
            Ok(Some(result)) => Err(JobFailed {
                verb,
                unit: unit.to_string(),
                result,
            }
            .into()),
            Ok(None) => Err(JobFailed {
                verb,
                unit: unit.to_string(),
                result: "unknown (signal stream ended)".into(),
            }
            .into()),
            Err(_) => Err(UnitError::Timeout {
                verb,
                unit: unit.to_string(),
                secs: limit.as_secs(),
            }),
        }
    }

    /// Masks `unit` until reboot (a symlink to /dev/null in /run/systemd/system). Like
    /// `systemctl mask --runtime --no-reload`: it takes effect at the next reload.
    pub async fn mask_runtime(&self, unit: &str) -> Result<(), SystemdError> {
        self.manager
            .mask_unit_files(&[unit], true, true)
            .await
            .map_err(bus_err(format!("masking {unit} (runtime)")))?;
        Ok(())
    }

    /// Removes a runtime mask of `unit`; it takes effect at the next reload.
    pub async fn unmask_runtime(&self, unit: &str) -> Result<(), SystemdError> {
        self.manager
            .unmask_unit_files(&[unit], true)
            .await
            .map_err(bus_err(format!("unmasking {unit} (runtime)")))?;
        Ok(())
    }

    /// The daemon-reloads that end from now on, whoever asked for them (kubeadm runs
    /// its own before restarting kubelet).
    pub async fn reloads_ending(&self) -> Result<ReloadsEnding, SystemdError> {
        let stream = self
            .manager
            .receive_reloading()
            .await
            .map_err(bus_err("watching daemon-reloads"))?;
        Ok(ReloadsEnding(stream))
    }

    /// Resolves each time one of `unit`'s properties changes (its state, its restarts):
    /// the serve phase watches kubelet this way instead of polling it.
    pub async fn unit_changes(&self, unit: &str) -> Result<UnitChanges, SystemdError> {
        let action = format!("watching {unit}");
        let path = self
            .manager
            .load_unit(unit)
            .await
            .map_err(bus_err(action.clone()))?;
        let proxy = zbus::fdo::PropertiesProxy::builder(&self.conn)
            .destination("org.freedesktop.systemd1")
            .path(path)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(bus_err(action.clone()))?;
        let stream = proxy
            .receive_properties_changed()
            .await
            .map_err(bus_err(action))?;
        Ok(UnitChanges(stream))
    }

    /// Results of the jobs of `unit` that end from now on.
    pub async fn job_results(&self) -> Result<JobResults, SystemdError> {
        let stream = self
            .manager
            .receive_job_removed()
            .await
            .map_err(bus_err("watching jobs"))?;
        Ok(JobResults(stream))
    }

    /// `daemon-reload`: picks up changed unit files and drop-ins.
    pub async fn reload(&self) -> Result<(), SystemdError> {
        self.manager
            .reload()
            .await
            .map_err(bus_err("reloading unit files"))
    }
}

/// A stream of daemon-reloads ending (systemd's `Reloading(false)` signal).
pub struct ReloadsEnding(ReloadingStream);

impl ReloadsEnding {
    /// Resolves when a daemon-reload ends.
    pub async fn next(&mut self) -> Option<()> {
        while let Some(signal) = self.0.next().await {
            if signal.args().is_ok_and(|a| !a.active) {
                return Some(());
            }
        }
        None
    }
}

/// A stream of job results (systemd's `JobRemoved` signal).
pub struct JobResults(JobRemovedStream);

impl JobResults {
    /// The next job of `unit` that ends, with its result ("done", "failed", ...).
    pub async fn next_of(&mut self, unit: &str) -> Option<String> {
        while let Some(signal) = self.0.next().await {
            if let Ok(args) = signal.args()
                && args.unit == unit
            {
                return Some(args.result.clone());
            }
        }
        None
    }
}

/// Changes of one unit's properties.
pub struct UnitChanges(zbus::fdo::PropertiesChangedStream);

impl UnitChanges {
    /// Resolves at the next change; `None` when the bus connection is gone.
    pub async fn next(&mut self) -> Option<()> {
        self.0.next().await.map(|_| ())
    }
}
