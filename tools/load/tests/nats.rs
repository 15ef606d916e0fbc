//! `switchboard-load pairs --nats` against a real 2-node NATS cluster
//! (Debian's `nats-server`, which scripts/setup.sh installs): two
//! processes on free 127.0.0.1 ports, routed to each other, core NATS.
//! The baseline of scripts/bench.sh must verify every chat as strictly as
//! a switchboard run, and a lost NATS server must end its users (the run
//! fails) rather than be reconnected behind the generator's back.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().unwrap().port()
}

/// Polls `cond` every 20 ms until it holds; panics after `limit`.
fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(20));
    }
}

fn nats_server() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file());
    let exe = on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"));
    assert!(
        exe.is_file(),
        "nats-server is missing: run scripts/setup.sh"
    );
    exe
}

/// A nats-server process, killed when dropped.
struct Node {
    child: Child,
    port: u16,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node(exe: &Path, name: &str, port: u16, route: u16, peer_route: u16) -> Node {
    let child = Command::new(exe)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-n", name])
        .args(["--cluster_name", "load-test"])
        .args(["--cluster", &format!("nats://127.0.0.1:{route}")])
        .args(["--routes", &format!("nats://127.0.0.1:{peer_route}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server");
    let node = Node { child, port };
    eventually(Duration::from_secs(10), "nats-server to listen", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    node
}

/// Two nodes routed to each other. The route may come up after both
/// listen: the generator waits for it (its settle step) before it starts.
fn cluster() -> (Node, Node) {
    let exe = nats_server();
    let (r1, r2) = (free_port(), free_port());
    let n1 = node(&exe, "n1", free_port(), r1, r2);
    let n2 = node(&exe, "n2", free_port(), r2, r1);
    (n1, n2)
}

fn load(a: &Node, b: &Node, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard-load"));
    cmd.args(["--quiet", "pairs", "--nats"])
        .args(["--a", &format!("127.0.0.1:{}", a.port)])
        .args(["--b", &format!("127.0.0.1:{}", b.port)])
        .args(extra);
    cmd
}

fn summary(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "no JSON summary ({e}): stdout {stdout:?}, stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn both_ways_across_the_route_every_chat_is_acked_and_verified() {
    let (n1, n2) = cluster();
    let out = load(
        &n1,
        &n2,
        &[
            "--pairs",
            "4",
            "--messages",
            "300",
            "--window",
            "8",
            "--both-ways",
            "--outcome-timeout-secs",
            "20",
        ],
    )
    .output()
    .unwrap();
    let s = summary(&out);
    assert!(out.status.success(), "run failed: {s}");
    assert_eq!(s["transport"], "nats");
    assert_eq!(s["ok"], true);
    assert_eq!(s["sent"], 2400);
    assert_eq!(s["received"], 2400, "every chat arrived once: {s}");
    assert_eq!(s["outcomes"]["delivered"], 2400, "every chat acked: {s}");
    let violations = s["violations"].as_object().unwrap();
    assert!(violations.values().all(|v| v == 0), "{s}");
}

#[test]
fn a_lost_nats_server_ends_its_users_instead_of_reconnecting() {
    let (n1, mut n2) = cluster();
    let ready = std::env::temp_dir().join(format!("nats-load-{}.ready", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    // Paced: about 5 s of traffic, so the kill falls mid-run.
    let run = load(
        &n1,
        &n2,
        &[
            "--pairs",
            "2",
            "--messages",
            "1000",
            "--rate",
            "200",
            "--outcome-timeout-secs",
            "3",
            "--ready-after-outcomes",
            "20",
            "--ready-file",
            ready.to_str().unwrap(),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    eventually(Duration::from_secs(20), "traffic to flow", || {
        ready.exists()
    });
    n2.child.kill().unwrap();
    let out = run.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&ready);
    let s = summary(&out);
    assert!(!out.status.success(), "the run must fail: {s}");
    // The recipients (on the killed server) saw their connection end; a
    // reconnecting client would have kept them waiting instead.
    assert_eq!(s["recipients_lost"], 2, "{s}");
    assert_eq!(s["violations"]["disconnects"], 2, "{s}");
    assert_eq!(s["violations"]["duplicated"], 0, "{s}");
    assert_eq!(s["violations"]["out_of_order"], 0, "{s}");
}
