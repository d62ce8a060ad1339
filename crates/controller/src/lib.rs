//! The controller ("VM control device"): owns the desired state in a store
//! (embedded file or etcd), leads through the store's lease with a fencing
//! token, keeps the hosts converged (`reconciler`), runs pair workflows
//! (`pairs`) and serves the HTTP API (`api`).

pub mod api;
pub mod client;
pub mod config;
mod console;
pub mod ctl;
mod drain;
mod epochs;
pub mod error;
mod events;
pub mod fence_device;
mod host_watch;
mod in_flight;
mod leader;
pub mod lifecycle;
pub mod listing;
pub mod metrics;
mod moves;
mod observed;
mod office;
mod ops;
pub mod pair_exec;
mod pair_failover;
mod pair_move;
mod pair_recover;
mod pair_repair;
mod pairs;
mod placement;
pub mod reconciler;
pub mod relief;
pub mod repo;
mod restart_exec;
pub mod restart_policy;
mod restart_unit;
pub mod rules;
mod service_data;
mod site;
mod site_policy;
mod site_settle;
mod vm_heal;

pub use config::{ControllerConfig, StoreChoice};
pub use error::ControllerError;

use crate::ctl::Ctl;
use crate::events::Events;
use crate::repo::Repo;
use duplex_store::Store;
use std::sync::Arc;

/// File name of the embedded store in the data directory.
pub const STORE_FILE: &str = "state.redb";

pub async fn open_store(cfg: &ControllerConfig) -> Result<Arc<dyn Store>, ControllerError> {
    Ok(match &cfg.store {
        StoreChoice::Embedded => {
            let path = cfg.data_dir.join(STORE_FILE);
            Arc::new(duplex_store::EmbeddedStore::open(&path).await?)
        }
        StoreChoice::Etcd { endpoints } => {
            let opts = duplex_store::EtcdOptions {
                connect_timeout: cfg.store_connect_timeout,
                candidate_id: Some(cfg.id.clone()),
                tls: Some(etcd_tls(&cfg.tls)?),
                ..Default::default()
            };
            Arc::new(duplex_store::EtcdStore::connect(endpoints, opts).await?)
        }
    })
}

/// The controller's side of mutual TLS to etcd, from its bundle: etcd
/// must show the cluster store's certificate (`duplex pki issue store`),
/// and takes this certificate's name as its user.
pub fn etcd_tls(bundle: &duplex_tls::Bundle) -> Result<duplex_store::EtcdTls, ControllerError> {
    let pem = bundle.pem().map_err(ControllerError::Tls)?;
    Ok(duplex_store::EtcdTls {
        ca_pem: pem.ca,
        cert_pem: pem.cert,
        key_pem: pem.key,
        server_name: duplex_core::identity::Identity::Store.dns_name(),
    })
}

/// How to start a cluster store (etcd) the controller can use: etcd
/// serves with the `store` bundle, takes client certificates of the same
/// CA, and lets only the controller's certificate read or write (it
/// sets that up, as `admin`, on a new data directory).
pub fn etcd_secure(
    store: &duplex_tls::Bundle,
    controller: &duplex_tls::Bundle,
) -> Result<duplex_store::etcd_server::Secure, ControllerError> {
    use duplex_tls::bundle::{CA_FILE, CERT_FILE, CRL_FILE, KEY_FILE};
    store.load().map_err(ControllerError::Tls)?;
    let crl = store.path(CRL_FILE);
    Ok(duplex_store::etcd_server::Secure {
        server: duplex_store::etcd_server::ServerTls {
            cert: store.path(CERT_FILE),
            key: store.path(KEY_FILE),
            ca: store.path(CA_FILE),
            crl: crl.exists().then_some(crl),
        },
        admin: etcd_tls(controller)?,
        users: vec![duplex_core::identity::Identity::Controller.dns_name()],
    })
}

/// Runs the controller until it is stopped (Ctrl-C / SIGTERM) or deposed.
/// Reads and checks a topology file (loops, unknown switches, bad capacities
/// are refused with the reason).
pub fn load_topology(
    path: &std::path::Path,
) -> Result<duplex_core::placement::TopologyConfig, ControllerError> {
    let err = |reason: String| ControllerError::Topology {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let cfg: duplex_core::placement::TopologyConfig =
        serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    duplex_core::placement::Topology::from_config(&cfg).map_err(|e| err(e.to_string()))?;
    Ok(cfg)
}

pub async fn run(cfg: ControllerConfig) -> Result<(), ControllerError> {
    let topology = match &cfg.topology {
        Some(p) => Some(load_topology(p)?),
        None => None,
    };
    // The TLS bundle first: a configuration error is told before any wait.
    let tls = Arc::new(duplex_tls::serve::acceptor(cfg.tls.clone()).map_err(ControllerError::Tls)?);
    let clients =
        duplex_tls::client::Clients::new(cfg.tls.clone(), duplex_agent_client::limits::shape)
            .map_err(ControllerError::Tls)?;
    let store = open_store(&cfg).await?;
    let repo = Repo::new(store);
    eprintln!(
        "duplex controller {}: store {}; TLS bundle {}",
        cfg.id,
        repo.store.describe(),
        cfg.tls.dir.display()
    );
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ControllerError::Listen {
            addr: cfg.listen.to_string(),
            source,
        })?;
    let extdisk = match &cfg.external_disk {
        Some(spec) => duplex_extdisk::ExternalDisk::open(spec, |k| std::env::var(k).ok()),
        None => {
            if matches!(cfg.store, config::StoreChoice::Etcd { .. }) {
                tracing::warn!(
                    "the external disk (S3's restart counters) is this controller's own directory; \
                     controllers sharing an etcd should share it too (--external-disk URL or a shared directory)"
                );
            }
            duplex_extdisk::ExternalDisk::local(&cfg.data_dir.join("external-disk"))
        }
    }?;
    let connector = Arc::new(duplex_agent_client::HttpConnector::new(Arc::new(clients)));
    let ctl = assemble(cfg, repo, connector, (topology, extdisk));
    tracing::info!(addr = %ctl.cfg.listen, id = %ctl.cfg.id, "controller API listening");
    let app = api::router(ctl.clone());
    let server = duplex_tls::serve::serve(listener, tls, app, shutdown_signal());
    let _loops = start_loops(&ctl);
    tokio::select! {
        r = server => r.map_err(ControllerError::Serve),
        r = leader::hold_office(ctl.clone()) => r,
    }
}

/// A controller's shared state over `repo`, ordering agents through
/// `connector` (HTTP; simulated hosts in the simulation).
pub fn assemble(
    cfg: ControllerConfig,
    repo: Repo,
    connector: Arc<dyn duplex_agent_client::Connector>,
    (topology, extdisk): (
        Option<duplex_core::placement::TopologyConfig>,
        duplex_extdisk::ExternalDisk,
    ),
) -> Arc<Ctl> {
    Arc::new(Ctl {
        extdisk,
        restarts: Default::default(),
        restore_due: Default::default(),
        connector,
        events: Events::new(repo.clone()),
        repo,
        observed: Default::default(),
        office: Default::default(),
        metrics: Default::default(),
        sessions: Default::default(),
        busy: Default::default(),
        creating: Default::default(),
        moved: Default::default(),
        ops_running: Default::default(),
        reported_unmanaged: Default::default(),
        kick: Default::default(),
        urgent: Default::default(),
        fence_device: cfg
            .fence_command
            .as_deref()
            .and_then(fence_device::CommandDevice::parse)
            .map(|d| Arc::new(d) as Arc<dyn fence_device::FenceDevice>),
        topology,
        traffic: Default::default(),
        usage: Default::default(),
        migrations: Default::default(),
        relief: Default::default(),
        cfg,
    })
}

/// Starts the loops a controller runs whether it leads or not (each acts
/// only while leading): reconciliation, and pair recovery and repair.
/// Aborting the handles stops them.
pub fn start_loops(ctl: &Arc<Ctl>) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(reconciler::run(ctl.clone())),
        tokio::spawn(host_watch::run(ctl.clone())),
        tokio::spawn(pair_repair::run(ctl.clone())),
        tokio::spawn(restart_unit::run(ctl.clone())),
        tokio::spawn(service_data::run(ctl.clone())),
        tokio::spawn(rules::run(ctl.clone())),
        tokio::spawn(site_policy::run(ctl.clone())),
        tokio::spawn(relief::run(ctl.clone())),
    ]
}

/// Campaigns for the lease and leads while it holds (see `leader`).
pub async fn hold_office(ctl: Arc<Ctl>) -> Result<(), ControllerError> {
    leader::hold_office(ctl).await
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
}
