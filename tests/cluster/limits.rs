//! Vhost and user limits count over the whole cluster, as RabbitMQ's
//! connection and channel tracking does: places held on another node
//! count against a limit here (learnt within about a second) and are
//! freed when they go.

use super::nodes::{cluster, connect, rt};
use std::time::{Duration, Instant};
use warren::admin::{AdminOp, LimitsOp};
use warren::broker::limits::Limits;

/// Connects to `uri` (closing each connection it gets) until `want`
/// (refused or not) is what happens; the refusal's text if refused.
async fn until_connect(uri: &str, refused: bool) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(
            Instant::now() < deadline,
            "a connection to {uri} was never {}",
            if refused { "refused" } else { "accepted" }
        );
        match lapin::Connection::connect(uri, lapin::ConnectionProperties::default()).await {
            Ok(c) if !refused => {
                let _ = c.close(200, "bye".into()).await;
                return None;
            }
            Ok(c) => {
                let _ = c.close(200, "bye".into()).await;
            }
            Err(e) if refused => return Some(e.to_string()),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn connection_and_channel_limits_count_every_node() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 2);
    let (uri1, uri2) = (nodes[0].uri(), nodes[1].uri());
    let vhost_limits = |op| AdminOp::VhostLimits {
        vhost: "/".into(),
        op,
    };
    nodes[0]
        .h()
        .admin()
        .control(
            "guest",
            vhost_limits(LimitsOp::Set(Limits::from([("max-connections", 2)]))),
        )
        .expect("sets the vhost's limit");
    rt().block_on(async {
        let a = connect(&uri1).await;
        let b = connect(&uri2).await;
        // One here and one on node 2: node 1 refuses a third once it
        // has heard of node 2's.
        let text = until_connect(&uri1, true).await.unwrap();
        assert!(text.contains("connection limit (2) is reached"), "{text}");
        let text = until_connect(&uri2, true).await.unwrap();
        assert!(text.contains("connection limit (2) is reached"), "{text}");
        // Node 2's goes: its place is free on node 1 again.
        let _ = b.close(200, "bye".into()).await;
        until_connect(&uri1, false).await;
        let _ = a.close(200, "bye".into()).await;
    });

    let admin = nodes[1].h().admin();
    admin
        .control("guest", vhost_limits(LimitsOp::Clear))
        .expect("clears the vhost's limit");
    let user_limits = AdminOp::UserLimits {
        user: "guest".into(),
        op: LimitsOp::Merge(Limits::from([("max-channels", 2)])),
    };
    admin
        .control("guest", user_limits)
        .expect("sets the user's limit");
    rt().block_on(async {
        let a = connect(&uri1).await;
        let _ch1 = a.create_channel().await.unwrap();
        let b = connect(&uri2).await;
        let _ch2 = b.create_channel().await.unwrap();
        // A third channel anywhere is refused once both nodes know.
        let deadline = Instant::now() + Duration::from_secs(15);
        let text = loop {
            assert!(Instant::now() < deadline, "a third channel was never refused");
            let c = connect(&uri1).await;
            match c.create_channel().await {
                Ok(_) => {
                    let _ = c.close(200, "bye".into()).await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => break e.to_string(),
            }
        };
        assert!(text.contains("maximum allowed user limit of (2)"), "{text}");
        let _ = a.close(200, "bye".into()).await;
        let _ = b.close(200, "bye".into()).await;
    });
}
