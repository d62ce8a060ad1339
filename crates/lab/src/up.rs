//! `up`: builds the lab, starts one agent per host, waits for them.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::agent;
use crate::down::teardown;
use crate::error::LabError;
use crate::ip::require_root;
use crate::lock::{self, LabLock};
use crate::netns;
use crate::plan::{self, HostPlan, LabPlan};
use crate::state::{AgentState, LabPhase, LabState};
use crate::topology;

/// How long agents get to answer `/v1/host`.
const AGENT_WAIT: Duration = Duration::from_secs(15);
const AGENT_POLL: Duration = Duration::from_millis(100);

/// How `up` starts the agents.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The `duplex` binary run as `duplex agent …` in every host namespace.
    pub duplex_bin: PathBuf,
    /// Passed to the agents as `--image-dir`.
    pub image_dir: PathBuf,
    /// Appended to every agent's command line.
    pub extra_agent_args: Vec<String>,
    /// The controller's store.
    pub store: crate::controller::LabStore,
    /// Racks the hosts are spread over for placement (0 or 1: one rack).
    pub racks: u8,
    /// Controller processes (1: no standby; more need the etcd store).
    pub controllers: u8,
    /// Give the controller the lab's power switch as its fence device;
    /// without it, a gone host is fenced by its agent's self-fence lease.
    pub power_fence: bool,
    /// What switches the lab: the kernel's bridge, or the Duplex switch
    /// (S2 embodiment B; the agents get `--output-switch`).
    pub switch: crate::switch::SwitchKind,
}

/// Takes lab `plan` up: topology, state directory, one agent per host, and
/// waits until every agent answers `GET /v1/host`. Refuses with
/// [`LabError::AlreadyUp`] if it is up; cleans leftovers of a crashed run
/// first. On failure removes everything it created.
pub async fn up(plan: &LabPlan, opts: UpOptions) -> Result<LabState, LabError> {
    plan.check_switch(opts.switch)?;
    require_root()?;
    let duplex_bin = absolute_existing(&opts.duplex_bin)?;
    let image_dir = absolute(&opts.image_dir)?;

    let p = plan.clone();
    let lock = blocking(move || prepare(&p)).await?;

    let mut hosts: Vec<(HostPlan, Child)> = Vec::new();
    match start(plan, &opts, &duplex_bin, &image_dir, &mut hosts).await {
        Ok(state) => {
            tracing::info!(
                "lab `{}` is up: {} host(s) in {} site(s) on {}, management address {} on {}",
                state.lab,
                state.hosts,
                state.site_count(),
                state.subnet,
                state.mgmt_ip,
                state.mgmt_if
            );
            // The agents are daemons: dropping their `Child`s neither kills nor waits.
            drop(hosts);
            drop(lock);
            Ok(state)
        }
        Err(e) => {
            let children = hosts.into_iter().map(|(_, c)| c).collect();
            Err(fail(plan, children, e, lock).await)
        }
    }
}

/// Everything after `prepare`; started agents are pushed to `hosts` as they go.
async fn start(
    plan: &LabPlan,
    opts: &UpOptions,
    duplex_bin: &Path,
    image_dir: &Path,
    hosts: &mut Vec<(HostPlan, Child)>,
) -> Result<LabState, LabError> {
    let (p, bin, img, kind) = (
        plan.clone(),
        duplex_bin.to_path_buf(),
        image_dir.to_path_buf(),
        opts.switch,
    );
    let mut state = blocking(move || create(&p, &bin, &img, kind)).await?;

    let ctl = crate::controller::start(plan, duplex_bin, opts).await?;
    state.controller = Some(ctl.clone());
    state.write()?;
    for n in 1..u16::from(opts.controllers.max(1)) {
        let sb = crate::controller::start_standby(plan, duplex_bin, &ctl, opts, n).await?;
        state.standby_controllers.push(sb);
        state.write()?;
    }
    let mut all = vec![ctl.clone()];
    all.extend(state.standby_controllers.iter().cloned());
    let mut agent_args = crate::controller::agent_args(&all);
    if state.switch.is_some() {
        agent_args.extend(crate::switch::agent_args(plan));
    }
    agent_args.extend(opts.extra_agent_args.iter().cloned());
    state.agent_args = agent_args.clone();

    for h in plan.host_plans() {
        let child = agent::spawn(plan.lab(), &h, duplex_bin, image_dir, &agent_args)?;
        state.agents.push(AgentState {
            n: h.n,
            name: h.name.clone(),
            ns: h.ns.clone(),
            ip: h.ip,
            url: h.url.clone(),
            pid: child.id() as i32,
            data_dir: h.data_dir.clone(),
            log: h.data_dir.join("agent.log"),
            faults: Default::default(),
            site: h.site.map(|s| s.name().to_string()),
        });
        hosts.push((h, child));
    }
    state.write()?;

    wait_agents(plan, hosts).await?;
    crate::controller::wait_registered(plan, &ctl).await?;

    state.phase = LabPhase::Up;
    state.write()?;
    Ok(state)
}

/// Under the lock: refuse if up, clean leftovers, check the subnet.
fn prepare(plan: &LabPlan) -> Result<LabLock, LabError> {
    let lock = lock::lock()?;
    let lab = plan.lab();
    let state = match LabState::read(lab) {
        Ok(s) => s,
        Err(e @ LabError::BadState { .. }) => {
            tracing::warn!("{e}");
            None
        }
        Err(e) => return Err(e),
    };
    let namespaces = netns::list_with_prefix(&plan::ns_prefix(lab))?;
    let mgmt = netns::root_link_exists(&plan::mgmt_if(lab))?;
    let dir = plan::state_dir(lab).exists();

    if let Some(s) = &state {
        if s.phase == LabPhase::Up && s.namespaces().iter().any(|n| namespaces.contains(n)) {
            return Err(LabError::AlreadyUp {
                lab: lab.to_string(),
                hosts: s.hosts,
            });
        }
    }
    if !namespaces.is_empty() || mgmt || dir {
        let mut what = namespaces.clone();
        if mgmt {
            what.push(format!("link {}", plan::mgmt_if(lab)));
        }
        if dir {
            what.push(plan::state_dir(lab).display().to_string());
        }
        tracing::warn!(
            "lab `{lab}` has leftovers of an incomplete run ({}); removing them first",
            what.join(", ")
        );
        teardown(lab)?;
    }
    topology::check_subnet_free(plan)?;
    Ok(lock)
}

/// Builds the topology and the state directory; writes a `Starting` state.
fn create(
    plan: &LabPlan,
    duplex_bin: &Path,
    image_dir: &Path,
    kind: crate::switch::SwitchKind,
) -> Result<LabState, LabError> {
    tracing::info!(
        "taking lab `{}` up: {} host(s) in {} site(s) on {}",
        plan.lab(),
        plan.hosts(),
        plan.sites(),
        plan.subnet()
    );
    let wan_via = topology::build(plan, kind)?;
    let dir = plan.state_dir();
    tracing::info!("creating {}", dir.display());
    for h in plan.host_plans() {
        std::fs::create_dir_all(&h.data_dir)
            .map_err(|e| LabError::io("cannot create", &h.data_dir, e))?;
    }
    crate::pki::make(plan)?;
    let mut state = LabState::new(plan, duplex_bin, image_dir);
    if let Some(via) = wan_via {
        state.wan = Some(crate::wan::start(plan, via, duplex_bin)?);
    }
    if kind == crate::switch::SwitchKind::Duplex {
        state.switch = Some(crate::switch::start(plan, duplex_bin)?);
    }
    state.write()?;
    Ok(state)
}

/// Polls every agent until it answers 2xx, one exits, or time runs out.
async fn wait_agents(plan: &LabPlan, hosts: &mut [(HostPlan, Child)]) -> Result<(), LabError> {
    let mgmt = plan.mgmt_if();
    for (h, _) in hosts.iter() {
        let (ip, dev) = (h.ip, mgmt.clone());
        blocking(move || netns::ensure_routed_via(ip, &dev)).await?;
    }
    let client = agent::http_client(plan.lab())?;
    tracing::info!(
        "waiting up to {} s for {} agent(s) to answer /v1/host",
        AGENT_WAIT.as_secs(),
        hosts.len()
    );
    let start = Instant::now();
    let mut pending: Vec<usize> = (0..hosts.len()).collect();
    let mut last: Vec<String> = vec!["no answer yet".to_string(); hosts.len()];
    loop {
        for &i in &pending {
            let (h, child) = &mut hosts[i];
            let exited = child
                .try_wait()
                .map_err(|e| LabError::io("cannot wait for", &h.data_dir, e))?;
            if let Some(status) = exited {
                let log = h.data_dir.join("agent.log");
                return Err(LabError::AgentExited {
                    host: h.name.clone(),
                    status: status.to_string(),
                    log_tail: agent::log_tail(&log),
                });
            }
        }

        let mut probes = tokio::task::JoinSet::new();
        for &i in &pending {
            let (client, url) = (client.clone(), hosts[i].0.url.clone());
            probes.spawn(async move { (i, agent::get_host(&client, &url).await) });
        }
        while let Some(joined) = probes.join_next().await {
            let (i, answer) = joined.map_err(|e| LabError::Task(e.to_string()))?;
            match answer {
                Ok(a) if (200..300).contains(&a.status) => {
                    tracing::info!(
                        "agent {} answers at {} after {:.1} s",
                        hosts[i].0.name,
                        hosts[i].0.url,
                        start.elapsed().as_secs_f64()
                    );
                    pending.retain(|&j| j != i);
                }
                Ok(a) => last[i] = format!("HTTP {}", a.status),
                Err(e) => last[i] = e,
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= AGENT_WAIT {
            pending.sort_unstable();
            let i = pending[0];
            let h = &hosts[i].0;
            let log = h.data_dir.join("agent.log");
            return Err(LabError::AgentTimeout {
                host: h.name.clone(),
                url: h.url.clone(),
                secs: AGENT_WAIT.as_secs(),
                last: last[i].clone(),
                log_tail: agent::log_tail(&log),
            });
        }
        tokio::time::sleep(AGENT_POLL).await;
    }
}

/// Tears down after a failed `up` and returns the original error.
async fn fail(plan: &LabPlan, children: Vec<Child>, err: LabError, lock: LabLock) -> LabError {
    tracing::warn!(
        "taking lab `{}` up failed; removing what was created",
        plan.lab()
    );
    let lab = plan.lab().to_string();
    let res = blocking(move || {
        let r = teardown(&lab);
        // Reap our own agent processes (teardown has signalled them).
        for mut c in children {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        drop(lock);
        r
    })
    .await;
    if let Err(e) = res {
        tracing::warn!(
            "cleanup after the failed `up` was incomplete: {e}; `duplex lab down` retries it"
        );
    }
    err
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LabError> + Send + 'static,
) -> Result<T, LabError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LabError::Task(e.to_string()))?
}

fn absolute(p: &Path) -> Result<PathBuf, LabError> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(|e| LabError::io("cannot read", ".", e))?;
    // `components` drops `.` segments.
    Ok(cwd.join(p).components().collect())
}

fn absolute_existing(p: &Path) -> Result<PathBuf, LabError> {
    std::fs::canonicalize(p).map_err(|e| LabError::io("cannot find the duplex binary", p, e))
}
