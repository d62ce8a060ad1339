//! Debian's chromium, headless, driven over WebDriver by chromium-driver.

use anyhow::{bail, Context};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for chromedriver, or for the page to show something.
pub const WAIT: Duration = Duration::from_secs(120);

/// chromedriver on a free loopback port, stopped when dropped.
pub struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    pub async fn start() -> anyhow::Result<Driver> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("chromedriver (./setup.sh installs chromium-driver)")?;
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let t0 = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if t0.elapsed() > WAIT {
                bail!("chromedriver did not listen on port {port}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(driver)
    }

    /// A headless browser that takes the test CA's certificate.
    pub async fn browser(&self) -> anyhow::Result<Client> {
        let caps = json!({
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"]
            }
        });
        let Value::Object(caps) = caps else {
            bail!("capabilities are not an object");
        };
        // WebDriver's own session setup may take a while on a busy machine.
        let mut last = None;
        for _ in 0..3 {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&self.url)
                .await
            {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        bail!("no browser session: {last:?}")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `script` until it returns something other than null/false.
pub async fn until(c: &Client, what: &str, script: &str) -> anyhow::Result<Value> {
    let t0 = Instant::now();
    loop {
        let v = c.execute(script, vec![]).await.unwrap_or(Value::Null);
        if !(v.is_null() || v == json!(false)) {
            return Ok(v);
        }
        if t0.elapsed() > WAIT {
            bail!("the page never showed {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Shows the page's tab `name`.
pub async fn tab(c: &Client, name: &str) -> anyhow::Result<()> {
    c.find(Locator::Css(&format!("nav button[data-tab={name}]")))
        .await
        .with_context(|| format!("the {name} tab"))?
        .click()
        .await
        .context("click")?;
    Ok(())
}
