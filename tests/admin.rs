//! The README's "Debugging with grpcurl" section, command by command, with
//! the real grpcurl against a running cluster (the `switchboard` binary on
//! a real Redis). Commands are read from the README itself, so the docs
//! cannot drift from what works.
mod support;

use std::process::Command;
use std::time::Duration;

use support::{Client, Proc, Redis, STEP, eventually, free_port, port_open};

/// The `switchboard` local cluster on Redis, killed on drop.
struct Local {
    _proc: Proc,
    client_ports: [u16; 2],
    relay: u16,
    grpc: [u16; 2],
}

async fn start_local(redis: &Redis) -> Local {
    let (client_ports, relay, grpc) = (
        [free_port(), free_port()],
        free_port(),
        [free_port(), free_port()],
    );
    let args = [
        "--redis-url".to_string(),
        redis.url(),
        "--ports".into(),
        format!("{},{}", client_ports[0], client_ports[1]),
        "--relay-port".into(),
        relay.to_string(),
        "--grpc-ports".into(),
        format!("{},{}", grpc[0], grpc[1]),
    ];
    let mut proc = Proc::spawn("switchboard", env!("CARGO_BIN_EXE_switchboard"), &args, &[]);
    proc.wait_logged(STEP, "local cluster is up").await;
    proc.wait_ready(STEP, "cluster ports", || async {
        port_open(client_ports[0]).await
            && port_open(client_ports[1]).await
            && port_open(relay).await
    })
    .await;
    Local {
        _proc: proc,
        client_ports,
        relay,
        grpc,
    }
}

/// The commands of the README's grpcurl section, in order.
fn readme_commands() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("## Debugging with grpcurl")
        .nth(1)
        .expect("README has the section");
    let block = section
        .split("```sh")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    block
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("grpcurl "))
        .map(str::to_owned)
        .collect()
}

fn run_shell(command: &str) -> (bool, String) {
    let out = Command::new("bash").args(["-c", command]).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_grpcurl_command_works_against_a_running_cluster() {
    let redis = Redis::start().await;
    let local = start_local(&redis).await;
    let relay_addr = format!("127.0.0.1:{}", local.relay);
    let (s1, s2) = (
        support::Server::attach("server-1", local.client_ports[0]),
        support::Server::attach("server-2", local.client_ports[1]),
    );
    support::wait_routable(&s1, &s2).await;
    let mut alice = Client::connect(local.client_ports[0]).await;
    alice.login("alice").await;
    let mut bob = Client::connect(local.client_ports[1]).await;
    bob.login("bob").await;
    // The relay's health board fills after its first round of checks.
    eventually(
        Duration::from_secs(5),
        "both servers SERVING in ListServers",
        || async {
            let (_, out) = support::grpcurl(&[
                "-plaintext",
                &relay_addr,
                "switchboard.v1.Admin/ListServers",
            ]);
            out.matches("\"health\": \"SERVING\"").count() == 2
        },
    )
    .await;
    // Cluster counters arrive with each server's heartbeat (once a second).
    eventually(
        Duration::from_secs(5),
        "both logins in the cluster stats",
        || async {
            let (_, out) =
                support::grpcurl(&["-plaintext", &relay_addr, "switchboard.v1.Admin/GetStats"]);
            serde_json::from_str::<serde_json::Value>(&out).is_ok_and(|v| {
                v["cluster"]["logins"]
                    .as_str()
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n >= 2)
            })
        },
    )
    .await;

    let commands = readme_commands();
    assert!(commands.len() >= 9, "{commands:?}");
    for original in commands {
        let command = original
            .replace("127.0.0.1:9600", &relay_addr)
            .replace("127.0.0.1:9601", &format!("127.0.0.1:{}", local.grpc[0]))
            .replace("127.0.0.1:9602", &format!("127.0.0.1:{}", local.grpc[1]));
        let (ok, out) = run_shell(&command);
        assert!(ok, "{original}\n{out}");
        let rpc = command.split_whitespace().last().unwrap();
        match rpc {
            "list" => {
                for s in [
                    "switchboard.v1.Admin",
                    "switchboard.v1.Relay",
                    "grpc.health.v1.Health",
                ] {
                    assert!(out.contains(s), "{out}");
                }
            }
            "switchboard.v1.Admin" => assert!(out.contains("rpc KickUser"), "{out}"),
            "grpc.health.v1.Health/Check" => assert_eq!(json(&out)["status"], "SERVING"),
            "switchboard.v1.Admin/ListServers" => {
                let servers = json(&out)["servers"].as_array().unwrap().clone();
                let ids: Vec<&str> = servers.iter().map(|s| s["id"].as_str().unwrap()).collect();
                assert_eq!(ids, ["server-1", "server-2"]);
                for s in &servers {
                    assert_eq!(s["health"], "SERVING");
                    assert_eq!(s["linked"], true);
                    assert!(s["grpcAddr"].as_str().unwrap().starts_with("127.0.0.1:"));
                    assert_eq!(s["links"][0]["relayId"], "relay", "{s}");
                    assert_eq!(s["links"][0]["state"], "LINKED", "{s}");
                }
            }
            "switchboard.v1.Admin/ListRelays" => {
                let relays = json(&out)["relays"].as_array().unwrap().clone();
                assert_eq!(relays.len(), 1, "{out}");
                assert_eq!(relays[0]["id"], "relay");
                assert_eq!(relays[0]["state"], "SERVING");
                assert_eq!(relays[0]["links"], 2, "{out}");
            }
            "switchboard.v1.Admin/LookupUser" => {
                let v = json(&out);
                assert_eq!(
                    (v["online"].clone(), v["server"].clone()),
                    (true.into(), "server-1".into()),
                    "{v}"
                );
                assert!(v["sinceMs"].as_str().unwrap().parse::<i64>().unwrap() > 0);
            }
            "switchboard.v1.Admin/ListUsers" => {
                let v = json(&out);
                assert!(
                    v["names"].as_array().unwrap().contains(&"alice".into()),
                    "{v}"
                );
            }
            "switchboard.v1.Admin/SendMessage" => {
                let v = json(&out);
                assert_eq!(v["status"], "delivered", "{v}");
                let m = alice.expect_event("message").await;
                assert_eq!(m["from"], "operator:ops");
                assert_eq!(m["content"], "maintenance at 22:00");
                assert_eq!(m["id"], v["id"]);
            }
            "switchboard.v1.Admin/GetStats" => {
                let v = json(&out);
                assert_eq!(v["node"], "relay");
                assert!(
                    v["cluster"]["logins"]
                        .as_str()
                        .unwrap()
                        .parse::<u64>()
                        .unwrap()
                        >= 2,
                    "{v}"
                );
            }
            "switchboard.v1.Admin/KickUser" => {
                assert_eq!(json(&out)["kicked"], true);
                assert_eq!(
                    alice.recv().await,
                    serde_json::json!({"event":"kicked","reason":"admin"})
                );
                assert!(alice.closed().await);
                assert_eq!(redis.user_server("alice").await, None);
            }
            other => panic!("README command without a check in this test: {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_answers_on_a_server_port_and_rejects_bad_input() {
    let redis = Redis::start().await;
    let local = start_local(&redis).await;
    let server_addr = format!("127.0.0.1:{}", local.grpc[1]);
    let relay_addr = format!("127.0.0.1:{}", local.relay);
    let mut alice = Client::connect(local.client_ports[0]).await;
    alice.login("alice").await;

    // A message server forwards operator messages through the relay too.
    let mut delivered = false;
    for _ in 0..100 {
        let (ok, out) = support::grpcurl(&[
            "-plaintext",
            "-d",
            r#"{"to":"alice","content":"via server-2"}"#,
            &server_addr,
            "switchboard.v1.Admin/SendMessage",
        ]);
        assert!(ok, "{out}");
        if json(&out)["status"] == "delivered" {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(delivered, "operator message never delivered");
    let m = alice.expect_event("message").await;
    assert_eq!(m["from"], "operator:admin");

    let offline = support::grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"to":"nobody","content":"x"}"#,
        &relay_addr,
        "switchboard.v1.Admin/SendMessage",
    ]);
    assert_eq!(json(&offline.1)["status"], "offline");
    let (ok, out) = support::grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"name":"bad name"}"#,
        &relay_addr,
        "switchboard.v1.Admin/LookupUser",
    ]);
    assert!(!ok && out.contains("InvalidArgument"), "{out}");
    let (ok, out) = support::grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"server_id":"nope"}"#,
        &relay_addr,
        "switchboard.v1.Admin/ListUsers",
    ]);
    assert!(!ok && out.contains("NotFound"), "{out}");
    let (ok, out) = support::grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"name":"ghost"}"#,
        &relay_addr,
        "switchboard.v1.Admin/KickUser",
    ]);
    assert!(ok, "{out}");
    assert!(
        json(&out).get("kicked").is_none(),
        "false is omitted in proto3 JSON: {out}"
    );
}
