//! Operators' view: the real grpcurl binary against both binaries, through
//! server reflection (grpcurl 1.8 speaks v1alpha) and grpc.health.v1.
mod support;

use support::{Cluster, grpcurl};

fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_services_and_gets_serving_from_both_binaries() {
    let c = Cluster::start().await;
    let (ok, version) = grpcurl(&["-version"]);
    assert!(ok && version.contains("1.8"), "{version}");

    let (ok, relay_list) = grpcurl(&["-plaintext", &addr(c.relay().port), "list"]);
    assert!(ok, "{relay_list}");
    for service in [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "switchboard.v1.Relay",
    ] {
        assert!(
            relay_list.lines().any(|l| l.trim() == service),
            "relay lacks {service}:\n{relay_list}"
        );
    }
    let (ok, server_list) = grpcurl(&["-plaintext", &addr(c.a.grpc_port), "list"]);
    assert!(ok, "{server_list}");
    assert!(
        server_list.contains("grpc.health.v1.Health"),
        "{server_list}"
    );
    assert!(
        !server_list.contains("switchboard.v1.Relay"),
        "servers do not serve Relay:\n{server_list}"
    );

    for port in [c.relay().port, c.a.grpc_port, c.b.grpc_port] {
        let (ok, out) = grpcurl(&["-plaintext", &addr(port), "grpc.health.v1.Health/Check"]);
        assert!(ok, "{out}");
        assert!(out.contains("\"status\": \"SERVING\""), "{out}");
    }
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"service":"switchboard.v1.Relay"}"#,
        &addr(c.relay().port),
        "grpc.health.v1.Health/Check",
    ]);
    assert!(ok && out.contains("SERVING"), "{out}");

    let (ok, out) = grpcurl(&[
        "-plaintext",
        &addr(c.relay().port),
        "describe",
        "switchboard.v1.Relay",
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("rpc Link ( stream .switchboard.v1.ServerFrame )"),
        "{out}"
    );
    let (ok, out) = grpcurl(&[
        "-plaintext",
        &addr(c.relay().port),
        "describe",
        "switchboard.v1.Forward",
    ]);
    assert!(ok && out.contains("origin_server"), "{out}");
}
