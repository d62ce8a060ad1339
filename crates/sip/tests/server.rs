//! The UDP shell with real sockets: plain serving, health check, and
//! replication against a fake middleware on a unix socket (ordering rule,
//! initial dump, standby events, degraded answers).

mod common;

use common::{uac, uas, Call};
use duplex_sip::message::{self, StartLine};
use duplex_sip::{health_check, Server, SyncOp};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UdpSocket, UnixListener};
use tokio::sync::oneshot;
use tokio::time::Instant;

async fn recv(sock: &UdpSocket, wait: Duration) -> Option<(u16, message::Message, Instant)> {
    let mut buf = vec![0u8; 65_536];
    let (n, _) = tokio::time::timeout(wait, sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    let m = message::parse(&buf[..n]).expect("server reply parses");
    match m.start {
        StartLine::Response { code, .. } => Some((code, m, Instant::now())),
        StartLine::Request { .. } => panic!("server sent a request"),
    }
}

fn sock_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("duplex-sip-{}-{name}.sock", std::process::id()))
}

#[tokio::test]
async fn serves_calls_without_replication_and_answers_health_checks() {
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async move {
        let _ = stopped.await;
    }));
    let rtt = health_check(addr).await.unwrap();
    assert!(rtt < Duration::from_secs(1));

    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let call = Call { n: 1 };
    client.send_to(&call.invite(), addr).await.unwrap();
    let mut got = Vec::new();
    let mut tag = None;
    while let Some((code, m, _)) = recv(&client, Duration::from_secs(2)).await {
        got.push(code);
        if code == 200 {
            tag = m.to_tag().unwrap();
            break;
        }
    }
    assert_eq!(got, [100, 180, 200]);
    let tag = tag.unwrap();
    client.send_to(&call.ack(&tag), addr).await.unwrap();
    client.send_to(b"\x00\x01garbage", addr).await.unwrap();
    client.send_to(&call.bye(&tag), addr).await.unwrap();
    let (code, m, _) = recv(&client, Duration::from_secs(2)).await.unwrap();
    assert_eq!((code, m.to_tag().unwrap()), (200, Some(tag)));

    stop.send(()).unwrap();
    let report = task.await.unwrap().unwrap();
    assert_eq!(report.uas.malformed_dropped, 1);
    assert_eq!(report.uas.requests.get("OPTIONS"), Some(&1));
    assert_eq!(
        (report.shell.sync_skipped, report.shell.sync_failed),
        (3, 0),
        "Put, Put (ACK), Del: no replication"
    );
}

#[tokio::test]
async fn health_check_times_out_when_nothing_answers() {
    // A bound socket that never answers.
    let mute = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let err = health_check(mute.local_addr().unwrap()).await.unwrap_err();
    assert!(
        matches!(err, duplex_sip::SipError::HealthTimeout { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn freebind_binds_an_address_that_is_not_local() {
    // 192.0.2.0/24 (TEST-NET-1) is on no interface here: a VIP on the SBY.
    let s = duplex_sip::server::bind_freebind("192.0.2.55:0".parse().unwrap()).unwrap();
    assert_eq!(s.local_addr().unwrap().ip().to_string(), "192.0.2.55");
    assert!(
        std::net::UdpSocket::bind("192.0.2.55:0").is_err(),
        "without IP_FREEBIND it fails"
    );
}

/// What the fake middleware saw: (request, when its answer was sent).
type Log = Arc<Mutex<Vec<(Value, Instant)>>>;

/// A middleware that answers `get_all` with `dump`, then pushes `events`,
/// and answers put/del after `delay` (`del` with `replicated:false`).
async fn fake_middleware(
    listener: UnixListener,
    dump: Value,
    events: Vec<Value>,
    delay: Duration,
    log: Log,
) {
    let Ok((conn, _)) = listener.accept().await else {
        return;
    };
    let (rd, mut wr) = conn.into_split();
    let mut lines = BufReader::new(rd).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let req: Value = serde_json::from_str(&line).unwrap();
        let answer = match req["op"].as_str() {
            Some("get_all") => json!({"ok": true, "entries": dump}),
            Some("put") => {
                tokio::time::sleep(delay).await;
                json!({"ok": true})
            }
            Some("del") => {
                tokio::time::sleep(delay).await;
                json!({"ok": true, "replicated": false})
            }
            _ => json!({"ok": false, "error": "unknown"}),
        };
        wr.write_all(format!("{answer}\n").as_bytes())
            .await
            .unwrap();
        log.lock().unwrap().push((req.clone(), Instant::now()));
        if req["op"] == "get_all" {
            for ev in &events {
                wr.write_all(format!("{ev}\n").as_bytes()).await.unwrap();
            }
        }
    }
}

#[tokio::test]
async fn replication_order_dump_and_standby_events() {
    // Two calls established on another VM: one arrives in the dump, one as an event.
    let mut other = uas(77);
    let mut state = Vec::new();
    for n in [1, 2] {
        let call = Call { n };
        let out = other.handle(&call.invite(), uac(), 0);
        let tag = common::to_tag(&out.replies[2]).unwrap();
        let ack = other.handle(&call.ack(&tag), uac(), 1).sync;
        let Some(SyncOp::Put { key, value }) = ack.into_iter().next() else {
            panic!("no Put on ACK")
        };
        state.push((call, tag, key, value));
    }
    let dump = json!({ state[0].2.clone(): state[0].3.clone() });
    let event = json!({"event": "put", "key": state[1].2, "value": state[1].3});

    let path = sock_path("order");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let log: Log = Arc::default();
    let delay = Duration::from_millis(300);
    tokio::spawn(fake_middleware(
        listener,
        dump,
        vec![event],
        delay,
        log.clone(),
    ));

    let server = Server::bind("127.0.0.1:0".parse().unwrap(), Some(path.clone())).unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async move {
        let _ = stopped.await;
    }));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    // Call 1 came with the dump: its BYE is answered 200 with the same tag,
    // but only after the middleware answered the Del.
    let (call, tag, key, _) = &state[0];
    let sent = Instant::now();
    client.send_to(&call.bye(tag), addr).await.unwrap();
    let (code, m, at) = recv(&client, Duration::from_secs(3)).await.unwrap();
    assert_eq!(
        (code, m.to_tag().unwrap().as_deref()),
        (200, Some(tag.as_str()))
    );
    assert!(
        at - sent >= delay,
        "200 to BYE before its Del was answered ({:?})",
        at - sent
    );
    {
        let log = log.lock().unwrap();
        let del = log
            .iter()
            .find(|(r, _)| r["op"] == "del")
            .expect("Del sent");
        assert_eq!(del.0["key"], json!(key));
        assert!(del.1 <= at);
    }

    // Call 2 came as an event: known too.
    let (call, tag, _, _) = &state[1];
    client.send_to(&call.bye(tag), addr).await.unwrap();
    let (code, m, _) = recv(&client, Duration::from_secs(3)).await.unwrap();
    assert_eq!(
        (code, m.to_tag().unwrap().as_deref()),
        (200, Some(tag.as_str()))
    );

    // A new call: 100, 180 and 200 only once the Put is answered (a
    // provisional answer would stop the client's retransmissions); a
    // retransmitted INVITE meanwhile does not jump the queue.
    let call = Call { n: 3 };
    let sent = Instant::now();
    client.send_to(&call.invite(), addr).await.unwrap();
    client.send_to(&call.invite(), addr).await.unwrap();
    let (c100, _, t100) = recv(&client, Duration::from_secs(3)).await.unwrap();
    let (c180, _, t180) = recv(&client, Duration::from_secs(3)).await.unwrap();
    assert_eq!((c100, c180), (100, 180));
    assert!(
        t100 - sent >= delay && t180 - sent >= delay,
        "provisional responses sent before the Put was answered"
    );
    let (c200, m200, t200) = recv(&client, Duration::from_secs(3)).await.unwrap();
    let (c200b, m200b, t200b) = recv(&client, Duration::from_secs(3)).await.unwrap();
    assert_eq!((c200, c200b), (200, 200));
    assert_eq!(m200, m200b, "the retransmission got the same 200");
    assert!(
        t200 - sent >= delay && t200b - sent >= delay,
        "200 OK sent before its Put was answered"
    );
    let put_answered = log
        .lock()
        .unwrap()
        .iter()
        .find(|(r, _)| r["op"] == "put")
        .map(|(_, t)| *t)
        .unwrap();
    assert!(put_answered <= t200);
    let new_key = format!(
        "dialog/{}/{}/{}",
        call.call_id(),
        m200.to_tag().unwrap().unwrap(),
        call.caller_tag()
    );
    assert!(log
        .lock()
        .unwrap()
        .iter()
        .any(|(r, _)| r["op"] == "put" && r["key"] == json!(new_key)));

    stop.send(()).unwrap();
    let report = task.await.unwrap().unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(report.shell.dumps_loaded, 1);
    assert_eq!(report.shell.events_applied, 1);
    assert_eq!(
        report.shell.sync_unreplicated, 2,
        "two Dels answered replicated:false"
    );
    assert!(report.shell.sync_replicated >= 1);
    assert_eq!(report.uas.retransmissions_absorbed, 1);
}

#[tokio::test]
async fn absent_sync_socket_degrades_but_serves() {
    let path = sock_path("absent");
    let _ = std::fs::remove_file(&path);
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), Some(path)).unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async move {
        let _ = stopped.await;
    }));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(&Call { n: 1 }.invite(), addr).await.unwrap();
    let mut codes = Vec::new();
    while let Some((code, _, _)) = recv(&client, Duration::from_secs(2)).await {
        codes.push(code);
        if code == 200 {
            break;
        }
    }
    assert_eq!(codes, [100, 180, 200]);
    stop.send(()).unwrap();
    let report = task.await.unwrap().unwrap();
    assert_eq!(report.shell.sync_failed, 1);
}

#[tokio::test]
async fn freebind_works_for_ipv6_too() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    let s = duplex_sip::server::bind_freebind("[::1]:0".parse().unwrap()).unwrap();
    assert!(s.local_addr().unwrap().is_ipv6());
    let s = duplex_sip::server::bind_freebind("[2001:db8::55]:0".parse().unwrap()).unwrap();
    assert_eq!(s.local_addr().unwrap().ip().to_string(), "2001:db8::55");
}
