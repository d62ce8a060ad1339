//! Bad input to the binary gets a clear error and a non-zero exit, never a
//! panic. These need no lab (QEMU must be installed for the agent cases).

use std::process::{Command, Output};

fn duplex(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_duplex"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run duplex")
}

fn fails_with(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {err}");
    assert!(
        err.contains(needle),
        "stderr should mention {needle:?}: {err}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
}

/// A throwaway PKI in a temporary directory.
fn pki() -> (tempfile::TempDir, duplex_tls::test_pki::TestPki) {
    let d = tempfile::tempdir().unwrap();
    let p = duplex_tls::test_pki::TestPki::new(&d.path().join("pki")).unwrap();
    (d, p)
}

#[test]
fn agent_refuses_a_port_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (d, pki) = pki();
    let tls = pki.agent("t").unwrap().dir;
    let out = duplex(
        &[
            "agent",
            "--name",
            "t",
            "--listen",
            &addr,
            "--data-dir",
            d.path().to_str().unwrap(),
            "--tls-dir",
            tls.to_str().unwrap(),
            "--accel",
            "tcg",
        ],
        &[],
    );
    fails_with(&out, &format!("cannot listen on {addr}"));
}

#[test]
fn agent_without_a_bundle_says_how_to_make_one() {
    let d = tempfile::tempdir().unwrap();
    let out = duplex(
        &[
            "agent",
            "--name",
            "t",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            d.path().to_str().unwrap(),
            "--accel",
            "tcg",
        ],
        &[],
    );
    fails_with(&out, "tls/ca.crt");
    fails_with(&out, "duplex pki issue");
}

#[test]
fn agent_says_when_qemu_is_missing() {
    let out = duplex(
        &[
            "agent",
            "--name",
            "t",
            "--listen",
            "127.0.0.1:0",
            "--accel",
            "tcg",
        ],
        &[("DUPLEX_QEMU", "/nonexistent/qemu-system-x86_64")],
    );
    fails_with(&out, "not found");
    fails_with(&out, "setup.sh");
}

#[test]
fn unreachable_agent_is_named() {
    let (_d, pki) = pki();
    let op = pki
        .operator(duplex_core::identity::Scope::Admin)
        .unwrap()
        .dir;
    let out = duplex(
        &[
            "vm",
            "list",
            "--agent",
            "https://127.0.0.1:9",
            "--tls-dir",
            op.to_str().unwrap(),
        ],
        &[],
    );
    fails_with(&out, "unreachable");
}

#[test]
fn an_operator_without_a_bundle_is_told_how_to_make_one() {
    let d = tempfile::tempdir().unwrap();
    let none = d.path().join("none");
    let out = duplex(
        &[
            "host",
            "list",
            "--controller",
            "https://127.0.0.1:9",
            "--tls-dir",
            none.to_str().unwrap(),
        ],
        &[],
    );
    fails_with(&out, "duplex pki issue operator");
}

#[test]
fn pki_commands_refuse_bad_input_and_say_why() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("ca");
    let dir = dir.to_str().unwrap();
    let out = duplex(&["pki", "--dir", dir, "issue", "operator", "ann"], &[]);
    fails_with(&out, "duplex pki init");
    assert!(duplex(&["pki", "--dir", dir, "init"], &[]).status.success());
    fails_with(
        &duplex(&["pki", "--dir", dir, "init"], &[]),
        "already holds a CA",
    );
    fails_with(
        &duplex(&["pki", "--dir", dir, "issue", "agent", "h1"], &[]),
        "--ip",
    );
    fails_with(
        &duplex(
            &[
                "pki", "--dir", dir, "issue", "agent", "H_1", "--ip", "10.0.0.1",
            ],
            &[],
        ),
        "not a valid name",
    );
    fails_with(
        &duplex(&["pki", "--dir", dir, "revoke", "h1.agent.duplex"], &[]),
        "no certificate",
    );
    fails_with(
        &duplex(&["pki", "--dir", dir, "revoke", "root"], &[]),
        "not a Duplex identity name",
    );
    let ok = duplex(
        &[
            "pki", "--dir", dir, "issue", "operator", "ann", "--scope", "read",
        ],
        &[],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let list = duplex(&["pki", "--dir", dir, "list"], &[]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("ann.read.operator.duplex") && text.contains("valid"),
        "{text}"
    );
}

#[test]
fn impossible_vm_spec_is_refused_before_sending() {
    let out = duplex(
        &[
            "vm",
            "create",
            "x",
            "--ip",
            "10.9.9.9",
            "--memory-mib",
            "1",
            "--agent",
            "http://127.0.0.1:9",
        ],
        &[],
    );
    fails_with(&out, "memory_mib");
}

#[test]
fn a_migration_straight_to_an_agent_says_it_is_plain() {
    let out = duplex(
        &[
            "vm",
            "migrate",
            "x",
            "--to",
            "https://127.0.0.1:9",
            "--agent",
            "http://127.0.0.1:9",
        ],
        &[],
    );
    fails_with(&out, "--plain");
}

#[test]
fn switch_arguments_are_checked() {
    let create = |extra: &[&str]| {
        let mut a = vec!["vm", "create", "x", "--ip", "10.9.9.9"];
        a.extend(extra);
        a.extend(["--agent", "http://127.0.0.1:9"]);
        duplex(&a, &[])
    };
    fails_with(&create(&["--hold-at", "switch"]), "--replicated");
    fails_with(&create(&["--hold-at", "none"]), "--replicated");
    fails_with(
        &create(&["--replicated", "--hold-at", "rack"]),
        "is not `host`, `switch` or `none`",
    );
    fails_with(
        &duplex(&["switch", "--port", "h1=core"], &[]),
        "neither host nor edge",
    );
    fails_with(
        &duplex(&["switch", "--port", "nosuchif0"], &[]),
        "nosuchif0",
    );
    fails_with(
        &duplex(&["lab", "up", "--lab", "zz", "--switch", "hub"], &[]),
        "neither `bridge` nor `duplex`",
    );
}

#[test]
fn lab_arguments_are_checked() {
    fails_with(
        &duplex(&["lab", "up", "--hosts", "9", "--lab", "zz"], &[]),
        "hosts",
    );
    fails_with(
        &duplex(&["lab", "up", "--lab", "Bad_Name"], &[]),
        "Bad_Name",
    );
}

#[test]
fn lab_down_with_nothing_up() {
    fails_with(
        &duplex(&["lab", "down", "--lab", "nothng"], &[]),
        "nothing to take down",
    );
}

#[test]
fn unknown_image_is_named() {
    let out = duplex(&["accel", "--image-dir", "/nonexistent-images"], &[]);
    fails_with(&out, "duplex image build");
}

/// A controller refuses a bad topology file at start, naming the problem.
#[test]
fn controller_refuses_bad_topology_files() {
    let dir = std::env::temp_dir().join(format!("duplex-topo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "loop",
            r#"{"switches":["r1"],"hosts":[{"name":"h1","attach":"r1"}],"links":[{"a":"r1","b":"r1","capacity_gbps":10}]}"#,
            "self-loop",
        ),
        (
            "unknown-switch",
            r#"{"switches":["r1"],"hosts":[{"name":"h1","attach":"r9"}]}"#,
            "`r9`, which is not a switch",
        ),
        (
            "negative",
            r#"{"switches":["r1","r2"],"hosts":[{"name":"h1","attach":"r1"},{"name":"h2","attach":"r2"}],"links":[{"a":"r1","b":"r2","capacity_gbps":-5}]}"#,
            "capacity_gbps -5 must be positive",
        ),
        (
            "disconnected",
            r#"{"switches":["r1","r2"],"hosts":[{"name":"h1","attach":"r1"},{"name":"h2","attach":"r2"}]}"#,
            "disconnected",
        ),
        (
            "unknown-field",
            r#"{"switches":["r1"],"hosts":[{"name":"h1","attach":"r1","rack":"x"}]}"#,
            "unknown field `rack`",
        ),
        ("not-json", "switches: [r1]", "topology file"),
    ];
    for (name, text, needle) in cases {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, text).unwrap();
        let out = duplex(
            &[
                "controller",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                dir.join("data").to_str().unwrap(),
                "--topology",
                path.to_str().unwrap(),
            ],
            &[],
        );
        fails_with(&out, needle);
        fails_with(&out, path.to_str().unwrap());
    }
    let out = duplex(
        &[
            "controller",
            "--listen",
            "127.0.0.1:0",
            "--topology",
            "/nonexistent/topo.json",
        ],
        &[],
    );
    fails_with(&out, "/nonexistent/topo.json");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `duplex image build --spec` refuses a spec that breaks a rule before
/// it bootstraps anything, naming the field.
#[test]
fn image_specs_that_break_a_rule_name_the_field() {
    let d = tempfile::tempdir().unwrap();
    let good = "name = \"svc\"\npackages = [\"kamailio\"]\n\n[[files]]\npath = \"/etc/svc.cfg\"\nsource = \"svc.cfg\"\n\n[service]\nname = \"svc\"\nstart = [\"/usr/sbin/svc\"]\n";
    let cases: &[(&str, &str, &str)] = &[
        ("packages =", "pakages =", "pakages"),
        ("\"kamailio\"", "\"Kam ailio\"", "`packages[0]`"),
        (
            "path = \"/etc/svc.cfg\"",
            "path = \"etc/svc.cfg\"",
            "`files[0].path`",
        ),
        (
            "start = [\"/usr/sbin/svc\"]",
            "start = [\"svc\"]",
            "`service.start`",
        ),
        (
            "name = \"svc\"\npackages",
            "name = \"../svc\"\npackages",
            "`name`",
        ),
        // The source file is missing: found before the bootstrap.
        (
            "source = \"svc.cfg\"",
            "source = \"missing.cfg\"",
            "`files[0].source`",
        ),
    ];
    std::fs::write(d.path().join("svc.cfg"), "x").unwrap();
    for (from, to, want) in cases {
        assert!(good.contains(from), "{from}");
        let spec = d.path().join("spec.toml");
        std::fs::write(&spec, good.replacen(from, to, 1)).unwrap();
        let out = duplex(
            &[
                "image",
                "build",
                "--spec",
                spec.to_str().unwrap(),
                "--image-dir",
                d.path().join("images").to_str().unwrap(),
                "--cache-dir",
                d.path().join("cache").to_str().unwrap(),
            ],
            &[],
        );
        fails_with(&out, want);
        assert!(!d.path().join("images").exists(), "{to}: nothing is built");
    }
    let out = duplex(&["image", "build", "--spec", "/nonexistent/spec.toml"], &[]);
    fails_with(&out, "/nonexistent/spec.toml");
}

/// User data that breaks a rule is refused before anything is sent,
/// naming the field.
#[test]
fn user_data_that_breaks_a_rule_names_the_field() {
    let d = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "[[files]]\npath = \"etc/x\"\ncontent = \"y\"\n",
            "`files[0].path`",
        ),
        (
            "[[files]]\npath = \"/etc/x\"\ncontent = \"y\"\nmode = \"4755\"\n",
            "`files[0].mode`",
        ),
        ("[env]\nlower = \"v\"\n", "`env.lower`"),
        ("[[write_files]]\npath = \"/x\"\n", "write_files"),
        ("[env\n", "user data file"),
    ];
    for (text, want) in cases {
        let file = d.path().join("ud.toml");
        std::fs::write(&file, text).unwrap();
        for create in [
            vec![
                "vm",
                "create",
                "x",
                "--ip",
                "10.9.9.9",
                "--agent",
                "http://127.0.0.1:9",
            ],
            vec![
                "pair",
                "create",
                "p",
                "--vip",
                "10.9.9.8",
                "--member",
                "a=10.9.9.9",
                "--member",
                "b=10.9.9.10",
            ],
        ] {
            let mut args = create.clone();
            args.extend(["--user-data", file.to_str().unwrap()]);
            fails_with(&duplex(&args, &[("DUPLEX_LAB", "")]), want);
        }
    }
}
