//! Live migration driver: source side (`migrate` + progress) and
//! destination side (`migrate-incoming` on a deferred QEMU).

use crate::{QemuError, Qmp};
use duplex_core::agent_api::{MigrationProgress, MigrationStats, MigrationTuning};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Set explicitly on every migration: parameters persist in a QEMU
/// process, so a cap set for one attempt would otherwise silently apply to
/// the next. Bandwidth: QEMU 7.2's default. Downtime limit: QEMU's default
/// is 300 ms, and QEMU stops the VM as soon as it estimates the rest fits
/// in that, so the real pause wanders with the guest's dirtying pattern
/// (measured 5-37 ms on idle guests); 50 ms keeps it tighter for signalling
/// services at the price of a few more passes.
pub const DEFAULT_MAX_BANDWIDTH_MIB: u64 = 128;
pub const DEFAULT_DOWNTIME_LIMIT_MS: u64 = 50;

/// How the migration stream is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamTls {
    /// Cleartext: only to measure what TLS costs.
    Off,
    /// The destination: TLS with the x509 credentials in `dir` (QEMU's
    /// layout, see [`CREDS_FILES`]), taking the stream only from a client
    /// whose certificate's subject is `client_dn` (`CN=h1.agent.duplex`),
    /// or from any certificate of the CA if `None`.
    Server {
        dir: PathBuf,
        client_dn: Option<String>,
    },
    /// The source: TLS with the credentials in `dir`, the destination's
    /// certificate checked against `hostname` (its address).
    Client { dir: PathBuf, hostname: String },
}

/// Where QEMU's `tls-creds-x509` reads Diffie-Hellman parameters. Without
/// the file a server endpoint generates 2048-bit parameters at every
/// `object-add` (measured: about 0.4 s of a migration's preparation here).
pub const DH_PARAMS_FILE: &str = "dh-params.pem";
/// The standard group ffdhe2048 of RFC 7919, public and fixed (checked: a
/// 2048-bit safe prime with the RFC's leading and trailing digits), so no
/// host spends time making its own.
pub const FFDHE2048_PEM: &str = "\
-----BEGIN DH PARAMETERS-----\n\
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz\n\
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a\n\
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7\n\
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi\n\
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD\n\
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==\n\
-----END DH PARAMETERS-----\n\
";

/// The files QEMU's `tls-creds-x509` reads from its directory.
pub const CREDS_FILES: [&str; 5] = [
    "ca-cert.pem",
    "server-cert.pem",
    "server-key.pem",
    "client-cert.pem",
    "client-key.pem",
];
const TLS_ID: &str = "duplex-mig-tls";
const AUTHZ_ID: &str = "duplex-mig-authz";

/// Sets the stream's protection on one side, replacing whatever an earlier
/// attempt in this QEMU set.
pub async fn secure(qmp: &Qmp, tls: &StreamTls) -> Result<(), QemuError> {
    // Absent objects answer an error, which is what we want gone anyway.
    let _ = qmp
        .execute("migrate-set-parameters", Some(json!({"tls-creds": ""})))
        .await;
    let _ = qmp
        .execute("object-del", Some(json!({"id": AUTHZ_ID})))
        .await;
    let _ = qmp.execute("object-del", Some(json!({"id": TLS_ID}))).await;
    let creds = |dir: &PathBuf, endpoint: &str| {
        json!({"qom-type": "tls-creds-x509", "id": TLS_ID, "dir": dir,
               "endpoint": endpoint, "verify-peer": true})
    };
    match tls {
        StreamTls::Off => Ok(()),
        StreamTls::Server { dir, client_dn } => {
            qmp.execute("object-add", Some(creds(dir, "server")))
                .await?;
            let mut params = json!({"tls-creds": TLS_ID, "tls-authz": ""});
            if let Some(dn) = client_dn {
                qmp.execute(
                    "object-add",
                    Some(json!({"qom-type": "authz-simple", "id": AUTHZ_ID, "identity": dn})),
                )
                .await?;
                params["tls-authz"] = json!(AUTHZ_ID);
            }
            qmp.execute("migrate-set-parameters", Some(params)).await?;
            Ok(())
        }
        StreamTls::Client { dir, hostname } => {
            qmp.execute("object-add", Some(creds(dir, "client")))
                .await?;
            qmp.execute(
                "migrate-set-parameters",
                Some(json!({"tls-creds": TLS_ID, "tls-hostname": hostname})),
            )
            .await?;
            Ok(())
        }
    }
}

/// Capabilities and parameters of a migration (both sides). `disk`: the VM
/// has a root disk whose overlay goes along (QEMU 7.2's block migration,
/// incremental: only the overlay's blocks, the base is on both hosts).
pub async fn prepare(qmp: &Qmp, tuning: &MigrationTuning, disk: bool) -> Result<(), QemuError> {
    qmp.execute(
        "migrate-set-capabilities",
        Some(json!({"capabilities": [
            {"capability": "events", "state": true},
            {"capability": "auto-converge", "state": tuning.auto_converge},
            {"capability": "block", "state": disk},
        ]})),
    )
    .await?;
    qmp.execute(
        "migrate-set-parameters",
        Some(json!({"block-incremental": disk})),
    )
    .await?;
    let bw = tuning
        .max_bandwidth_mib
        .unwrap_or(DEFAULT_MAX_BANDWIDTH_MIB);
    let dl = tuning
        .downtime_limit_ms
        .unwrap_or(DEFAULT_DOWNTIME_LIMIT_MS);
    qmp.execute(
        "migrate-set-parameters",
        Some(json!({"max-bandwidth": bw.saturating_mul(1024 * 1024), "downtime-limit": dl})),
    )
    .await?;
    Ok(())
}

/// Destination: starts listening on `ip` (port chosen by the kernel),
/// protected by `tls`, and returns the URI the source must use.
pub async fn listen_incoming(qmp: &Qmp, ip: &str, tls: &StreamTls) -> Result<String, QemuError> {
    prepare(qmp, &MigrationTuning::default(), false).await?;
    secure(qmp, tls).await?;
    qmp.execute(
        "migrate-incoming",
        Some(json!({"uri": format!("tcp:{ip}:0")})),
    )
    .await?;
    let q = qmp.execute("query-migrate", None).await?;
    let port = q["socket-address"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(|s| {
            s["port"]
                .as_str()
                .map(str::to_string)
                .or_else(|| s["port"].as_u64().map(|p| p.to_string()))
        })
        .ok_or_else(|| QemuError::Protocol(format!("destination did not report its port: {q}")))?;
    Ok(format!("tcp:{ip}:{port}"))
}

fn progress_of(q: &Value, started: Instant) -> MigrationProgress {
    let ram = &q["ram"];
    MigrationProgress {
        elapsed_ms: started.elapsed().as_millis() as u64,
        transferred_bytes: ram["transferred"].as_u64().unwrap_or(0),
        remaining_bytes: ram["remaining"].as_u64().unwrap_or(0),
        total_bytes: ram["total"].as_u64().unwrap_or(0),
        passes: ram["dirty-sync-count"].as_u64().unwrap_or(0),
        expected_downtime_ms: q["expected-downtime"].as_u64(),
        cpu_throttle_pct: q["cpu-throttle-percentage"].as_u64().unwrap_or(0),
    }
}

/// Source: migrates to `uri`, reporting progress every `every`, and returns
/// QEMU's final statistics. On failure the source VM is resumed if QEMU left
/// it paused, so it keeps running here.
pub async fn migrate(
    qmp: &Qmp,
    uri: &str,
    tuning: &MigrationTuning,
    tls: &StreamTls,
    disk: bool,
    every: Duration,
    mut on_progress: impl FnMut(&MigrationProgress),
) -> Result<MigrationStats, QemuError> {
    let started = Instant::now();
    prepare(qmp, tuning, disk).await?;
    secure(qmp, tls).await?;
    let params = qmp.execute("query-migrate-parameters", None).await?;
    let encrypted = params["tls-creds"].as_str().is_some_and(|c| !c.is_empty());
    let mut max_throttle = 0;
    let mut events = qmp.events();
    qmp.execute("migrate", Some(json!({"uri": uri}))).await?;
    let mut tick = tokio::time::interval(every);
    // A QEMU that was itself a migration destination reports that incoming
    // migration's `completed` until this one leaves `none`: a terminal
    // status counts only once this migration was seen under way.
    let mut under_way = false;
    loop {
        tokio::select! {
            ev = events.recv() => {
                match ev {
                    Ok(e) if e.name == "MIGRATION" => {
                        let s = e.data["status"].as_str().unwrap_or("");
                        if !matches!(s, "completed" | "failed" | "cancelled") {
                            under_way = true;
                            continue;
                        }
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return Err(QemuError::Disconnected),
                }
            }
            _ = tick.tick() => {}
        }
        let q = qmp.execute("query-migrate", None).await?;
        let status = q["status"].as_str().unwrap_or("none");
        if !matches!(status, "none" | "completed" | "failed" | "cancelled") {
            under_way = true;
        }
        if !under_way {
            continue;
        }
        match status {
            "completed" => {
                let q = final_stats(qmp, q).await?;
                let p = progress_of(&q, started);
                on_progress(&p);
                return Ok(MigrationStats {
                    total_ms: q["total-time"].as_u64().unwrap_or(0),
                    downtime_ms: q["downtime"].as_u64().unwrap_or(0),
                    setup_ms: q["setup-time"].as_u64().unwrap_or(0),
                    // RAM, plus the root disk's blocks under block migration.
                    transferred_bytes: p.transferred_bytes
                        + q["disk"]["transferred"].as_u64().unwrap_or(0),
                    passes: p.passes,
                    orchestrated_ms: started.elapsed().as_millis() as u64,
                    max_cpu_throttle_pct: max_throttle.max(p.cpu_throttle_pct),
                    encrypted,
                });
            }
            s @ ("failed" | "cancelled") => {
                let why = q["error-desc"].as_str().unwrap_or(s).to_string();
                resume_if_paused(qmp).await;
                return Err(QemuError::Migration(why));
            }
            _ => {
                let p = progress_of(&q, started);
                max_throttle = max_throttle.max(p.cpu_throttle_pct);
                on_progress(&p);
            }
        }
    }
}

/// QEMU 7.2 sets `completed` (and emits the event) before it computes
/// `total-time` and `downtime`, which read 0 until then: ask again briefly.
async fn final_stats(qmp: &Qmp, mut q: Value) -> Result<Value, QemuError> {
    for _ in 0..100 {
        if q["total-time"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        q = qmp.execute("query-migrate", None).await?;
    }
    Ok(q)
}

/// Cancels a running outgoing migration and makes sure the VM runs.
pub async fn cancel(qmp: &Qmp) {
    let _ = qmp.execute("migrate_cancel", None).await;
    resume_if_paused(qmp).await;
}

async fn resume_if_paused(qmp: &Qmp) {
    if let Ok(state) = qmp.run_state().await {
        if matches!(state.as_str(), "paused" | "postmigrate" | "finish-migrate") {
            if let Err(e) = qmp.execute("cont", None).await {
                tracing::error!(error = %e, "could not resume the source VM after a failed migration");
            }
        }
    }
}
