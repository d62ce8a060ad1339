//! The migration stream's TLS: QEMU's `tls-creds-x509` reads its files
//! from one directory under its own names, so the agent writes this host's
//! bundle there (refreshed before every migration, as the bundle may have
//! been rotated): the agent's certificate serves both as QEMU's server
//! certificate (destination) and its client certificate (source). The
//! directory is the VM's own (`<vm dir>/tls`), given to the QEMU user,
//! which reads it after it dropped its privileges.

use crate::host::Host;
use crate::vm::Vm;
use crate::AgentError;
use duplex_core::identity::Identity;
use duplex_qemu::migration::{StreamTls, CREDS_FILES, DH_PARAMS_FILE, FFDHE2048_PEM};
use duplex_tls::bundle::{CA_FILE, CERT_FILE, KEY_FILE};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

/// Writes the bundle in QEMU's layout into `<vm dir>/tls`; the directory.
fn write_creds(host: &Host, vm: &Vm) -> Result<PathBuf, AgentError> {
    let dir = vm.paths.dir.join("tls");
    let user = host.cfg.qemu_user.as_ref();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(AgentError::io(format!("cannot create {}", dir.display())))?;
    crate::qemu_user::give(user, &dir, 0o700)?;
    let bundle = &host.cfg.tls;
    for name in CREDS_FILES {
        let from = match name {
            "ca-cert.pem" => CA_FILE,
            n if n.ends_with("-key.pem") => KEY_FILE,
            _ => CERT_FILE,
        };
        let bytes = std::fs::read(bundle.path(from)).map_err(AgentError::io(format!(
            "cannot read {}",
            bundle.path(from).display()
        )))?;
        write_private(&dir.join(name), &bytes, user)?;
    }
    write_private(&dir.join(DH_PARAMS_FILE), FFDHE2048_PEM.as_bytes(), user)?;
    Ok(dir)
}

/// Writes `bytes` to a file only the QEMU user (or the agent) reads.
fn write_private(
    to: &std::path::Path,
    bytes: &[u8],
    user: Option<&duplex_qemu::runas::RunAs>,
) -> Result<(), AgentError> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(to)
        .map_err(AgentError::io(format!("cannot write {}", to.display())))?;
    std::io::Write::write_all(&mut f, bytes)
        .map_err(AgentError::io(format!("cannot write {}", to.display())))?;
    crate::qemu_user::give(user, to, 0o600)
}

/// The destination's protection: TLS taking the stream only from the
/// agent that asked (`caller`), unless the request asked for cleartext.
pub fn server(
    host: &Host,
    vm: &Vm,
    caller: Option<&Identity>,
    cleartext: bool,
) -> Result<StreamTls, AgentError> {
    if cleartext {
        return Ok(StreamTls::Off);
    }
    let client_dn = match caller {
        Some(id @ Identity::Agent { .. }) => Some(format!("CN={}", id.dns_name())),
        _ => None,
    };
    Ok(StreamTls::Server {
        dir: write_creds(host, vm)?,
        client_dn,
    })
}

/// The source's protection: TLS, the destination checked against the
/// address it is reached at.
pub fn client(
    host: &Host,
    vm: &Vm,
    dest: std::net::Ipv4Addr,
    cleartext: bool,
) -> Result<StreamTls, AgentError> {
    if cleartext {
        return Ok(StreamTls::Off);
    }
    Ok(StreamTls::Client {
        dir: write_creds(host, vm)?,
        hostname: dest.to_string(),
    })
}
