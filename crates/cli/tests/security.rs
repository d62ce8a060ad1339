//! The security test suite: one test per attack on the control plane, each
//! against real `duplex controller` and `duplex agent` processes on
//! loopback over mutual TLS. Each attack must be refused with an error
//! that says why, and must change nothing (checked after each). No VM
//! boots: every attack is on the control plane.

mod procs;

use duplex_core::identity::{Identity, Scope};
use duplex_store::etcd_server::free_port;
use duplex_tls::test_pki::TestPki;
use procs::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A controller and host h1's agent, registered, and the PKI they use.
struct Cluster {
    _dir: tempfile::TempDir,
    pki: TestPki,
    ctl: String,
    agent: String,
    _procs: Vec<Proc>,
}

impl Cluster {
    async fn up() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let pki = pki(dir.path());
        let (cp, ap) = (free_port().unwrap(), free_port().unwrap());
        let ctl = format!("https://127.0.0.1:{cp}");
        let c = controller(
            &dir.path().join("ctl"),
            cp,
            &Backend::Embedded,
            2000,
            "c1",
            &pki,
        );
        wait_leader(&ctl).await;
        let a = agent(dir.path(), "h1", ap, std::slice::from_ref(&ctl), &pki);
        let c = Cluster {
            pki,
            ctl,
            agent: format!("https://127.0.0.1:{ap}"),
            _procs: vec![c, a],
            _dir: dir,
        };
        wait_host_ready(&c.ctl, &c.who(Scope::Read), "h1").await;
        c
    }

    /// An operator's bundle with `scope`.
    fn who(&self, scope: Scope) -> PathBuf {
        self.pki.operator(scope).unwrap().dir
    }

    fn as_(&self, id: &Identity) -> PathBuf {
        self.pki.bundle(id).unwrap().dir
    }

    /// What must not change: the agent's fence and VMs, the controller's
    /// hosts and VMs, as a reader sees them.
    async fn snapshot(&self) -> Value {
        let r = self.who(Scope::Read);
        let get = |url: String| {
            let r = r.clone();
            async move {
                let (s, v) = call("GET", &url, Some(&r), None).await;
                assert_eq!(s, 200, "{url}: {v}");
                v
            }
        };
        let mut hosts = get(format!("{}/v1/hosts", self.ctl)).await;
        for h in hosts.as_array_mut().unwrap() {
            // Changes with every report.
            h.as_object_mut()
                .unwrap()
                .retain(|k, _| matches!(k.as_str(), "name" | "url" | "state" | "capacity"));
        }
        json!({
            "fence": get(format!("{}/v1/fence", self.agent)).await,
            "agent_vms": get(format!("{}/v1/vms", self.agent)).await,
            "hosts": hosts,
            "vms": get(format!("{}/v1/vms", self.ctl)).await,
            "pairs": get(format!("{}/v1/pairs", self.ctl)).await,
        })
    }
}

fn assert_refused(got: (u16, Value), status: u16, code_: &str, says: &str) {
    let (s, v) = got;
    assert_eq!((s, code(&v).as_str()), (status, code_), "{v}");
    assert!(
        msg(&v).contains(says),
        "the refusal should say {says:?}: {v}"
    );
}

const VM: &str = r#"{"name":"evil","ip":"10.9.0.9"}"#;

/// The issue's first finding: anyone on the management network paused the
/// ACT with one request. Without a certificate every route but the
/// controller's health check is refused; plain HTTP is not spoken at all.
#[tokio::test(flavor = "multi_thread")]
async fn no_certificate_no_orders() {
    let c = Cluster::up().await;
    let before = c.snapshot().await;
    for (m, url, body) in [
        ("POST", format!("{}/v1/vms/sa/pause", c.agent), None),
        ("POST", format!("{}/v1/vms", c.agent), Some(VM)),
        ("DELETE", format!("{}/v1/vms/sa", c.agent), None),
        ("POST", format!("{}/v1/fence", c.agent), None),
        ("GET", format!("{}/v1/host", c.agent), None),
        ("POST", format!("{}/v1/incoming", c.agent), Some("{}")),
        ("GET", format!("{}/v1/hosts", c.ctl), None),
        ("POST", format!("{}/v1/hosts/h1/drain", c.ctl), Some("{}")),
        ("GET", format!("{}/metrics", c.ctl), None),
    ] {
        let got = call(m, &url, None, body).await;
        assert_refused(got, 401, "no_identity", "no client certificate");
    }
    let plain = c.agent.replace("https://", "http://");
    let (s, v) = call("POST", &format!("{plain}/v1/vms/sa/pause"), None, None).await;
    assert_eq!(s, 0, "plain HTTP must get no answer: {v}");
    assert_eq!(c.snapshot().await, before);
}

/// Operators act through the controller: on an agent, a reader may look
/// and an operate-scope operator may not order; on the controller a
/// reader may not change anything.
#[tokio::test(flavor = "multi_thread")]
async fn operators_are_held_to_their_scope() {
    let c = Cluster::up().await;
    let before = c.snapshot().await;
    let (read, operate) = (c.who(Scope::Read), c.who(Scope::Operate));
    let (s, _) = call("GET", &format!("{}/v1/host", c.agent), Some(&read), None).await;
    assert_eq!(s, 200);
    let vm = format!(r#"{{"spec":{VM}}}"#);
    for who in [&read, &operate] {
        let got = call("POST", &format!("{}/v1/vms", c.agent), Some(who), Some(VM)).await;
        assert_refused(got, 403, "forbidden", "operate through the controller");
        let got = call(
            "POST",
            &format!("{}/v1/vms/x/pause", c.agent),
            Some(who),
            None,
        )
        .await;
        assert_refused(got, 403, "forbidden", "may not give an agent orders");
    }
    for (m, p, body) in [
        ("POST", "/v1/vms", Some(vm.as_str())),
        ("DELETE", "/v1/vms/x", None),
        ("POST", "/v1/hosts/h1/drain", Some("{}")),
        (
            "POST",
            "/v1/hosts/h1/state",
            Some(r#"{"state":"maintenance"}"#),
        ),
    ] {
        let got = call(m, &format!("{}{p}", c.ctl), Some(&read), body).await;
        assert_refused(got, 403, "forbidden", "scope read");
    }
    assert_eq!(c.snapshot().await, before);
}

/// An agent speaks for its own host only: it cannot report as another
/// host (and so move that host's address), use the operators' API, or
/// give another agent orders.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_speaks_only_for_its_own_host() {
    let c = Cluster::up().await;
    let before = c.snapshot().await;
    let h2 = c.as_(&Identity::agent("h2").unwrap());
    let (_, info) = call(
        "GET",
        &format!("{}/v1/host", c.agent),
        Some(&c.who(Scope::Read)),
        None,
    )
    .await;
    let forged = json!({
        "host": info, "url": "https://10.66.6.6:7070",
        "capacity": {"vcpus": 64, "memory_mib": 1_000_000},
        "vms": [], "traffic": [], "fence": 0, "seq": 1,
    })
    .to_string();
    let got = call(
        "POST",
        &format!("{}/v1/agents/h1/heartbeat", c.ctl),
        Some(&h2),
        Some(&forged),
    )
    .await;
    assert_refused(
        got,
        403,
        "forbidden",
        "only that host's agent reports for it",
    );
    let got = call("GET", &format!("{}/v1/hosts", c.ctl), Some(&h2), None).await;
    assert_refused(got, 403, "forbidden", "operators' certificates do");
    for (m, p) in [("POST", "/v1/vms/x/pause"), ("DELETE", "/v1/vms/x")] {
        let got = call(m, &format!("{}{p}", c.agent), Some(&h2), None).await;
        assert_refused(got, 403, "forbidden", "agents only send VMs to each other");
    }
    // Even the controller's own certificate is not an operator's.
    let ctl_cert = c.as_(&Identity::Controller);
    let got = call("GET", &format!("{}/v1/hosts", c.ctl), Some(&ctl_cert), None).await;
    assert_refused(got, 403, "forbidden", "operators' certificates do");
    assert_eq!(c.snapshot().await, before);
}

/// A forged `duplex-fence: 18446744073709551615` used to be persisted and
/// lock the real controller out for good. Only the controller raises an
/// agent's fence now, and it keeps obeying the controller after the try.
#[tokio::test(flavor = "multi_thread")]
async fn a_forged_fence_cannot_lock_the_controller_out() {
    let c = Cluster::up().await;
    let before = c.snapshot().await;
    let forged = u64::MAX.to_string();
    let tries = [
        (
            c.who(Scope::Admin),
            "/v1/fence",
            "only the controller raises it",
        ),
        (
            c.as_(&Identity::agent("h2").unwrap()),
            "/v1/incoming/x/abort",
            "only the controller raises it",
        ),
    ];
    for (who, path, says) in tries {
        let r = http(Some(&who))
            .post(format!("{}{path}", c.agent))
            .header("duplex-fence", &forged)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert_refused((status, v), 403, "forbidden", says);
    }
    assert_eq!(c.snapshot().await, before);
    // The controller still gives orders: a VM placed on h1 is created
    // there (the agent refuses its unknown image, but it was asked).
    let vm = r#"{"spec":{"name":"probe","ip":"10.9.0.5","image":"nosuch"},"host":"h1"}"#;
    let op = c.who(Scope::Operate);
    let (s, v) = call("POST", &format!("{}/v1/vms", c.ctl), Some(&op), Some(vm)).await;
    assert_eq!(s, 201, "{v}");
    wait_for(
        "the controller's order reached h1",
        Duration::from_secs(30),
        || async {
            let (_, evs) = call(
                "GET",
                &format!("{}/v1/events?limit=1000", c.ctl),
                Some(&op),
                None,
            )
            .await;
            evs.as_array().unwrap().iter().any(|e| {
                e["message"].as_str().unwrap_or("").contains("probe")
                    && e["message"].as_str().unwrap_or("").contains("nosuch")
            })
        },
    )
    .await;
}

/// Certificates the cluster must not accept: another CA's, an expired
/// one, one revoked with `duplex pki revoke`, and the old one after
/// `duplex pki rotate`.
#[tokio::test(flavor = "multi_thread")]
async fn bad_certificates_are_refused() {
    let c = Cluster::up().await;
    let before = c.snapshot().await;
    let hosts = format!("{}/v1/hosts", c.ctl);
    let other_dir = tempfile::tempdir().unwrap();
    let other = TestPki::new(other_dir.path()).unwrap();
    // Another CA's operator (trusting our CA, so only the server decides).
    let foreign = client_of(&c.pki, &other.operator(Scope::Admin).unwrap().dir);
    let e = foreign.get(&hosts).send().await.unwrap_err();
    assert!(chain(&e).contains("UnknownCA"), "{}", chain(&e));
    // Expired.
    let old = c
        .pki
        .expired(&Identity::operator("old", Scope::Admin).unwrap())
        .unwrap();
    let e = client_of(&c.pki, &old.dir)
        .get(&hosts)
        .send()
        .await
        .unwrap_err();
    assert!(chain(&e).contains("CertificateExpired"), "{}", chain(&e));
    // Revoked with the CLI: refused once the controller reloads its CRL.
    let (s, _) = call("GET", &hosts, Some(&c.who(Scope::Read)), None).await;
    assert_eq!(s, 200);
    let pki_dir = c.pki.dir.to_str().unwrap().to_string();
    cli(&[
        "pki",
        "--dir",
        &pki_dir,
        "revoke",
        "tester.read.operator.duplex",
    ]);
    let read = c.who(Scope::Read);
    wait_for(
        "the revoked reader refused",
        Duration::from_secs(10),
        || async { call("GET", &hosts, Some(&read), None).await.0 == 0 },
    )
    .await;
    // Rotated with the CLI: the new certificate works, a copy of the old
    // one is refused.
    let op = c.who(Scope::Operate);
    let kept = other_dir.path().join("kept");
    copy_dir(&op, &kept);
    cli(&[
        "pki",
        "--dir",
        &pki_dir,
        "rotate",
        "tester.operate.operator.duplex",
    ]);
    wait_for(
        "the old operator certificate refused",
        Duration::from_secs(10),
        || async { client_of(&c.pki, &kept).get(&hosts).send().await.is_err() },
    )
    .await;
    let (s, v) = call("GET", &hosts, Some(&op), None).await;
    assert_eq!(s, 200, "the rotated certificate: {v}");
    assert_eq!(c.snapshot_as(&op).await, before);
}

/// Bodies over a route's limit are refused before they are read whole.
#[tokio::test(flavor = "multi_thread")]
async fn oversized_bodies_are_refused() {
    let c = Cluster::up().await;
    let before = c.snapshot().await;
    let h1 = c.as_(&Identity::agent("h1").unwrap());
    // Just over each limit: the server answers 413 once the limit is
    // passed and closes; a body much larger would still be on its way,
    // and the client would see the reset instead of the answer.
    let over = |limit: usize| format!(r#"{{"pad":"{}"}}"#, "x".repeat(limit + 16 * 1024));
    let got = call(
        "POST",
        &format!("{}/v1/agents/h1/heartbeat", c.ctl),
        Some(&h1),
        Some(&over(duplex_controller::api::HEARTBEAT_BODY_LIMIT)),
    )
    .await;
    assert_refused(got, 413, "too_large", "larger than");
    let op = c.who(Scope::Operate);
    let got = call(
        "POST",
        &format!("{}/v1/vms", c.ctl),
        Some(&op),
        Some(&over(duplex_controller::api::OPERATOR_BODY_LIMIT)),
    )
    .await;
    assert_refused(got, 413, "too_large", "larger than");
    let ctl_cert = c.as_(&Identity::Controller);
    let got = call(
        "POST",
        &format!("{}/v1/vms", c.agent),
        Some(&ctl_cert),
        Some(&over(duplex_agent::api::BODY_LIMIT)),
    )
    .await;
    assert_refused(got, 413, "too_large", "larger than");
    assert_eq!(c.snapshot().await, before);
}

impl Cluster {
    /// [`Cluster::snapshot`] read as `who` (after the reader was revoked).
    async fn snapshot_as(&self, who: &Path) -> Value {
        let mut hosts = call("GET", &format!("{}/v1/hosts", self.ctl), Some(who), None)
            .await
            .1;
        for h in hosts.as_array_mut().unwrap() {
            h.as_object_mut()
                .unwrap()
                .retain(|k, _| matches!(k.as_str(), "name" | "url" | "state" | "capacity"));
        }
        let get = |p: String| async move { call("GET", &p, Some(who), None).await.1 };
        json!({
            "fence": get(format!("{}/v1/fence", self.agent)).await,
            "agent_vms": get(format!("{}/v1/vms", self.agent)).await,
            "hosts": hosts,
            "vms": get(format!("{}/v1/vms", self.ctl)).await,
            "pairs": get(format!("{}/v1/pairs", self.ctl)).await,
        })
    }
}

/// A client presenting the certificate in `dir` as it is (none of our
/// checks), trusting `pki`'s CA.
fn client_of(pki: &TestPki, dir: &Path) -> reqwest::Client {
    pki.raw_client(dir).unwrap()
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn cli(args: &[&str]) {
    let out = std::process::Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "duplex {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The cluster store: anyone who could write etcd could rewrite the
/// cluster. etcd takes TLS only, with a certificate of the cluster's CA,
/// and only the controller's certificate may read or write: an agent's or
/// an admin operator's is refused, a plain connection and another CA's
/// certificate do not get in, and nothing they tried is written.
#[tokio::test(flavor = "multi_thread")]
async fn only_the_controller_may_use_the_store() {
    use duplex_store::{EtcdOptions, EtcdStore, Expect, Store};
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (cp, pp) = (free_port().unwrap(), free_port().unwrap());
    let etcd = secure_etcd(
        &dir.path().join("etcd"),
        cp,
        pp,
        &dir.path().join("etcd.log"),
        &pki,
    )
    .await;
    let url = vec![etcd.client_url()];
    let opts = |b: &duplex_tls::Bundle| EtcdOptions {
        connect_timeout: Duration::from_secs(3),
        tls: Some(duplex_controller::etcd_tls(b).unwrap()),
        ..Default::default()
    };
    let ctl = EtcdStore::connect(&url, opts(&pki.controller().unwrap()))
        .await
        .expect("the controller connects");
    ctl.put("hosts/h1", b"real", Expect::Any).await.unwrap();

    for who in [
        Identity::agent("h1").unwrap(),
        Identity::operator("eve", Scope::Admin).unwrap(),
    ] {
        let s = EtcdStore::connect(&url, opts(&pki.bundle(&who).unwrap()))
            .await
            .expect("TLS itself is fine");
        let e = s.put("hosts/h1", b"forged", Expect::Any).await.unwrap_err();
        assert!(e.to_string().contains("permission denied"), "{who:?}: {e}");
        let e = s.get("hosts/h1").await.unwrap_err();
        assert!(e.to_string().contains("permission denied"), "{who:?}: {e}");
    }
    // Another CA's controller certificate: the handshake fails.
    let other_dir = tempfile::tempdir().unwrap();
    let other = TestPki::new(other_dir.path()).unwrap();
    let mut foreign = opts(&other.controller().unwrap());
    foreign.connect_timeout = Duration::from_millis(1500);
    let e = EtcdStore::connect(&url, foreign)
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("etcd"), "{e}");
    // No TLS: the store refuses to talk http:// to a TLS etcd; a plain
    // client of etcd itself gets no answer.
    let plain = EtcdOptions {
        connect_timeout: Duration::from_millis(1500),
        ..Default::default()
    };
    let e = EtcdStore::connect(&url, plain)
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("no TLS identity"), "{e}");
    let http = vec![url[0].replace("https://", "http://")];
    let plain = EtcdOptions {
        connect_timeout: Duration::from_millis(1500),
        ..Default::default()
    };
    assert!(EtcdStore::connect(&http, plain).await.is_err());

    let v = ctl.get("hosts/h1").await.unwrap().expect("still there");
    assert_eq!(v.value, b"real", "nothing forged was written");
}
