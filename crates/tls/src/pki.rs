//! The cluster's certificate authority, kept in one directory on the
//! admin's machine (the lab keeps it under its state directory):
//!
//! ```text
//! ca.crt  ca.key      the CA (key mode 0600; never leaves this directory)
//! crl.pem             the revocation list, copied into every bundle made here
//! index.json          every certificate issued: identity, serial, names, validity, revocation
//! issued/<name>/      the bundle of each identity (see `bundle`), unless issued elsewhere
//! ```
//!
//! One command runs on a directory at a time (an exclusive lock file).

use crate::bundle::{CA_FILE, CERT_FILE, CRL_FILE, KEY_FILE};
use crate::error::TlsError;
use crate::files;
use duplex_core::identity::Identity;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose as Eku, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose as Ku,
    RevokedCertParams, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

pub const CA_KEY_FILE: &str = "ca.key";
pub const INDEX_FILE: &str = "index.json";
pub const ISSUED_DIR: &str = "issued";
/// How long the CA is valid.
pub const CA_DAYS: i64 = 3650;
/// How long a certificate is valid unless asked otherwise.
pub const DEFAULT_DAYS: i64 = 365;
/// The longest validity `issue` accepts.
pub const MAX_DAYS: i64 = 3650;
/// A certificate is valid from this long before it was made (clock skew).
const BACKDATE: Duration = Duration::hours(1);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// The identity's DNS name (`h1.agent.duplex`).
    pub name: String,
    pub serial: String,
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    #[serde(default)]
    pub dns: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
    pub bundle: PathBuf,
    #[serde(default)]
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    entries: Vec<Entry>,
    #[serde(default)]
    crl_number: u64,
}

/// What to issue.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    pub identity: Identity,
    /// Addresses the holder serves on (a server's certificate is checked
    /// against the address it is reached at).
    pub ips: Vec<IpAddr>,
    /// Host names it serves on.
    pub dns: Vec<String>,
    pub days: i64,
    /// Where the bundle goes (default `issued/<name>`).
    pub out: Option<PathBuf>,
    /// Explicit validity, for tests of expired and future certificates.
    pub validity: Option<(OffsetDateTime, OffsetDateTime)>,
}

impl IssueRequest {
    pub fn new(identity: Identity) -> IssueRequest {
        IssueRequest {
            identity,
            ips: Vec::new(),
            dns: Vec::new(),
            days: DEFAULT_DAYS,
            out: None,
            validity: None,
        }
    }
}

/// A CA directory.
pub struct Pki {
    dir: PathBuf,
    _lock: std::fs::File,
}

impl Pki {
    /// Creates the CA in `dir` (refused if one is there).
    pub fn init(dir: &Path) -> Result<Pki, TlsError> {
        files::private_dir(dir)?;
        let pki = Pki::lock(dir)?;
        if pki.path(CA_KEY_FILE).exists() {
            return Err(TlsError::Usage(format!(
                "{} already holds a CA; use it, or remove the directory to start a new cluster",
                dir.display()
            )));
        }
        let key = KeyPair::generate()?;
        let now = OffsetDateTime::now_utc();
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        let tag = hex(&files::random::<4>()?);
        p.distinguished_name
            .push(DnType::CommonName, format!("duplex cluster CA {tag}"));
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![Ku::KeyCertSign, Ku::CrlSign, Ku::DigitalSignature];
        p.not_before = now - BACKDATE;
        p.not_after = now + Duration::days(CA_DAYS);
        p.serial_number = Some(SerialNumber::from_slice(&serial_bytes()?));
        let cert = p.self_signed(&key)?;
        files::write(
            &pki.path(CA_KEY_FILE),
            key.serialize_pem().as_bytes(),
            0o600,
        )?;
        files::write(&pki.path(CA_FILE), cert.pem().as_bytes(), 0o644)?;
        pki.save(&Index::default())?;
        pki.write_crl(&mut Index::default())?;
        Ok(pki)
    }

    /// Opens the CA in `dir`.
    pub fn open(dir: &Path) -> Result<Pki, TlsError> {
        if !dir.join(CA_KEY_FILE).exists() {
            return Err(TlsError::Usage(format!(
                "{} holds no CA (make one with `duplex pki init --dir {}`)",
                dir.display(),
                dir.display()
            )));
        }
        Pki::lock(dir)
    }

    fn lock(dir: &Path) -> Result<Pki, TlsError> {
        use std::os::fd::AsRawFd;
        let path = dir.join(".lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(TlsError::io("cannot open", &path))?;
        // SAFETY: flock on a file descriptor this function owns.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(TlsError::io("cannot lock", &path)(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Pki {
            dir: dir.to_path_buf(),
            _lock: f,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.join(f)
    }

    fn load(&self) -> Result<Index, TlsError> {
        let p = self.path(INDEX_FILE);
        let text = std::fs::read(&p).map_err(TlsError::io("cannot read", &p))?;
        serde_json::from_slice(&text).map_err(|e| TlsError::file(&p, e))
    }

    fn save(&self, index: &Index) -> Result<(), TlsError> {
        let text = serde_json::to_vec_pretty(index).map_err(|e| TlsError::Make(e.to_string()))?;
        files::write(&self.path(INDEX_FILE), &text, 0o600)
    }

    fn ca(&self) -> Result<(Certificate, KeyPair), TlsError> {
        let read = |f: &str| {
            let p = self.path(f);
            std::fs::read_to_string(&p).map_err(TlsError::io("cannot read", &p))
        };
        let key = KeyPair::from_pem(&read(CA_KEY_FILE)?)
            .map_err(|e| TlsError::file(&self.path(CA_KEY_FILE), e))?;
        let params = CertificateParams::from_ca_cert_pem(&read(CA_FILE)?)
            .map_err(|e| TlsError::file(&self.path(CA_FILE), e))?;
        Ok((params.self_signed(&key)?, key))
    }

    /// Every certificate issued here.
    pub fn list(&self) -> Result<Vec<Entry>, TlsError> {
        Ok(self.load()?.entries)
    }

    /// Issues a certificate for an identity that holds none yet (use
    /// [`Pki::rotate`] to replace one).
    pub fn issue(&self, req: &IssueRequest) -> Result<Entry, TlsError> {
        let mut index = self.load()?;
        let name = req.identity.dns_name();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if let Some(e) = index
            .entries
            .iter()
            .find(|e| e.name == name && e.revoked_at.is_none() && e.not_after > now)
        {
            return Err(TlsError::Usage(format!(
                "{name} already has a current certificate (serial {}, bundle {}); replace it with `duplex pki rotate {name}` or revoke it first",
                e.serial,
                e.bundle.display()
            )));
        }
        let entry = self.make(req)?;
        index.entries.push(entry.clone());
        self.save(&index)?;
        self.copy_crl(&index)?;
        Ok(entry)
    }

    /// A new key and certificate for `name` with the same addresses, into
    /// the same bundle; the ones it replaces are revoked.
    pub fn rotate(&self, name: &str, days: Option<i64>) -> Result<Entry, TlsError> {
        let mut index = self.load()?;
        let identity = Identity::parse(name)?;
        let Some(old) = index
            .entries
            .iter()
            .rev()
            .find(|e| e.name == name && e.revoked_at.is_none())
            .cloned()
        else {
            return Err(TlsError::Usage(format!(
                "{name} has no certificate to rotate; issue one with `duplex pki issue`"
            )));
        };
        let req = IssueRequest {
            identity,
            ips: old.ips.clone(),
            dns: old.dns.clone(),
            days: days.unwrap_or(DEFAULT_DAYS),
            out: Some(old.bundle.clone()),
            validity: None,
        };
        let entry = self.make(&req)?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        for e in index.entries.iter_mut().filter(|e| e.name == name) {
            e.revoked_at.get_or_insert(now);
        }
        index.entries.push(entry.clone());
        self.save(&index)?;
        self.write_crl(&mut index)?;
        Ok(entry)
    }

    /// Revokes every certificate of `name`; the new CRL goes into every
    /// bundle made here. Returns the serials revoked.
    pub fn revoke(&self, name: &str) -> Result<Vec<String>, TlsError> {
        Identity::parse(name)?;
        let mut index = self.load()?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut serials = Vec::new();
        for e in index
            .entries
            .iter_mut()
            .filter(|e| e.name == name && e.revoked_at.is_none())
        {
            e.revoked_at = Some(now);
            serials.push(e.serial.clone());
        }
        if serials.is_empty() {
            return Err(TlsError::Usage(format!(
                "{name} has no certificate that is not revoked already"
            )));
        }
        self.save(&index)?;
        self.write_crl(&mut index)?;
        Ok(serials)
    }

    fn make(&self, req: &IssueRequest) -> Result<Entry, TlsError> {
        let server = !matches!(req.identity, Identity::Operator { .. });
        if server && req.ips.is_empty() && req.dns.is_empty() {
            return Err(TlsError::Usage(format!(
                "{} serves: give the addresses it is reached at (--ip, --dns)",
                req.identity.describe()
            )));
        }
        if !(1..=MAX_DAYS).contains(&req.days) {
            return Err(TlsError::Usage(format!(
                "validity {} days is outside 1..={MAX_DAYS}",
                req.days
            )));
        }
        let (ca, ca_key) = self.ca()?;
        let name = req.identity.dns_name();
        let now = OffsetDateTime::now_utc();
        let (not_before, not_after) = req
            .validity
            .unwrap_or((now - BACKDATE, now + Duration::days(req.days)));
        let serial = serial_bytes()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, name.clone());
        p.subject_alt_names = sans(&name, req)?;
        p.key_usages = vec![Ku::DigitalSignature];
        p.extended_key_usages = if server {
            vec![Eku::ServerAuth, Eku::ClientAuth]
        } else {
            vec![Eku::ClientAuth]
        };
        p.not_before = not_before;
        p.not_after = not_after;
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        p.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &ca, &ca_key)?;
        let out = req
            .out
            .clone()
            .unwrap_or_else(|| self.path(ISSUED_DIR).join(&name));
        files::private_dir(&out)?;
        files::write(&out.join(KEY_FILE), key.serialize_pem().as_bytes(), 0o600)?;
        files::write(&out.join(CERT_FILE), cert.pem().as_bytes(), 0o644)?;
        let ca_pem = std::fs::read(self.path(CA_FILE))
            .map_err(TlsError::io("cannot read", &self.path(CA_FILE)))?;
        files::write(&out.join(CA_FILE), &ca_pem, 0o644)?;
        Ok(Entry {
            name,
            serial: hex(&serial),
            ips: req.ips.clone(),
            dns: req.dns.clone(),
            not_before: not_before.unix_timestamp(),
            not_after: not_after.unix_timestamp(),
            bundle: out,
            revoked_at: None,
        })
    }

    fn write_crl(&self, index: &mut Index) -> Result<(), TlsError> {
        let (ca, ca_key) = self.ca()?;
        index.crl_number += 1;
        let now = OffsetDateTime::now_utc();
        let mut revoked = Vec::new();
        for e in &index.entries {
            let Some(at) = e.revoked_at else { continue };
            let bytes = unhex(&e.serial)
                .ok_or_else(|| TlsError::file(&self.path(INDEX_FILE), "a serial is not hex"))?;
            revoked.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&bytes),
                revocation_time: OffsetDateTime::from_unix_timestamp(at).unwrap_or(now),
                reason_code: None,
                invalidity_date: None,
            });
        }
        let crl = CertificateRevocationListParams {
            this_update: now - BACKDATE,
            next_update: now + Duration::days(DEFAULT_DAYS),
            crl_number: SerialNumber::from(index.crl_number),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&ca, &ca_key)?;
        files::write(&self.path(CRL_FILE), crl.pem()?.as_bytes(), 0o644)?;
        self.save(index)?;
        self.copy_crl(index)
    }

    /// Puts the current CRL into every bundle made here that still exists.
    fn copy_crl(&self, index: &Index) -> Result<(), TlsError> {
        let crl = std::fs::read(self.path(CRL_FILE))
            .map_err(TlsError::io("cannot read", &self.path(CRL_FILE)))?;
        let mut dirs: Vec<&PathBuf> = index.entries.iter().map(|e| &e.bundle).collect();
        dirs.sort();
        dirs.dedup();
        for d in dirs.into_iter().filter(|d| d.is_dir()) {
            files::write(&d.join(CRL_FILE), &crl, 0o644)?;
        }
        Ok(())
    }
}

fn sans(name: &str, req: &IssueRequest) -> Result<Vec<SanType>, TlsError> {
    let dns = |n: &str| {
        n.to_string()
            .try_into()
            .map(SanType::DnsName)
            .map_err(|_| TlsError::Usage(format!("`{n}` is not a DNS name")))
    };
    let mut v = vec![dns(name)?];
    for n in &req.dns {
        if n.ends_with(&format!(".{}", duplex_core::identity::DOMAIN)) {
            return Err(TlsError::Usage(format!(
                "--dns {n}: names under .{} are identities, not addresses",
                duplex_core::identity::DOMAIN
            )));
        }
        v.push(dns(n)?);
    }
    v.extend(req.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    Ok(v)
}

/// A random positive 128-bit serial number.
fn serial_bytes() -> Result<[u8; 16], TlsError> {
    let mut b = files::random::<16>()?;
    b[0] = (b[0] & 0x7f) | 0x01;
    Ok(b)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}
