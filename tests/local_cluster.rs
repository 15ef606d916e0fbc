//! The README's first command: `switchboard` runs a relay and two servers
//! in one process with the embedded presence store; Ctrl-C stops it.
mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Client, eventually, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_command_cluster_chats_across_its_two_servers_and_stops_on_sigint() {
    let (p1, p2, relay) = (free_port(), free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "--ports",
            &format!("{p1},{p2}"),
            "--relay-port",
            &relay.to_string(),
        ])
        .args(["--grpc-ports", &format!("{},{}", free_port(), free_port())])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start switchboard");
    let port_open = |p: u16| async move {
        tokio::net::TcpStream::connect(("127.0.0.1", p))
            .await
            .is_ok()
    };
    eventually(Duration::from_secs(5), "both client ports", || async {
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

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "switchboard did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit}");
    assert_eq!(bob.recv().await["reason"], "server_shutdown");
    let mut banner = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut banner).unwrap();
    assert!(
        banner.contains(&format!("telnet 127.0.0.1 {p1}")),
        "{banner}"
    );
}
