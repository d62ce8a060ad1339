//! Typed client of the controller's API for the CLI, the lab and tests.
//! Errors carry the controller's own code and message.

use crate::error::NOT_LEADER;
use duplex_agent_client::error_chain;
use duplex_core::agent_api::ErrorBody;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("controller at {url} is unreachable: {msg} (is `duplex controller` running? see --controller)")]
    Unreachable { url: String, msg: String },
    #[error("controller answered {status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected answer from {url}: {msg}")]
    Decode { url: String, msg: String },
    #[error("cannot use the TLS bundle: {0} (pass --tls-dir, or make one with `duplex pki issue operator <name>`)")]
    Tls(String),
}

impl ClientError {
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct ControllerClient {
    base: String,
    /// Other instances of the controller, asked in turn when `base` cannot
    /// be connected to or does not lead.
    standbys: Vec<String>,
    http: reqwest::Client,
}

/// The shape of the operators' clients: no proxy, a connect limit, and a
/// limit on any one request.
pub fn shape(b: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    b.no_proxy()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(90))
}

impl ControllerClient {
    /// A client of the controller at `base` (`https://...`) over `http`,
    /// which presents the caller's certificate.
    pub fn new(base: &str, http: reqwest::Client) -> Self {
        ControllerClient {
            base: base.trim_end_matches('/').to_string(),
            standbys: Vec::new(),
            http,
        }
    }

    /// A client presenting the bundle in `dir` (an operator's).
    pub fn with_bundle(base: &str, dir: &std::path::Path) -> Result<Self, ClientError> {
        let clients = duplex_tls::client::Clients::new(duplex_tls::Bundle::new(dir), shape)
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        Ok(Self::new(base, clients.get()))
    }

    /// Also asks these instances, in turn, when one cannot be connected to
    /// or answers `503 not_leader` (neither carried the request out).
    pub fn with_standbys(mut self, urls: &[String]) -> Self {
        self.standbys = urls
            .iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect();
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request; `body` as JSON if given. Returns the decoded answer.
    /// Goes to the next instance only when one was not reached at all or
    /// said it does not lead: a request that may have been carried out is
    /// never sent twice.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let mut result = self.call_at(&self.base, method.clone(), path, body).await;
        for base in &self.standbys {
            match &result {
                Err((_, true)) => {
                    result = self.call_at(base, method.clone(), path, body).await;
                }
                _ => break,
            }
        }
        result.map_err(|(e, _)| e)
    }

    /// One request to one instance; the error says whether another may be asked.
    async fn call_at<B: Serialize, T: DeserializeOwned>(
        &self,
        base: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, (ClientError, bool)> {
        let url = format!("{base}{path}");
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| {
            let unreached = e.is_connect();
            let err = ClientError::Unreachable {
                url: base.to_string(),
                msg: error_chain(&e),
            };
            (err, unreached)
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| {
            let err = ClientError::Decode {
                url: url.clone(),
                msg: error_chain(&e),
            };
            (err, false)
        })?;
        if !status.is_success() {
            let err = match serde_json::from_str::<ErrorBody>(&text) {
                Ok(b) => ClientError::Api {
                    status: status.as_u16(),
                    code: b.error.code,
                    message: b.error.message,
                },
                Err(_) => ClientError::Api {
                    status: status.as_u16(),
                    code: "http".into(),
                    message: text,
                },
            };
            let not_leader = err.code() == Some(NOT_LEADER);
            return Err((err, not_leader));
        }
        serde_json::from_str(&text).map_err(|e| {
            let err = ClientError::Decode {
                url,
                msg: format!("{e}: {text}"),
            };
            (err, false)
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call::<(), T>(reqwest::Method::GET, path, None).await
    }
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call::<(), T>(reqwest::Method::DELETE, path, None)
            .await
    }
}
