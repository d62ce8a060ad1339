//! Turns on etcd's authentication for a freshly made cluster: a `root`
//! user (required by etcd, with a random password handed back to the
//! caller to keep), a role `duplex` that may read and write every key,
//! and one user per client identity that gets that role. With
//! `--client-cert-auth`, etcd takes the common name of the client's
//! certificate as its user, so only those identities (the controller) can
//! touch the state; any other certificate of the same CA (an agent, an
//! operator) is refused.

use super::tls::EtcdTls;
use crate::StoreError;
use etcd_client::{Client, ConnectOptions, Permission, UserAddOptions};
use std::io::Read;
use std::time::Duration;

/// The role every store user gets.
pub const ROLE: &str = "duplex";
/// How long each bootstrap request may take.
const REQUEST_LIMIT: Duration = Duration::from_secs(5);

fn failed(step: &str, e: etcd_client::Error) -> StoreError {
    StoreError::Server(format!("enabling etcd authentication: {step}: {e}"))
}

/// Enables authentication on the etcd at `url` (reached with `tls`) and
/// lets `users` read and write every key. Returns root's password.
pub async fn enable(url: &str, tls: &EtcdTls, users: &[String]) -> Result<String, StoreError> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(REQUEST_LIMIT)
        .with_timeout(REQUEST_LIMIT)
        .with_tls(tls.options());
    let mut c = Client::connect([url], Some(opts))
        .await
        .map_err(|e| failed("connecting", e))?;
    let password = random_password()?;
    c.user_add("root", password.clone(), None)
        .await
        .map_err(|e| failed("adding user root", e))?;
    c.user_grant_role("root", "root")
        .await
        .map_err(|e| failed("granting root its role", e))?;
    c.role_add(ROLE)
        .await
        .map_err(|e| failed("adding the role", e))?;
    c.role_grant_permission(ROLE, Permission::read_write("").with_all_keys())
        .await
        .map_err(|e| failed("granting the role every key", e))?;
    for u in users {
        // No password: the user exists for its certificate only.
        c.user_add(u.clone(), "", Some(UserAddOptions::new().with_no_pwd()))
            .await
            .map_err(|e| failed(&format!("adding user {u}"), e))?;
        c.user_grant_role(u.clone(), ROLE)
            .await
            .map_err(|e| failed(&format!("granting {u} the role"), e))?;
    }
    c.auth_enable()
        .await
        .map_err(|e| failed("turning authentication on", e))?;
    Ok(password)
}

/// 32 random bytes from the kernel, in hex.
fn random_password() -> Result<String, StoreError> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|source| StoreError::Io {
            context: "reading /dev/urandom".into(),
            source,
        })?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}
