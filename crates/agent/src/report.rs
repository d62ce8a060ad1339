//! Reporting to the controller (`--controller`): every `AGENT_HEARTBEAT_MS`
//! (or what the controller's last answer asks for) the agent POSTs a
//! [`HostReport`] to `{controller}/v1/agents/{host}/heartbeat`; the first
//! one registers the host. A controller that is down or slow never blocks
//! the agent, and an outage is logged once, not every second.
//!
//! `--controller` may list several instances of one controller (on etcd:
//! one leads, the others answer `503 not_leader`). Reports go to the
//! current one; when it cannot be reached, times out or answers 503, the
//! report goes at once to the next one in the list, and so on round the
//! list, so the agent finds a new leader within the round after a failover.
//!
//! Reports go over mutual TLS with this host's certificate
//! (`<name>.agent.duplex`): the controller takes reports for this host
//! from it alone.

use crate::config::{AgentConfig, ControllerConfig};
use crate::host::Host;
use crate::AgentError;
use duplex_core::agent_api::{
    ErrorBody, HeartbeatAck, HostCapacity, HostInfo, HostReport, TrafficReport, VmInfo,
    AGENT_HEARTBEAT_MS,
};
use reqwest::{StatusCode, Url};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Longest one report may take, so a dead controller never blocks.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bounds on the interval a controller may ask for.
pub const MIN_INTERVAL_MS: u64 = 200;
pub const MAX_INTERVAL_MS: u64 = 10_000;
/// Memory kept for the host itself when the capacity is not given.
pub const MEMORY_RESERVE_MIB: u64 = 1024;
/// How often an ongoing outage is logged again.
const STILL_DOWN_EVERY: Duration = Duration::from_secs(30);

/// The interval the controller asked for, within bounds.
pub fn clamp_interval(ms: u64) -> Duration {
    Duration::from_millis(ms.clamp(MIN_INTERVAL_MS, MAX_INTERVAL_MS))
}

/// `MemTotal` of a `/proc/meminfo` text, in MiB.
pub fn mem_total_mib(meminfo: &str) -> Result<u64, String> {
    let line = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .ok_or("it has no MemTotal line")?;
    let fields: Vec<&str> = line["MemTotal:".len()..].split_whitespace().collect();
    match fields.as_slice() {
        [n, "kB"] => n
            .parse::<u64>()
            .map(|kib| kib / 1024)
            .map_err(|_| format!("unexpected line {line:?}")),
        _ => Err(format!("unexpected line {line:?}")),
    }
}

/// Memory to offer by default: `MemTotal` minus [`MEMORY_RESERVE_MIB`].
pub fn default_memory_mib(meminfo: &str) -> Result<u64, String> {
    let total = mem_total_mib(meminfo)?;
    match total.saturating_sub(MEMORY_RESERVE_MIB) {
        0 => Err(format!(
            "MemTotal is {total} MiB, no more than the {MEMORY_RESERVE_MIB} MiB kept for the host"
        )),
        free => Ok(free),
    }
}

/// What this host offers, from the flags or else from the machine.
pub fn capacity(c: &ControllerConfig) -> Result<HostCapacity, AgentError> {
    let memory_mib = match c.memory_mib {
        Some(0) => {
            return Err(AgentError::Config(
                "--memory-mib must be more than 0".into(),
            ))
        }
        Some(m) => m,
        None => {
            let text = std::fs::read_to_string("/proc/meminfo").map_err(|e| e.to_string());
            text.and_then(|t| default_memory_mib(&t)).map_err(|e| {
                AgentError::Config(format!(
                    "cannot work out the memory to offer from /proc/meminfo: {e}; give --memory-mib"
                ))
            })?
        }
    };
    let vcpus = match c.vcpus {
        Some(0) => return Err(AgentError::Config("--vcpus must be more than 0".into())),
        Some(v) => v,
        None => std::thread::available_parallelism()
            .ok()
            .and_then(|n| u32::try_from(n.get()).ok())
            .ok_or_else(|| {
                AgentError::Config("cannot count this host's CPUs; give --vcpus".into())
            })?,
    };
    Ok(HostCapacity { vcpus, memory_mib })
}

/// A base URL given as `flag`: `https://host[:port][/prefix]`, no trailing `/`.
pub fn base_url(flag: &str, s: &str) -> Result<Url, AgentError> {
    let bad = |why: &str| {
        AgentError::Config(format!(
            "{flag} `{s}`: {why}; give a URL like https://10.77.0.1:7080"
        ))
    };
    let url = Url::parse(s.trim()).map_err(|e| bad(&e.to_string()))?;
    if url.scheme() != "https" {
        return Err(bad(
            "only https:// is supported (every control connection is mutual TLS)",
        ));
    }
    match url.host_str() {
        Some(h) if !h.is_empty() => {}
        _ => return Err(bad("no host")),
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("no query or fragment allowed"));
    }
    Ok(url)
}

/// The `--controller` list ([`ControllerConfig::split_urls`]): at least one
/// base URL, each checked by [`base_url`]; an error names the bad entry.
pub fn controller_urls(urls: &[String]) -> Result<Vec<Url>, AgentError> {
    if urls.iter().all(|u| u.trim().is_empty()) {
        return Err(AgentError::Config(
            "--controller: no URL given; give a URL like https://10.77.0.1:7080, \
             or several separated by commas"
                .into(),
        ));
    }
    urls.iter()
        .enumerate()
        .map(|(i, u)| {
            if u.trim().is_empty() {
                return Err(AgentError::Config(format!(
                    "--controller `{}`: entry {} is empty; separate the URLs by single commas",
                    urls.join(","),
                    i + 1
                )));
            }
            base_url("--controller", u)
        })
        .collect()
}

/// `{controller}/v1/agents/{host}/heartbeat`.
fn heartbeat_url(controller: &Url, host: &str) -> Result<Url, AgentError> {
    let mut heartbeat = controller.clone();
    heartbeat
        .path_segments_mut()
        .map_err(|_| AgentError::Config(format!("--controller `{controller}`: not a base URL")))?
        .pop_if_empty()
        .extend(["v1", "agents", host, "heartbeat"]);
    Ok(heartbeat)
}

fn url_text(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_string()
}

/// `https://<listen>`, unless nobody could reach that address.
pub fn default_advertise(listen: SocketAddr) -> Result<String, AgentError> {
    if listen.ip().is_unspecified() {
        return Err(AgentError::Config(format!(
            "this agent listens on {listen}, which the controller cannot reach; \
             give --advertise https://<this host's IP>:{}",
            listen.port()
        )));
    }
    Ok(format!("https://{listen}"))
}

/// What a report says about the host, gathered at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub host: HostInfo,
    pub vms: Vec<VmInfo>,
    pub traffic: Vec<TrafficReport>,
    pub fence: u64,
    /// The self-fence lease, if the agent fences itself.
    pub self_fence_ms: Option<u64>,
    pub rules_version: u64,
    pub usage: Option<duplex_core::agent_api::HostUsage>,
}

/// What the report task reports on: the [`Host`]; a fake in tests.
pub trait Reportable: Send + Sync + 'static {
    fn gather(&self) -> impl Future<Output = Snapshot> + Send;
    /// A report sent at `sent` was accepted; the controller holds the host
    /// fenced or not.
    fn accepted(&self, _sent: Instant, _held_fenced: bool) {}
    /// Notified when a report should go at once.
    fn urgent(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }
}

impl Reportable for Host {
    async fn gather(&self) -> Snapshot {
        let (host, vms, traffic) = self.snapshot().await;
        Snapshot {
            usage: Some(crate::usage::measure(&vms)),
            host,
            vms,
            traffic,
            fence: self.fence.current(),
            self_fence_ms: self.self_fence.period_ms(),
            rules_version: self.rules.lock().map(|r| r.version).unwrap_or(0),
        }
    }
    fn accepted(&self, sent: Instant, held_fenced: bool) {
        self.self_fence.renewed(sent.into_std(), held_fenced);
    }
    fn urgent(&self) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.urgent.clone())
    }
}

/// One controller instance reports may go to.
#[derive(Debug)]
struct Target {
    /// Its base URL, as logged.
    base: String,
    heartbeat: Url,
}

/// The report task's settings, checked before the agent starts, and which
/// controller instance it reports to.
#[derive(Debug)]
pub struct Reporter {
    targets: Vec<Target>,
    /// Index in `targets` of the instance the next report goes to first.
    current: usize,
    /// The instance that accepted the last accepted report.
    accepted_by: Option<usize>,
    advertise: String,
    capacity: HostCapacity,
    /// The host's site (`--site`), reported so the controller records it.
    site: Option<String>,
    http: duplex_tls::client::Clients,
}

impl Reporter {
    /// `None` without `--controller`; an error naming the flag or file if
    /// the settings cannot work.
    pub fn from_config(cfg: &AgentConfig) -> Result<Option<Reporter>, AgentError> {
        let Some(c) = &cfg.controller else {
            return Ok(None);
        };
        let targets = controller_urls(&c.urls)?
            .into_iter()
            .map(|u| {
                Ok(Target {
                    heartbeat: heartbeat_url(&u, &cfg.name)?,
                    base: url_text(&u),
                })
            })
            .collect::<Result<Vec<_>, AgentError>>()?;
        let advertise = match &c.advertise {
            Some(a) => url_text(&base_url("--advertise", a)?),
            None => default_advertise(cfg.listen)?,
        };
        let http = duplex_tls::client::Clients::new(cfg.tls.clone(), |b| {
            b.connect_timeout(REPORT_TIMEOUT)
                .timeout(REPORT_TIMEOUT)
                .no_proxy()
        })
        .map_err(|e| AgentError::Config(format!("TLS: {e}")))?;
        if let Some(site) = &cfg.site {
            crate::config::check_site(site)
                .map_err(|e| AgentError::Config(format!("--site: {e}")))?;
        }
        Ok(Some(Reporter {
            targets,
            current: 0,
            accepted_by: None,
            advertise,
            capacity: capacity(c)?,
            site: cfg.site.clone(),
            http,
        }))
    }

    pub fn advertise(&self) -> &str {
        &self.advertise
    }

    pub fn capacity(&self) -> HostCapacity {
        self.capacity
    }

    /// Where reports go, in the order they are tried.
    pub fn heartbeat_urls(&self) -> Vec<&str> {
        self.targets.iter().map(|t| t.heartbeat.as_str()).collect()
    }

    /// The controllers' base URLs, as logged.
    fn controllers(&self) -> String {
        let bases: Vec<&str> = self.targets.iter().map(|t| t.base.as_str()).collect();
        bases.join(", ")
    }

    fn report(&self, s: Snapshot, seq: u64) -> HostReport {
        HostReport {
            host: s.host,
            url: self.advertise.clone(),
            capacity: self.capacity,
            vms: s.vms,
            traffic: s.traffic,
            fence: s.fence,
            seq,
            self_fence_ms: s.self_fence_ms,
            rules_version: s.rules_version,
            site: self.site.clone(),
            usage: s.usage,
        }
    }

    /// Sends `report` to controller `i`.
    async fn send(&self, i: usize, report: &HostReport) -> Result<HeartbeatAck, Failed> {
        let resp = self
            .http
            .get()
            .post(self.targets[i].heartbeat.clone())
            .json(report)
            .send()
            .await
            .map_err(|e| Failed::TryNext(crate::client::error_chain(&e)))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let msg = serde_json::from_str::<ErrorBody>(&resp.text().await.unwrap_or_default())
                .map(|b| b.error.message)
                .unwrap_or_else(|_| status.to_string());
            return Err(Failed::Refused(msg));
        }
        let text = resp
            .text()
            .await
            .map_err(|e| Failed::TryNext(crate::client::error_chain(&e)))?;
        if !status.is_success() {
            let msg = serde_json::from_str::<ErrorBody>(&text)
                .map(|b| b.error.message)
                .unwrap_or_else(|_| text.chars().take(200).collect());
            let msg = format!("it answered {status}: {msg}");
            // 503, whatever the code: not the leader (yet), or unwell.
            return Err(if status == StatusCode::SERVICE_UNAVAILABLE {
                Failed::TryNext(msg)
            } else {
                Failed::Other(msg)
            });
        }
        serde_json::from_str(&text)
            .map_err(|e| Failed::Other(format!("unexpected answer ({e}): {text:.200}")))
    }

    /// One round: `report` goes to the current controller and, while they
    /// cannot be reached, time out or answer 503, to each of the others in
    /// turn, each miss moving `current` on to the next. Ends at the first
    /// that answers otherwise (accepting or not), which stays current.
    async fn deliver(&mut self, report: &HostReport) -> Round {
        let n = self.targets.len();
        let mut missed = Vec::new();
        for _ in 0..n {
            let i = self.current;
            match self.send(i, report).await {
                Err(Failed::TryNext(m)) => {
                    tracing::debug!(controller = %self.targets[i].base, error = %m, "report not taken; trying the next controller");
                    missed.push((i, m));
                    self.current = (i + 1) % n;
                }
                outcome => {
                    return Round {
                        answered: Some(i),
                        outcome,
                    }
                }
            }
        }
        let why = match missed.as_slice() {
            [(_, m)] => m.clone(),
            _ => {
                let each: Vec<String> = missed
                    .iter()
                    .map(|(i, m)| format!("{}: {m}", self.targets[*i].base))
                    .collect();
                each.join("; ")
            }
        };
        Round {
            answered: None,
            outcome: Err(Failed::TryNext(why)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Failed {
    /// 401 or 403: the controller refused this host's certificate (why).
    Refused(String),
    /// No answer (cannot connect, timed out, cut off) or 503 (not the
    /// leader): the report goes to the next controller.
    TryNext(String),
    /// Any other refusal, or an answer that makes no sense.
    Other(String),
}

/// How a round of [`Reporter::deliver`] went.
#[derive(Debug)]
struct Round {
    /// The controller that answered (other than 503), if any did.
    answered: Option<usize>,
    outcome: Result<HeartbeatAck, Failed>,
}

/// What to log after a report, so an outage is logged once, not per report.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Note {
    /// The first report the controller accepted.
    Registered {
        after_failures: u64,
    },
    Recovered {
        failures: u64,
    },
    /// The first failure of an outage, or a change of its kind.
    Down {
        unauthorized: bool,
    },
    StillDown {
        failures: u64,
        down_for: Duration,
        unauthorized: bool,
    },
}

#[derive(Debug)]
struct Outage {
    failures: u64,
    since: Instant,
    last_logged: Instant,
    unauthorized: bool,
}

#[derive(Debug, Default)]
struct Health {
    registered: bool,
    outage: Option<Outage>,
}

impl Health {
    fn success(&mut self) -> Option<Note> {
        let failures = self.outage.take().map(|o| o.failures).unwrap_or(0);
        if !self.registered {
            self.registered = true;
            return Some(Note::Registered {
                after_failures: failures,
            });
        }
        (failures > 0).then_some(Note::Recovered { failures })
    }

    fn failure(&mut self, now: Instant, unauthorized: bool) -> Option<Note> {
        let Some(o) = &mut self.outage else {
            self.outage = Some(Outage {
                failures: 1,
                since: now,
                last_logged: now,
                unauthorized,
            });
            return Some(Note::Down { unauthorized });
        };
        o.failures += 1;
        if o.unauthorized != unauthorized {
            o.unauthorized = unauthorized;
            o.last_logged = now;
            return Some(Note::Down { unauthorized });
        }
        if now.saturating_duration_since(o.last_logged) >= STILL_DOWN_EVERY {
            o.last_logged = now;
            return Some(Note::StillDown {
                failures: o.failures,
                down_for: now.saturating_duration_since(o.since),
                unauthorized,
            });
        }
        None
    }
}

fn failed_reports(n: u64) -> String {
    match n {
        1 => "1 failed report".into(),
        n => format!("{n} failed reports"),
    }
}

/// Reports until `stop` turns true (or its sender is gone).
pub async fn run<S: Reportable>(
    source: Arc<S>,
    mut r: Reporter,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tracing::info!(controller = %r.controllers(), advertise = %r.advertise,
        vcpus = r.capacity.vcpus, memory_mib = r.capacity.memory_mib, "reporting to controller");
    let mut health = Health::default();
    let mut interval = clamp_interval(AGENT_HEARTBEAT_MS);
    let mut seq = 0u64;
    let mut warned_fence = None;
    let urgent = source.urgent().unwrap_or_default();
    while !*stop.borrow() {
        let started = Instant::now();
        seq += 1;
        let attempt = async {
            let snap = source.gather().await;
            let seen = snap.fence;
            let host = snap.host.name.clone();
            let report = r.report(snap, seq);
            (r.deliver(&report).await, seen, host)
        };
        let (round, seen, host) = tokio::select! {
            o = attempt => o,
            _ = stop.changed() => break,
        };
        // Who answered, or else who was tried.
        let url = match round.answered {
            Some(i) => r.targets[i].base.clone(),
            None => r.controllers(),
        };
        let who = match round.answered {
            None if r.targets.len() > 1 => "any controller".to_string(),
            _ => format!("controller at {url}"),
        };
        if let (Ok(_), Some(i)) = (&round.outcome, round.answered) {
            if r.accepted_by.is_some_and(|before| before != i) {
                tracing::info!("now reporting to controller {url} (the leader)");
            }
            r.accepted_by = Some(i);
        }
        let note = match &round.outcome {
            Ok(_) => health.success(),
            Err(f) => health.failure(Instant::now(), matches!(f, Failed::Refused(_))),
        };
        let err = match &round.outcome {
            Err(Failed::Other(m) | Failed::TryNext(m) | Failed::Refused(m)) => m.as_str(),
            _ => "",
        };
        let bundle = r.http.bundle().dir.display();
        match note {
            None => {}
            Some(Note::Registered { after_failures: 0 }) => tracing::info!(
                "registered with controller at {url} as host {host} (reachable at {})",
                r.advertise
            ),
            Some(Note::Registered { after_failures }) => tracing::info!(
                "registered with controller at {url} as host {host} (reachable at {}) after {}",
                r.advertise,
                failed_reports(after_failures)
            ),
            Some(Note::Recovered { failures }) => {
                tracing::info!(
                    "reached controller at {url} again after {}",
                    failed_reports(failures)
                )
            }
            Some(Note::Down { unauthorized: true }) => tracing::error!(
                "controller at {url} refused this host's certificate in {bundle}: {err}; will keep trying"
            ),
            Some(Note::Down {
                unauthorized: false,
            }) => tracing::warn!(
                "cannot reach {who}: {err}; will keep trying (logged again every {} s while it lasts)",
                STILL_DOWN_EVERY.as_secs()
            ),
            Some(Note::StillDown {
                failures,
                down_for,
                unauthorized: true,
            }) => tracing::error!(
                "controller at {url} still refuses this host's certificate in {bundle}: {failures} failed reports over {} s",
                down_for.as_secs()
            ),
            Some(Note::StillDown {
                failures,
                down_for,
                unauthorized: false,
            }) => tracing::warn!(
                "still cannot reach {who}: {failures} failed reports over {} s; last: {err}",
                down_for.as_secs()
            ),
        }
        match round.outcome {
            Ok(ack) => {
                source.accepted(started, ack.host_fenced);
                interval = clamp_interval(ack.interval_ms);
                // 0: the controller holds no lease (it gives no orders).
                if ack.fence > 0 && ack.fence < seen && warned_fence != Some(ack.fence) {
                    warned_fence = Some(ack.fence);
                    tracing::warn!("controller at {url} leads with fencing token {} but this agent has already obeyed token {seen}: its orders will be refused", ack.fence);
                }
            }
            Err(Failed::Other(_) | Failed::TryNext(_) | Failed::Refused(_)) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep_until(started + interval) => {}
            _ = urgent.notified() => {}
            _ = stop.changed() => break,
        }
    }
    tracing::info!(controller = %r.controllers(), "stopped reporting to controller");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fence::tests::temp_dir;
    use axum::extract::{Path as UrlPath, State};
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;
    use axum::Extension;
    use axum::{Json, Router};
    use duplex_core::agent_api::{AccelInfo, AccelKind, ErrorDetail, VmState};
    use duplex_core::identity::Identity;
    use duplex_core::vm_spec::VmSpec;
    use duplex_tls::test_pki::TestPki;
    use std::sync::Mutex;

    #[test]
    fn interval_is_clamped() {
        let ms = |m: u64| clamp_interval(m).as_millis() as u64;
        assert_eq!(ms(0), 200);
        assert_eq!(ms(199), 200);
        assert_eq!(ms(200), 200);
        assert_eq!(ms(AGENT_HEARTBEAT_MS), AGENT_HEARTBEAT_MS);
        assert_eq!(ms(10_000), 10_000);
        assert_eq!(ms(10_001), 10_000);
        assert_eq!(ms(u64::MAX), 10_000);
    }

    #[test]
    fn meminfo() {
        let good = "MemTotal:       16314268 kB\nMemFree:         1234 kB\n";
        assert_eq!(mem_total_mib(good), Ok(15931));
        assert_eq!(default_memory_mib(good), Ok(15931 - 1024));
        let later = "MemFree: 1 kB\nMemTotal: 4194304 kB\n";
        assert_eq!(default_memory_mib(later), Ok(3072));
        for bad in [
            "",
            "MemFree: 1 kB\n",
            "MemTotal:\n",
            "MemTotal: lots kB\n",
            "MemTotal: 123\n",
            "MemTotal: 123 MB\n",
            "MemTotal: -5 kB\n",
            "MemTotal: 1 2 kB\n",
            "memtotal: 4194304 kB\n",
        ] {
            assert!(mem_total_mib(bad).is_err(), "{bad:?}");
        }
        // Too small to offer anything after the host's reserve.
        let e = default_memory_mib("MemTotal: 1048576 kB\n").unwrap_err();
        assert!(e.contains("1024 MiB"), "{e}");
        assert!(default_memory_mib("MemTotal: 0 kB\n").is_err());
        assert_eq!(default_memory_mib("MemTotal: 1049600 kB\n"), Ok(1));
    }

    #[test]
    fn urls() {
        let u = base_url("--controller", "https://10.77.0.1:7080/").unwrap();
        assert_eq!(url_text(&u), "https://10.77.0.1:7080");
        for bad in [
            "",
            "10.77.0.1:7080",
            "http://c:7080",
            "https://",
            "ftp://x",
            "https://c/?a=1",
        ] {
            let e = base_url("--controller", bad).unwrap_err().to_string();
            assert!(e.starts_with("--controller"), "{e}");
        }
        assert_eq!(
            default_advertise("10.77.0.11:7070".parse().unwrap()).unwrap(),
            "https://10.77.0.11:7070"
        );
        assert_eq!(
            default_advertise("[fd00::1]:7070".parse().unwrap()).unwrap(),
            "https://[fd00::1]:7070"
        );
        let e = default_advertise("0.0.0.0:7070".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("--advertise"), "{e}");
    }

    #[test]
    fn controller_lists() {
        let list = |s: &str| controller_urls(&ControllerConfig::split_urls(s));
        let texts = |s: &str| -> Vec<String> { list(s).unwrap().iter().map(url_text).collect() };
        assert_eq!(texts("https://10.0.0.1:7080"), ["https://10.0.0.1:7080"]);
        assert_eq!(
            texts("https://10.0.0.1:7080,https://10.0.0.2:7080/"),
            ["https://10.0.0.1:7080", "https://10.0.0.2:7080"]
        );
        assert_eq!(
            texts(" https://a:1 , https://b:2/ctl,https://c:3 "),
            ["https://a:1", "https://b:2/ctl", "https://c:3"]
        );
        // Nothing at all.
        for empty in ["", " ", ",", " , "] {
            let e = list(empty).unwrap_err().to_string();
            assert!(
                e.starts_with("--controller") && e.contains("no URL given"),
                "{empty:?}: {e}"
            );
        }
        assert!(controller_urls(&[])
            .unwrap_err()
            .to_string()
            .contains("no URL given"));
        // An empty entry, by position.
        for (bad, pos) in [
            ("https://a:1,,https://b:2", "entry 2 is empty"),
            ("https://a:1,", "entry 2 is empty"),
            (",https://a:1", "entry 1 is empty"),
            ("https://a:1, ,https://b:2", "entry 2 is empty"),
        ] {
            let e = list(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("--controller") && e.contains(pos),
                "{bad:?}: {e}"
            );
        }
        // A bad entry is named.
        for (bad, entry) in [
            ("https://a:1,10.0.0.2:7080", "`10.0.0.2:7080`"),
            ("https://a:1,http://b:2", "`http://b:2`"),
            ("https://a:1,https://b:2/?x=1", "`https://b:2/?x=1`"),
            ("https://a:1,https://", "`https://`"),
        ] {
            let e = list(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("--controller") && e.contains(entry),
                "{bad:?}: {e}"
            );
        }
        // Through the reporter: one heartbeat URL per entry, in order.
        let d = temp_dir("controller-lists");
        let c = controller_config("https://10.0.0.1:7080,https://10.0.0.2:7080/");
        let r = Reporter::from_config(&agent_config(&d, Some(c)))
            .unwrap()
            .unwrap();
        assert_eq!(
            r.heartbeat_urls(),
            [
                "https://10.0.0.1:7080/v1/agents/host-a/heartbeat",
                "https://10.0.0.2:7080/v1/agents/host-a/heartbeat"
            ]
        );
        assert_eq!(
            r.controllers(),
            "https://10.0.0.1:7080, https://10.0.0.2:7080"
        );
        let c = controller_config("https://10.0.0.1:7080,ftp://x");
        let e = Reporter::from_config(&agent_config(&d, Some(c)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`ftp://x`"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// The test PKI in `dir/pki`, made at the first call.
    fn pki(dir: &std::path::Path) -> TestPki {
        let p = dir.join("pki");
        if p.exists() {
            TestPki { dir: p }
        } else {
            TestPki::new(&p).unwrap()
        }
    }

    /// An agent `host-a` with its bundle from `dir`'s PKI.
    fn agent_config(dir: &std::path::Path, controller: Option<ControllerConfig>) -> AgentConfig {
        AgentConfig {
            controller,
            tls: pki(dir).agent("host-a").unwrap(),
            ..crate::config::test_config(dir)
        }
    }

    /// `urls`: a `--controller` list.
    fn controller_config(urls: &str) -> ControllerConfig {
        ControllerConfig {
            urls: ControllerConfig::split_urls(urls),
            advertise: None,
            memory_mib: Some(4096),
            vcpus: Some(4),
            self_fence_ms: None,
        }
    }

    #[test]
    fn reporter_settings() {
        let d = temp_dir("reporter-settings");
        assert!(Reporter::from_config(&agent_config(&d, None))
            .unwrap()
            .is_none());

        let c = controller_config("https://10.77.0.1:7080");
        let r = Reporter::from_config(&agent_config(&d, Some(c.clone())))
            .unwrap()
            .unwrap();
        assert_eq!(
            r.heartbeat_urls(),
            ["https://10.77.0.1:7080/v1/agents/host-a/heartbeat"]
        );
        assert_eq!(r.advertise(), "https://127.0.0.1:7070");
        assert_eq!(
            r.capacity(),
            HostCapacity {
                vcpus: 4,
                memory_mib: 4096
            }
        );

        let r = Reporter::from_config(&agent_config(
            &d,
            Some(ControllerConfig {
                advertise: Some("https://10.77.0.11:7070/".into()),
                memory_mib: None,
                vcpus: None,
                ..c.clone()
            }),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(r.advertise(), "https://10.77.0.11:7070");
        assert!(r.capacity().vcpus > 0 && r.capacity().memory_mib > 0);

        let fails = |c: ControllerConfig, needle: &str| {
            let e = Reporter::from_config(&agent_config(&d, Some(c)))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{e} should mention {needle}");
        };
        fails(
            ControllerConfig {
                memory_mib: Some(0),
                ..c.clone()
            },
            "--memory-mib",
        );
        fails(
            ControllerConfig {
                vcpus: Some(0),
                ..c.clone()
            },
            "--vcpus",
        );
        let mut no_bundle = agent_config(&d, Some(c.clone()));
        no_bundle.tls = duplex_tls::Bundle::new(d.join("missing"));
        let e = Reporter::from_config(&no_bundle).unwrap_err().to_string();
        assert!(
            e.contains("missing") && e.contains("duplex pki issue"),
            "{e}"
        );
        fails(
            ControllerConfig {
                urls: vec!["10.77.0.1:7080".into()],
                ..c.clone()
            },
            "--controller",
        );
        fails(
            ControllerConfig {
                urls: Vec::new(),
                ..c.clone()
            },
            "no URL given",
        );
        fails(
            ControllerConfig {
                advertise: Some("nope".into()),
                ..c.clone()
            },
            "--advertise",
        );
        let mut unspecified = agent_config(&d, Some(c));
        unspecified.listen = "0.0.0.0:7070".parse().unwrap();
        let e = Reporter::from_config(&unspecified).unwrap_err().to_string();
        assert!(e.contains("--advertise"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn plural() {
        assert_eq!(failed_reports(1), "1 failed report");
        assert_eq!(failed_reports(31), "31 failed reports");
    }

    #[test]
    fn outages_are_logged_once() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut h = Health::default();
        // Controller down from the start.
        assert_eq!(
            h.failure(s(0), false),
            Some(Note::Down {
                unauthorized: false
            })
        );
        for n in 1..30 {
            assert_eq!(h.failure(s(n), false), None, "second {n}");
        }
        assert_eq!(
            h.failure(s(30), false),
            Some(Note::StillDown {
                failures: 31,
                down_for: Duration::from_secs(30),
                unauthorized: false
            })
        );
        assert_eq!(h.failure(s(31), false), None);
        assert_eq!(h.success(), Some(Note::Registered { after_failures: 32 }));
        assert_eq!(h.success(), None);
        assert_eq!(h.success(), None);
        // A later outage, which turns into a refused token.
        assert_eq!(
            h.failure(s(100), false),
            Some(Note::Down {
                unauthorized: false
            })
        );
        assert_eq!(h.failure(s(101), false), None);
        assert_eq!(
            h.failure(s(102), true),
            Some(Note::Down { unauthorized: true })
        );
        assert_eq!(h.failure(s(103), true), None);
        assert_eq!(
            h.failure(s(132), true),
            Some(Note::StillDown {
                failures: 5,
                down_for: Duration::from_secs(32),
                unauthorized: true
            })
        );
        assert_eq!(h.success(), Some(Note::Recovered { failures: 5 }));
        assert_eq!(h.success(), None);
        // Registered at once.
        let mut h = Health::default();
        assert_eq!(h.success(), Some(Note::Registered { after_failures: 0 }));
    }

    /// A host with one VM, no QEMU.
    struct FakeHost {
        fence: u64,
    }

    fn fake_vm() -> VmInfo {
        let spec = VmSpec::new("vm-1", "10.0.0.5".parse().unwrap());
        VmInfo {
            mac: spec.mac(),
            spec,
            state: VmState::Running,
            pid: Some(42),
            tap: "dpx-vm-1".into(),
            boot_ms: Some(300),
            guest: None,
            serial_log: "/tmp/serial.log".into(),
            migration: None,
            heartbeat: None,
            heartbeat_age_ms: None,
            reset_age_ms: None,
            isolated: false,
            failure: None,
            protection: None,
        }
    }

    impl Reportable for FakeHost {
        async fn gather(&self) -> Snapshot {
            let vm = fake_vm();
            Snapshot {
                host: HostInfo {
                    name: "host-a".into(),
                    version: "test".into(),
                    accel: AccelInfo {
                        kind: AccelKind::Tcg,
                        reason: "test".into(),
                    },
                    qemu: "none".into(),
                    listen: "127.0.0.1:7070".into(),
                    vms: Vec::new(),
                },
                traffic: vec![TrafficReport {
                    vm: vm.spec.name.clone(),
                    tx_packets: 7,
                    ..TrafficReport::default()
                }],
                vms: vec![vm],
                fence: self.fence,
                self_fence_ms: None,
                rules_version: 1,
                usage: None,
            }
        }
    }

    /// How a stand-in controller instance answers.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    enum Role {
        /// Accepts (with the right token).
        #[default]
        Leader,
        /// `503 not_leader`, as a controller standing by does.
        Follower,
        /// Never answers.
        Silent,
    }

    /// Stands in for the controller's heartbeat endpoint over mutual TLS:
    /// records what it gets and from whom, and accepts reports only from
    /// the agent of host `accept`, when it leads.
    #[derive(Default)]
    struct FakeController {
        accept: Mutex<String>,
        role: Mutex<Role>,
        got: Mutex<Vec<(String, Option<Identity>, HostReport)>>,
    }

    impl FakeController {
        fn set_role(&self, role: Role) {
            *self.role.lock().unwrap() = role;
        }

        fn count(&self) -> usize {
            self.got.lock().unwrap().len()
        }

        fn seqs(&self) -> Vec<u64> {
            self.got.lock().unwrap().iter().map(|g| g.2.seq).collect()
        }
    }

    async fn heartbeat(
        State(c): State<Arc<FakeController>>,
        UrlPath(host): UrlPath<String>,
        Extension(peer): Extension<duplex_tls::Peer>,
        Json(report): Json<HostReport>,
    ) -> Response {
        let who = peer.0.ok();
        let accept = Identity::agent(&c.accept.lock().unwrap()).ok();
        let ok = who.is_some() && who == accept;
        let role = *c.role.lock().unwrap();
        c.got.lock().unwrap().push((host, who, report));
        match role {
            Role::Follower => {
                let body = ErrorBody {
                    error: ErrorDetail {
                        code: "not_leader".into(),
                        message: "controller c2 is not the leader; use the leader".into(),
                    },
                };
                return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
            }
            Role::Silent => std::future::pending().await,
            Role::Leader => {}
        }
        if !ok {
            let body = ErrorBody {
                error: ErrorDetail {
                    code: "forbidden".into(),
                    message: "not that host's agent".into(),
                },
            };
            return (StatusCode::FORBIDDEN, Json(body)).into_response();
        }
        Json(HeartbeatAck {
            interval_ms: 1, // clamped to 200
            fence: 9,
            host_fenced: false,
        })
        .into_response()
    }

    /// A stand-in controller with `d`'s PKI that accepts host `accept`.
    async fn fake_controller(d: &std::path::Path, accept: &str) -> (String, Arc<FakeController>) {
        fake_instance(d, accept, Role::Leader).await
    }

    async fn fake_instance(
        d: &std::path::Path,
        accept: &str,
        role: Role,
    ) -> (String, Arc<FakeController>) {
        let c = Arc::new(FakeController {
            accept: Mutex::new(accept.into()),
            role: Mutex::new(role),
            ..Default::default()
        });
        let app = Router::new()
            .route("/v1/agents/{host}/heartbeat", post(heartbeat))
            .with_state(c.clone());
        let url = crate::api::tests::spawn(app, pki(d).controller().unwrap()).await;
        (url, c)
    }

    async fn wait_for(c: &FakeController, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while c.got.lock().unwrap().len() < n {
            assert!(Instant::now() < deadline, "fewer than {n} reports arrived");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn reports_register_and_repeat() {
        let d = temp_dir("report-loop");
        let (url, ctl) = fake_controller(&d, "host-a").await;
        let cfg = agent_config(&d, Some(controller_config(&url)));
        let r = Reporter::from_config(&cfg).unwrap().unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let started = Instant::now();
        let task = tokio::spawn(run(Arc::new(FakeHost { fence: 4 }), r, stopped));
        // The ack asks for 1 ms, clamped to 200: three reports in ~400 ms
        // (the default 1 s would take 2 s).
        wait_for(&ctl, 3, Duration::from_millis(1500)).await;
        assert!(started.elapsed() >= Duration::from_millis(380));
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the report task stops when told")
            .unwrap();
        let got = ctl.got.lock().unwrap();
        for (i, (host, who, report)) in got.iter().enumerate() {
            assert_eq!(host, "host-a");
            assert_eq!(who.as_ref(), Some(&Identity::agent("host-a").unwrap()));
            assert_eq!(report.seq, i as u64 + 1);
            assert_eq!(report.host.name, "host-a");
            assert_eq!(report.url, "https://127.0.0.1:7070");
            assert_eq!(
                report.capacity,
                HostCapacity {
                    vcpus: 4,
                    memory_mib: 4096
                }
            );
            assert_eq!(report.vms, vec![fake_vm()]);
            assert_eq!(report.traffic.len(), 1);
            assert_eq!(report.traffic[0].tx_packets, 7);
            assert_eq!(report.fence, 4);
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A controller that refuses this host's certificate: reports go on
    /// at the default interval, and are taken once it accepts them.
    #[tokio::test]
    async fn a_refused_certificate_is_retried() {
        let d = temp_dir("report-403");
        let (url, ctl) = fake_controller(&d, "host-b").await;
        let cfg = agent_config(&d, Some(controller_config(&url)));
        let r = Reporter::from_config(&cfg).unwrap().unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run(Arc::new(FakeHost { fence: 0 }), r, stopped));
        wait_for(&ctl, 1, Duration::from_secs(2)).await;
        *ctl.accept.lock().unwrap() = "host-a".into();
        // Refused reports keep the default 1 s interval.
        wait_for(&ctl, 3, Duration::from_secs(4)).await;
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .unwrap()
            .unwrap();
        let got = ctl.got.lock().unwrap();
        let seqs: Vec<u64> = got.iter().map(|g| g.2.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn a_hung_controller_never_blocks_stopping() {
        // Accepts connections (in the backlog) but never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let d = temp_dir("report-hung");
        let cfg = agent_config(&d, Some(controller_config(&url)));
        let r = Reporter::from_config(&cfg).unwrap().unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run(Arc::new(FakeHost { fence: 0 }), r, stopped));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!task.is_finished());
        let asked = Instant::now();
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_millis(500), task)
            .await
            .expect("stops at once, mid-report")
            .unwrap();
        assert!(asked.elapsed() < Duration::from_millis(500));
        // Dropping the sender stops it too.
        let r = Reporter::from_config(&cfg).unwrap().unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run(Arc::new(FakeHost { fence: 0 }), r, stopped));
        drop(stop);
        tokio::time::timeout(Duration::from_millis(500), task)
            .await
            .unwrap()
            .unwrap();
        drop(listener);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A port nothing listens on.
    fn closed_port() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("https://{}", l.local_addr().unwrap())
    }

    #[tokio::test]
    async fn reports_find_the_leader_and_follow_it() {
        let d = temp_dir("report-leader");
        let dead = closed_port();

        // Whatever the order, reports land on the leader; a follower is
        // tried at most once (in the first round), a dead one too.
        for leader_first in [false, true] {
            let (a, follower) = fake_instance(&d, "host-a", Role::Follower).await;
            let (b, leader) = fake_instance(&d, "host-a", Role::Leader).await;
            let list = if leader_first {
                format!("{b},{dead},{a}")
            } else {
                format!("{dead},{a},{b}")
            };
            let cfg = agent_config(&d, Some(controller_config(&list)));
            let r = Reporter::from_config(&cfg).unwrap().unwrap();
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(run(Arc::new(FakeHost { fence: 0 }), r, stopped));
            // The first report reaches the leader in the first round, at
            // once: the leader's 200 ms interval applies from then on.
            wait_for(&leader, 4, Duration::from_millis(1500)).await;
            stop.send(true).unwrap();
            tokio::time::timeout(Duration::from_secs(1), task)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(leader.seqs()[..4], [1, 2, 3, 4], "{list}");
            let tried = if leader_first { Vec::new() } else { vec![1] };
            assert_eq!(follower.seqs(), tried, "{list}");
        }

        // A failover: the leader goes silent, the follower takes over.
        let (a, one) = fake_instance(&d, "host-a", Role::Follower).await;
        let (b, two) = fake_instance(&d, "host-a", Role::Leader).await;
        let cfg = agent_config(&d, Some(controller_config(&format!("{a},{b}"))));
        let r = Reporter::from_config(&cfg).unwrap().unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run(Arc::new(FakeHost { fence: 0 }), r, stopped));
        wait_for(&two, 3, Duration::from_millis(1500)).await;
        assert_eq!(one.count(), 1);
        two.set_role(Role::Silent);
        one.set_role(Role::Leader);
        let before = one.count();
        // The report two never answers times out (2 s) and goes to one in
        // the same round; then every report goes to one first.
        wait_for(&one, before + 4, Duration::from_secs(5)).await;
        let at_two = two.count();
        wait_for(&one, before + 6, Duration::from_secs(2)).await;
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(two.count(), at_two, "no more reports to the silent one");
        // Every report arrived (the missed one went to one in its round).
        let (s1, s2) = (one.seqs(), two.seqs());
        let last = *s1.last().unwrap();
        let hung = *s2.last().unwrap();
        assert_eq!(s1[0], 1, "the first round tried one, a follower then");
        assert_eq!(s1[1..], (hung..=last).collect::<Vec<_>>()[..]);
        assert_eq!(s2, (1..=hung).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn a_round_moves_on_only_past_misses() {
        let d = temp_dir("report-round");
        let dead = closed_port();
        let (a, one) = fake_instance(&d, "host-a", Role::Follower).await;
        let (b, two) = fake_instance(&d, "host-b", Role::Leader).await;
        let cfg = agent_config(&d, Some(controller_config(&format!("{dead},{a},{b}"))));
        let mut r = Reporter::from_config(&cfg).unwrap().unwrap();
        let report = r.report(FakeHost { fence: 0 }.gather().await, 1);
        // Past the dead one and the follower to two, which refuses this
        // host's certificate: two stays current.
        let round = r.deliver(&report).await;
        assert_eq!(
            (round.answered, round.outcome),
            (
                Some(2),
                Err(Failed::Refused("not that host's agent".into()))
            )
        );
        assert_eq!(r.current, 2);
        let round = r.deliver(&report).await;
        assert_eq!(
            (round.answered, round.outcome),
            (
                Some(2),
                Err(Failed::Refused("not that host's agent".into()))
            )
        );
        assert_eq!((one.count(), two.count()), (1, 2));
        // Nobody leads: every one is tried once, and the error names each.
        two.set_role(Role::Follower);
        let round = r.deliver(&report).await;
        assert_eq!(round.answered, None);
        let Err(Failed::TryNext(why)) = round.outcome else {
            panic!("{:?}", round.outcome)
        };
        for u in [&dead, &a, &b] {
            assert!(why.contains(&format!("{u}: ")), "{why}");
        }
        assert!(why.contains("not the leader"), "{why}");
        assert_eq!((one.count(), two.count()), (2, 3));
        assert_eq!(r.current, 2);
        // one leads: found past two and the dead one, round the list.
        one.set_role(Role::Leader);
        let round = r.deliver(&report).await;
        assert_eq!(round.answered, Some(1));
        assert_eq!(round.outcome.unwrap().fence, 9);
        assert_eq!(r.current, 1);
        assert_eq!((one.count(), two.count()), (3, 4));
        let _ = std::fs::remove_dir_all(&d);
    }
}
