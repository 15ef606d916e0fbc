//! IPv6 with real processes on `[::1]`: Redis, the relay and two message
//! servers speak IPv6 to each other; relay and servers advertise
//! `[::1]:port` (`--advertise-host ::1`, bracketed by the binary itself,
//! as the Helm chart passes the pod IP), the servers find the relay there
//! in the relay registry (`--discover-relays`, as in the chart), the
//! relay's health checks reach them there, chats route between them, and
//! a process listening on `[::]` takes IPv4 and IPv6 alike (dual stack).
mod support;

use std::net::{Ipv6Addr, SocketAddr};

use serde_json::{Value, json};
use support::{
    Client, Proc, REDIS_READY, RELAY_STARTED, SERVER_STARTED, STEP, Server, eventually, free_port,
    grpcurl, wait_routable,
};

fn v6(port: u16) -> String {
    SocketAddr::from((Ipv6Addr::LOCALHOST, port)).to_string()
}

fn start_server(id: &str, client_port: u16, redis_url: &str) -> Proc {
    let args = [
        "--id".to_string(),
        id.into(),
        // Unspecified IPv6: IPv4 clients too, on a dual-stack host.
        "--listen".into(),
        format!("[::]:{client_port}"),
        "--grpc-listen".into(),
        v6(free_port()),
        "--advertise-host".into(),
        "::1".into(),
        "--discover-relays".into(),
        "--redis-url".into(),
        redis_url.into(),
    ];
    Proc::spawn(id, env!("CARGO_BIN_EXE_switchboard-server"), &args, &[])
}

fn servers_seen_by_the_relay(relay: &str) -> Vec<Value> {
    let (_, out) = grpcurl(&["-plaintext", relay, "switchboard.v1.Admin/ListServers"]);
    serde_json::from_str::<Value>(&out)
        .ok()
        .and_then(|v| v["servers"].as_array().cloned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_on_ipv6_loopback_advertises_bracketed_addresses_and_routes() {
    let redis_port = free_port();
    let redis_args = [
        "--port".to_string(),
        redis_port.to_string(),
        "--bind".into(),
        "::1".into(),
        "--save".into(),
        String::new(),
        "--appendonly".into(),
        "no".into(),
    ];
    let mut redis = Proc::spawn("redis-v6", "redis-server", &redis_args, &[]);
    redis.wait_logged(STEP, REDIS_READY).await;
    let redis_url = format!("redis://{}", v6(redis_port));

    let relay_port = free_port();
    let relay_args = [
        "--grpc-listen".to_string(),
        format!("[::]:{relay_port}"),
        "--advertise-host".into(),
        "::1".into(),
        "--redis-url".into(),
        redis_url.clone(),
    ];
    let relay_bin = env!("CARGO_BIN_EXE_switchboard-relay");
    let mut relay = Proc::spawn("relay-v6", relay_bin, &relay_args, &[]);
    relay.wait_logged(STEP, RELAY_STARTED).await;
    let (a_port, b_port) = (free_port(), free_port());
    let mut a = start_server("a", a_port, &redis_url);
    let mut b = start_server("b", b_port, &redis_url);
    a.wait_logged(STEP, SERVER_STARTED).await;
    b.wait_logged(STEP, SERVER_STARTED).await;

    // IPv4 clients reach the servers listening on [::].
    wait_routable(&Server::attach("a", a_port), &Server::attach("b", b_port)).await;

    // The relay health-checks each server at its advertised IPv6 address.
    let relay_addr = v6(relay_port);
    eventually(STEP, "both servers SERVING at [::1] addresses", || async {
        let servers = servers_seen_by_the_relay(&relay_addr);
        servers.len() == 2
            && servers.iter().all(|s| {
                s["health"] == "SERVING"
                    && s["grpcAddr"]
                        .as_str()
                        .is_some_and(|g| g.starts_with("[::1]:"))
            })
    })
    .await;
    let (ok, out) = grpcurl(&["-plaintext", &relay_addr, "switchboard.v1.Admin/ListRelays"]);
    assert!(ok, "{out}");
    let relays: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(relays["relays"][0]["grpcAddr"], v6(relay_port), "{relays}");
    let clients: Vec<String> = servers_seen_by_the_relay(&relay_addr)
        .iter()
        .map(|s| s["clientAddr"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(clients.len(), 2);
    for (addr, port) in clients.iter().zip([a_port, b_port]) {
        assert_eq!(addr, &v6(port), "advertised client address");
    }

    // An IPv6 client chats with an IPv4 one across the servers.
    let mut alice = Client::connect_to(SocketAddr::from((Ipv6Addr::LOCALHOST, a_port))).await;
    let mut bob = Client::connect(b_port).await;
    alice.login("alice").await;
    bob.login("bob").await;
    alice
        .send(json!({"cmd":"chat","recv":"bob","content":"over v6"}))
        .await;
    assert_eq!(alice.recv().await["event"], "ack");
    assert_eq!(bob.expect_event("message").await["content"], "over v6");
}
