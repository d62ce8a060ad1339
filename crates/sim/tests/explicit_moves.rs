//! Explicit destinations pass the same filters as placement's own choice,
//! and a pair's ACT is not live-migrated unless the operator says so: the
//! real controller's API over a small simulated cluster (real clock).

use axum::http::{Method, StatusCode};
use duplex_sim::cluster::{Cluster, Size};
use serde_json::{json, Value};

/// `Size::FOUR_HOSTS` (its doc says where everything runs).
async fn cluster() -> Cluster {
    Cluster::start(Size::FOUR_HOSTS, 3)
        .await
        .expect("the cluster")
}

fn says(answer: &Value, what: &str) -> bool {
    answer.to_string().contains(what)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_destinations_are_filtered_and_an_act_moves_the_s1_way() {
    let c = cluster().await;
    // h0003 all but full: 80 of its 65,536 MiB left.
    let big =
        json!({"spec": {"name": "big", "ip": "10.31.0.9", "memory_mib": 65200}, "host": "h0003"});
    let (s, a) = c.operator(Method::POST, "/v1/vms", Some(big)).await;
    assert!(s.is_success(), "the big VM: {s} {a}");

    // The ACT is refused without --plain, pointed to pair migration.
    let to_h1 = json!({"to": "h0001"});
    let (s, a) = c
        .operator(Method::POST, "/v1/vms/vm00000/migrate", Some(to_h1.clone()))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{a}");
    assert!(
        says(&a, "ACT of pair p00000") && says(&a, "pair migrate p00000"),
        "{a}"
    );

    // An explicit host that fails a filter is refused with the filter.
    let (s, a) = c
        .operator(
            Method::POST,
            "/v1/vms/vm00005/migrate",
            Some(json!({"to": "h0003"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{a}");
    assert!(says(&a, "capacity"), "{a}");
    let (s, a) = c
        .operator(
            Method::POST,
            "/v1/pairs/p00000/migrate",
            Some(json!({"to": "h0003"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{a}");
    assert!(says(&a, "h0003 cannot take `vm00000`: capacity"), "{a}");

    // An SBY moves as asked; an ACT too once the operator says --plain.
    let (s, a) = c
        .operator(Method::POST, "/v1/vms/vm00001/migrate", Some(to_h1))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "the SBY: {a}");
    let plain = json!({"to": "h0000", "plain": true});
    let (s, a) = c
        .operator(Method::POST, "/v1/vms/vm00002/migrate", Some(plain))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "the ACT with plain: {a}");
}
