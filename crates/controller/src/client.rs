//! Typed client of the controller's API for the CLI, the lab and tests.
//! Errors carry the controller's own code and message.

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
    #[error("cannot read the API token from {path}: {msg} (pass --token-file, or run on the controller's machine)")]
    Token { path: String, msg: String },
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
    token: Option<String>,
    http: reqwest::Client,
}

impl ControllerClient {
    /// `token`: the bearer token (none: requests go without, for tests of refusals).
    pub fn new(base: &str, token: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(90))
            .build()
            .unwrap_or_default();
        ControllerClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        }
    }

    /// Reads the token from `path` (the controller's `token` file).
    pub fn with_token_file(base: &str, path: &std::path::Path) -> Result<Self, ClientError> {
        let token = std::fs::read_to_string(path).map_err(|e| ClientError::Token {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        Ok(Self::new(base, Some(token.trim().to_string())))
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request; `body` as JSON if given. Returns the decoded answer.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            msg: error_chain(&e),
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| ClientError::Decode {
            url: url.clone(),
            msg: error_chain(&e),
        })?;
        if !status.is_success() {
            return Err(match serde_json::from_str::<ErrorBody>(&text) {
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
            });
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Decode {
            url,
            msg: format!("{e}: {text}"),
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
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call::<(), T>(reqwest::Method::DELETE, path, None)
            .await
    }
}
