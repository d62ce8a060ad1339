//! Shared by the end-to-end tests: the lab they run in is removed when the
//! test ends, however it ends, after printing the agents' and guests' logs
//! if it failed.

pub mod controllers;

use std::process::Command;

pub const BIN: &str = env!("CARGO_BIN_EXE_duplex");

pub struct LabGuard(pub &'static str);

impl LabGuard {
    /// Removes leftovers of an earlier run, then guards the lab.
    pub fn new(lab: &'static str) -> LabGuard {
        let _ = Command::new(BIN)
            .args(["lab", "down", "--lab", lab])
            .output();
        keep_panic_message();
        LabGuard(lab)
    }
}

/// The last panic's message, kept so the guard can repeat it after the
/// logs it prints: CI shows the end of a failed test's output.
static PANIC: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn keep_panic_message() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Ok(mut m) = PANIC.lock() {
            *m = Some(info.to_string());
        }
        prev(info);
    }));
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let dir = format!("/run/duplex/lab-{}", self.0);
            let script = format!(
                "for f in {dir}/controller*/controller.log {dir}/h*/agent.log {dir}/h*/vms/*/serial.log {dir}/h*/vms/*/qemu.log; do echo \"== $f\"; tail -n 40 \"$f\"; done"
            );
            if let Ok(o) = Command::new("sh").arg("-c").arg(script).output() {
                eprintln!("{}", String::from_utf8_lossy(&o.stdout));
            }
            let (_, events, _) = in_lab(self.0, &["events", "--last", "30"]);
            eprintln!("== the controller's last events\n{events}");
            if let Some(m) = PANIC.lock().ok().and_then(|m| m.clone()) {
                eprintln!("== the test failed: {m}");
            }
        }
        let _ = Command::new(BIN)
            .args(["lab", "down", "--lab", self.0])
            .output();
    }
}

/// Runs `duplex ARGS` against lab `lab`'s controller: (success, stdout, stderr).
#[allow(dead_code)]
pub fn in_lab(lab: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("DUPLEX_LAB", lab)
        .output()
        .expect("run duplex");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`in_lab`] with `-o json`, parsed; panics naming the command if it fails.
#[allow(dead_code)]
pub fn in_lab_json(lab: &str, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let (ok, out, err) = in_lab(lab, &a);
    assert!(ok, "duplex {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// Polls `duplex pair show PAIR` in lab `lab` until the pair is healthy;
/// panics with the last answer if it is not within `within`.
#[allow(dead_code)]
pub fn wait_pair_healthy(lab: &str, pair: &str, within: std::time::Duration) -> serde_json::Value {
    let t0 = std::time::Instant::now();
    loop {
        let p = in_lab_json(lab, &["pair", "show", pair]);
        if p["health"] == "healthy" {
            return p;
        }
        assert!(
            t0.elapsed() < within,
            "pair {pair} not healthy within {within:?}: {p}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

/// (ACT host, SBY host) of a pair as `pair show -o json` gives it, from
/// the roles its guests report; panics naming the pair if one is missing.
#[allow(dead_code)]
pub fn act_sby_hosts(p: &serde_json::Value) -> (String, String) {
    let m = p["members_status"].as_array().expect("members_status");
    let host_of = |role: &str| {
        m.iter()
            .find(|x| x["role"] == role)
            .unwrap_or_else(|| panic!("no {role}: {p}"))["host"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    (host_of("act"), host_of("sby"))
}

/// `duplex lab up --lab LAB EXTRA...`, insisting on success; the lab's
/// index `i` (its addresses are `10.i.0.x`).
#[allow(dead_code)]
pub fn lab_up(lab: &str, extra: &[&str]) -> u64 {
    let mut args = vec!["lab", "up", "--lab", lab];
    args.extend(extra);
    let (ok, _, err) = in_lab(lab, &args);
    assert!(ok, "lab up: {err}");
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("/run/duplex/lab-{lab}/state.json")).unwrap(),
    )
    .unwrap();
    state["index"].as_u64().unwrap()
}

/// sipp's built-in UAC in lab `lab`'s client namespace against `vip`:5060,
/// 10 calls/s of 2 s, until stopped (or `duration`); a call left open is
/// ended by the harness `grace` after that and counted abandoned.
#[allow(dead_code)]
pub fn sipp_until_stopped(
    lab: &str,
    vip: &str,
    work: &std::path::Path,
    duration: std::time::Duration,
    grace: std::time::Duration,
) -> duplex_sipp::RunningSipp {
    std::fs::create_dir_all(work).unwrap();
    let vip: std::net::Ipv4Addr = vip.parse().unwrap();
    let mut run = duplex_sipp::SippRun::new(std::net::SocketAddr::from((vip, 5060)), work.into());
    run.rate_cps = 10.0;
    run.call_length_ms = 2000;
    run.calls = None;
    run.duration = Some(duration);
    run.scenario = duplex_sipp::Scenario::BuiltinUac;
    run.timeout = duration + grace;
    let prefix: Vec<String> = ["ip", "netns", "exec", &format!("{lab}-client")]
        .iter()
        .map(|s| s.to_string())
        .collect();
    duplex_sipp::spawn(&run, &prefix).expect("start sipp")
}

/// Watches, from lab `lab`'s client namespace, which MACs answer ARP for
/// the service address: one `arping` after another (each waits up to 1 s
/// for a second answer). A sample with two MACs means two VMs claimed the
/// address at once.
#[allow(dead_code)]
pub struct ArpWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<ArpSeen>,
}

/// What an [`ArpWatch`] saw.
#[allow(dead_code)]
#[derive(Debug, Default)]
pub struct ArpSeen {
    pub samples: u64,
    /// Samples no MAC answered (nobody held the address).
    pub unanswered: u64,
    /// Samples two or more MACs answered, with the MACs.
    pub doubled: Vec<Vec<String>>,
    /// Every MAC that ever answered, in order of first answer.
    pub macs: Vec<String>,
}

#[allow(dead_code)]
impl ArpWatch {
    pub fn start(lab: &str, vip: &str) -> ArpWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, ns, vip) = (stop.clone(), format!("{lab}-client"), vip.to_string());
        let thread = std::thread::spawn(move || {
            let mut seen = ArpSeen::default();
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                let out = Command::new("ip")
                    .args([
                        "netns", "exec", &ns, "arping", "-c", "2", "-w", "1", "-I", "eth0", &vip,
                    ])
                    .output()
                    .expect("run arping (iputils-arping, installed by setup.sh)");
                let text = String::from_utf8_lossy(&out.stdout);
                let mut macs: Vec<String> = text
                    .lines()
                    .filter(|l| l.contains("reply from"))
                    .filter_map(|l| Some(l.split('[').nth(1)?.split(']').next()?.to_string()))
                    .collect();
                macs.sort();
                macs.dedup();
                seen.samples += 1;
                match macs.len() {
                    0 => seen.unanswered += 1,
                    1 => {}
                    _ => seen.doubled.push(macs.clone()),
                }
                for m in macs {
                    if !seen.macs.contains(&m) {
                        seen.macs.push(m);
                    }
                }
            }
            seen
        });
        ArpWatch { stop, thread }
    }

    pub fn stop(self) -> ArpSeen {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().expect("arp watch")
    }
}

/// `duplex lab fault ARGS --lab LAB`, insisting on success.
#[allow(dead_code)]
pub fn fault(lab: &str, args: &[&str]) {
    let mut a = vec!["lab", "fault"];
    a.extend(args);
    a.extend(["--lab", lab]);
    let (ok, out, err) = in_lab(lab, &a);
    assert!(ok, "duplex {a:?}: {err}");
    eprintln!("{}", out.trim());
}

/// The controller's last events, as `kind message` lines.
#[allow(dead_code)]
pub fn events(lab: &str) -> Vec<String> {
    let ev = in_lab_json(lab, &["events", "--last", "200"]);
    ev.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["kind"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// Checks a host-loss run from the client's side: sipp lost no call and
/// left none open, and no ARP sample saw two VMs answer for `vip`.
#[allow(dead_code)]
pub fn assert_served_once(report: &duplex_sipp::SippReport, seen: &ArpSeen, vip: &str) {
    eprintln!(
        "sipp: {} calls, {} successful, {} failed, {} abandoned, {} retransmissions; ARP: {} samples, {} unanswered, MACs {:?}",
        report.total_calls,
        report.successful,
        report.failed,
        report.abandoned,
        report.retransmissions,
        seen.samples,
        seen.unanswered,
        seen.macs
    );
    assert!(
        seen.doubled.is_empty(),
        "two VMs answered for {vip} at once: {:?}",
        seen.doubled
    );
    assert!(report.successful > 0, "{report:?}");
    if report.failed > 0 {
        print_unexpected(&report.work_dir);
    }
    assert_eq!(report.failed, 0, "calls failed: {report:?}");
    assert_eq!(report.abandoned, 0, "calls left open: {report:?}");
}

/// Prints what sipp's error file says about the calls it aborted (the
/// unexpected message, with its time), so that a failed run shows which
/// call failed and why.
fn print_unexpected(work: &std::path::Path) {
    let path = work.join(duplex_sipp::ERROR_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("no sipp error file at {}", path.display());
        return;
    };
    let lines: Vec<&str> = text.lines().collect();
    let hits = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("unexpected"));
    for (at, _) in hits.take(5) {
        eprintln!("== sipp {}:", path.display());
        for line in lines.iter().skip(at).take(14) {
            eprintln!("  {line}");
        }
    }
}

/// The host-loss tests' set-up: pair `sig` (`pa` on h1, `pb` on h2,
/// service address 10.i.0.50) created and healthy in lab `lab` (index
/// `i`), sipp placing calls at it from the client namespace and an
/// [`ArpWatch`] on its address, both running for a few seconds already.
#[allow(dead_code)]
pub struct PairUnderLoad {
    pub vip: String,
    work: std::path::PathBuf,
    sipp: duplex_sipp::RunningSipp,
    arp: ArpWatch,
}

#[allow(dead_code)]
impl PairUnderLoad {
    pub async fn start(lab: &str, i: u64, within: std::time::Duration) -> PairUnderLoad {
        let ip = |last: u8| format!("10.{i}.0.{last}");
        let (ma, mb, vip) = (format!("pa={}", ip(101)), format!("pb={}", ip(102)), ip(50));
        in_lab_json(
            lab,
            &[
                "pair", "create", "sig", "--vip", &vip, "--member", &ma, "--member", &mb,
                "--hosts", "h1,h2",
            ],
        );
        wait_pair_healthy(lab, "sig", within);
        let work = std::env::temp_dir().join(format!("duplex-e2e-{lab}-{}", std::process::id()));
        let limit = std::time::Duration::from_secs(400);
        let sipp = sipp_until_stopped(lab, &vip, &work, limit, std::time::Duration::from_secs(40));
        let arp = ArpWatch::start(lab, &vip);
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        PairUnderLoad {
            vip,
            work,
            sipp,
            arp,
        }
    }

    /// Fails the test at once if sipp has counted a failed call so far
    /// (its stats file is rewritten every second), with what its error
    /// file says: a lost call then points at the step that lost it, and
    /// the logs printed are those of that moment.
    pub fn assert_none_failed_yet(&self, step: &str) {
        let path = self.work.join(duplex_sipp::config::STAT_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        let Ok(stats) = duplex_sipp::parse::parse_stat_csv(&text) else {
            return;
        };
        if stats.failed > 0 {
            print_unexpected(&self.work);
            panic!("{} call(s) failed by the end of {step}", stats.failed);
        }
    }

    /// Stops the load a few seconds later and checks it was served once
    /// throughout ([`assert_served_once`]); what the ARP watch saw.
    pub async fn finish(self) -> ArpSeen {
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        self.sipp.stop();
        let report = self.sipp.wait().await.expect("sipp");
        let seen = self.arp.stop();
        assert_served_once(&report, &seen, &self.vip);
        let _ = std::fs::remove_dir_all(&self.work);
        seen
    }
}
