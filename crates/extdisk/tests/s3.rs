//! The external disk on a real S3-protocol server: `s3s-fs` (from
//! crates.io, installed by setup.sh) on a loopback port, serving a
//! temporary directory. Versions, pruning, a restarted client, and a
//! damaged object refused — the same as on the local directory.

use duplex_extdisk::{ExternalDisk, Kind, S3Target, KEEP};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ACCESS: &str = "duplex-test";
const SECRET: &str = "duplex-test-secret-key";
const BUCKET: &str = "extdisk";
/// How long the server may take to listen.
const START_LIMIT: Duration = Duration::from_secs(20);

/// The server, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn start(root: &std::path::Path, port: u16) -> Server {
    std::fs::create_dir_all(root.join(BUCKET)).unwrap();
    let child = Command::new("s3s-fs")
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS, "--secret-key", SECRET])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start s3s-fs (an S3-protocol server from crates.io; ./setup.sh installs it)");
    let server = Server(child);
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < START_LIMIT,
            "s3s-fs did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

fn target(port: u16) -> S3Target {
    S3Target {
        endpoint: format!("http://127.0.0.1:{port}"),
        bucket: BUCKET.into(),
        region: "us-east-1".into(),
        access_key_id: ACCESS.into(),
        secret_access_key: SECRET.into(),
    }
}

#[tokio::test]
async fn versions_checks_and_damage_on_a_real_s3_server() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = start(root.path(), port);
    let disk = ExternalDisk::s3(&target(port)).unwrap();

    assert_eq!(disk.latest("ka", Kind::Counters).await.unwrap(), None);
    for i in 1..=(KEEP as u64 + 2) {
        let v = disk
            .put("ka", Kind::Counters, format!("counters {i}").as_bytes())
            .await
            .unwrap();
        assert_eq!(v, i);
    }
    assert_eq!(
        disk.versions("ka", Kind::Counters).await.unwrap(),
        (3..=KEEP as u64 + 2).collect::<Vec<_>>()
    );
    // A new client (a restarted controller) reads what the first wrote.
    let again = ExternalDisk::s3(&target(port)).unwrap();
    let (v, data) = again.latest("ka", Kind::Counters).await.unwrap().unwrap();
    assert_eq!(
        (v, data.as_slice()),
        (KEEP as u64 + 2, b"counters 10".as_slice())
    );

    // A LAF backup damaged behind the store's back is refused by name.
    again.put("ka", Kind::Laf, b"service data").await.unwrap();
    let file = root
        .path()
        .join(BUCKET)
        .join("vms/ka/laf")
        .join(format!("{:020}", 1));
    let mut bytes = std::fs::read(&file).expect("s3s-fs keeps objects as files");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let e = again.latest("ka", Kind::Laf).await.unwrap_err().to_string();
    assert!(e.contains("damaged") && e.contains("vms/ka/laf"), "{e}");

    // Wrong credentials are an error naming the store, not a panic.
    let mut wrong = target(port);
    wrong.secret_access_key = "nope".into();
    let e = ExternalDisk::s3(&wrong)
        .unwrap()
        .latest("ka", Kind::Counters)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("external disk"), "{e}");
}
