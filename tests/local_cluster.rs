//! The README's first command: `switchboard` runs a relay and two servers
//! in one process with the embedded presence store (or, `--mesh`, two
//! servers linked to each other and no relay); Ctrl-C stops it.
mod support;

use std::time::Duration;

use support::{Client, Proc, STEP, free_port, port_open};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_command_cluster_chats_across_its_two_servers_and_stops_on_sigint() {
    one_command_cluster(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_command_mesh_cluster_chats_across_its_two_servers_without_a_relay() {
    one_command_cluster(true).await;
}

async fn one_command_cluster(mesh: bool) {
    let (p1, p2, relay) = (free_port(), free_port(), free_port());
    let mut args = vec![
        "--ports".to_string(),
        format!("{p1},{p2}"),
        "--relay-port".into(),
        relay.to_string(),
        "--grpc-ports".into(),
        format!("{},{}", free_port(), free_port()),
    ];
    if mesh {
        args.push("--mesh".into());
    }
    let mut cluster = Proc::spawn("switchboard", env!("CARGO_BIN_EXE_switchboard"), &args, &[]);
    cluster.wait_logged(STEP, "local cluster is up").await;
    cluster
        .wait_ready(STEP, "both client ports", || async {
            port_open(p1).await && port_open(p2).await
        })
        .await;

    let (a, b) = (
        support::Server::attach("server-1", p1),
        support::Server::attach("server-2", p2),
    );
    support::wait_routable(&a, &b).await;
    let mut alice = Client::connect(p1).await;
    let mut bob = Client::connect(p2).await;
    assert_eq!(alice.login("alice").await["server"], "server-1");
    assert_eq!(bob.login("bob").await["server"], "server-2");
    assert_eq!(alice.chat("bob", "hello from 9501").await["event"], "ack");
    assert_eq!(
        bob.expect_event("message").await["content"],
        "hello from 9501"
    );
    assert_eq!(port_open(relay).await, !mesh, "a relay only without --mesh");

    cluster.signal("INT");
    let exit = cluster.wait_exit(Duration::from_secs(10)).await;
    assert!(exit.success(), "{exit}");
    assert_eq!(bob.recv().await["reason"], "server_shutdown");
    // The banner on stdout (the log holds stdout and stderr).
    let banner = cluster.logs();
    assert!(
        banner.contains(&format!("telnet 127.0.0.1 {p1}")),
        "{banner}"
    );
}
