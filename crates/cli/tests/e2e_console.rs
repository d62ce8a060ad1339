//! The web console in a real browser (Debian's chromium, driven over
//! WebDriver by chromium-driver) against a lab: an operator's session
//! from `duplex console`, the page shows the pair with its roles, the
//! topology shows the hosts and the traffic measured between the members,
//! a member's placement explanation opens, a switchover started from the
//! page completes and the page shows the new roles without a reload (its
//! live feed), a switchover of a pair that is moving shows the API's
//! error, and the session's address opens nothing a second time.

mod common;

use common::{in_lab, in_lab_json, LabGuard};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LAB: &str = "e2eui";
/// Longest wait for the page to show something.
const SHOW: Duration = Duration::from_secs(60);

/// chromedriver on a free loopback port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Driver {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("its address").port()
        };
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (./setup.sh installs chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        let t0 = Instant::now();
        while reqwest::get(format!("{url}/status")).await.is_err() {
            assert!(t0.elapsed() < SHOW, "chromedriver did not answer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Driver { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver) -> Client {
    let caps = json!({
        // The lab's controller has a certificate of the lab's own CA.
        "acceptInsecureCerts": true,
        "goog:chromeOptions": {
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,800"]
        }
    });
    let caps = match caps {
        Value::Object(m) => m,
        _ => unreachable!("an object"),
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a browser session")
}

/// Runs `script` in the page until it returns something truthy; that.
async fn until(c: &Client, what: &str, script: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let v = c.execute(script, vec![]).await.unwrap_or(Value::Null);
        if !(v.is_null() || v == json!(false) || v == json!("")) {
            return v;
        }
        assert!(t0.elapsed() < SHOW, "the page never showed {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Script: the text of the element at `css` (null if none).
fn text(css: &str) -> String {
    format!("const e = document.querySelector(\"{css}\"); return e && e.textContent;")
}

/// Script: whether the element at `css` reads `want`.
fn reads(css: &str, want: &str) -> String {
    format!(
        "const e = document.querySelector(\"{css}\"); return !!e && e.textContent === '{want}';"
    )
}

/// Where the page shows the role `vm`'s guest reports.
fn role(vm: &str) -> String {
    format!("tr[data-pair=sig] div[data-member={vm}] .role")
}

/// Shows the page's tab `name`.
async fn tab(c: &Client, name: &str) {
    let b = c
        .find(Locator::Css(&format!("nav button[data-tab={name}]")))
        .await
        .expect("the tab");
    b.click().await.expect("click");
}

/// Clicks the pair's button `act` and accepts the confirmation.
async fn click(c: &Client, act: &str) {
    let b = c
        .find(Locator::Css(&format!(
            "tr[data-pair=sig] button[data-act={act}]"
        )))
        .await
        .expect("the pair's button");
    b.click().await.expect("click");
    c.accept_alert().await.expect("the confirmation");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_shows_the_pair_live_and_switches_it_over() {
    let _guard = LabGuard::new(LAB);
    let i = common::lab_up(LAB, &["--hosts", "3"]);
    let ip = |last: u8| format!("10.{i}.0.{last}");
    let (ma, mb, vip) = (format!("pa={}", ip(101)), format!("pb={}", ip(102)), ip(50));
    in_lab_json(
        LAB,
        &[
            "pair", "create", "sig", "--vip", &vip, "--member", &ma, "--member", &mb, "--hosts",
            "h1,h2",
        ],
    );
    common::wait_pair_healthy(LAB, "sig", SHOW);
    let (ok, url, err) = in_lab(LAB, &["console"]);
    assert!(ok, "duplex console: {err}");
    let driver = Driver::start().await;
    let c = browser(&driver).await;
    c.goto(url.trim()).await.expect("the session's address");
    let before = (
        until(&c, "pa's role", &text(&role("pa"))).await,
        until(&c, "pb's role", &text(&role("pb"))).await,
    );
    assert_eq!(before, (json!("act"), json!("sby")), "as the guests report");

    // The topology: the lab's hosts, and the traffic the members'
    // elements measure between them (their heartbeats and sync).
    tab(&c, "topology").await;
    until(
        &c,
        "h1 in the picture",
        "return !!document.querySelector('g[data-host=h1]');",
    )
    .await;
    let flow = until(
        &c,
        "a flow between pa and pb",
        "const r = document.querySelector(\"tr[data-flow='pa>pb'], tr[data-flow='pb>pa']\"); return r && r.textContent;",
    )
    .await;
    eprintln!("the page shows the flow: {flow}");
    // Why pa is where it is: the placement engine's explanation.
    tab(&c, "vms").await;
    let why = c
        .find(Locator::Css("tr[data-vm=pa] button[data-act=explain]"))
        .await
        .expect("pa's explain button");
    why.click().await.expect("click");
    until(&c, "pa's explanation", &reads("#explain .vm", "pa")).await;
    until(&c, "pa's host in it", &reads("#explain .at", "h1")).await;
    tab(&c, "pairs").await;

    // A switchover from the page; the new roles come by the live feed.
    c.execute("window.__same_page = true; return true;", vec![])
        .await
        .expect("mark the page");
    click(&c, "switchover").await;
    until(&c, "pa as SBY", &reads(&role("pa"), "sby")).await;
    until(&c, "pb as ACT", &reads(&role("pb"), "act")).await;
    let same = c
        .execute("return window.__same_page === true;", vec![])
        .await;
    assert_eq!(same.ok(), Some(json!(true)), "the page was reloaded");

    // A feed that connects again starts the page over: a row deleted
    // while it was away (here one the page made up) is gone.
    c.execute(
        "const p = state.tables.pairs.get('sig'); state.tables.pairs.set('ghost', Object.assign({}, p, { name: 'ghost' })); schedule(); return true;",
        vec![],
    )
    .await
    .expect("add a row the controller does not have");
    until(
        &c,
        "the made-up row",
        "return !!document.querySelector('tr[data-pair=ghost]');",
    )
    .await;
    c.execute("connect(); return true;", vec![])
        .await
        .expect("connect the feed again");
    until(
        &c,
        "the made-up row gone, the pair still there",
        "return !document.querySelector('tr[data-pair=ghost]') && !!document.querySelector('tr[data-pair=sig]');",
    )
    .await;

    // A switchover of a pair that is moving: the API's error shows.
    let (ok, _, err) = in_lab(LAB, &["pair", "migrate", "sig", "--to", "h3", "--no-wait"]);
    assert!(ok, "pair migrate: {err}");
    until(
        &c,
        "the pair moving",
        &reads("tr[data-pair=sig] .phase", "moving"),
    )
    .await;
    click(&c, "switchover").await;
    let shown = until(
        &c,
        "the API's error",
        "const e = document.getElementById('error'); return !e.hidden && document.getElementById('error-text').textContent;",
    )
    .await;
    eprintln!("the page says: {shown}");
    let text = shown.as_str().unwrap_or("");
    // The API's conflict, as it said it: its message and its code.
    assert!(
        text.contains("sig") && text.ends_with("(conflict)"),
        "not the API's conflict: {text}"
    );
    if let Ok(png) = c.screenshot().await {
        let path = std::env::temp_dir().join("duplex-console.png");
        let _ = std::fs::write(&path, png);
        eprintln!("screenshot: {}", path.display());
    }
    // The address `duplex console` printed opens nothing a second time.
    c.goto(url.trim()).await.expect("the address again");
    let again = until(&c, "the refusal", "return document.body.textContent;").await;
    assert!(
        again.as_str().unwrap_or("").contains("no_session"),
        "a used login address opened something: {again}"
    );
    let _ = c.close().await;
    common::wait_pair_healthy(LAB, "sig", Duration::from_secs(120));
}
