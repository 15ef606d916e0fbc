//! The relay's side of the health watch (`crate::watch`): the servers
//! linked to it are watched besides the registry's, and a server declared
//! dead is forgotten by the router (routes evicted, its link closed, its
//! in-flight messages answered `unavailable`).

use std::sync::Arc;

use super::router::Router;
use crate::watch::{Linked, Watched};

/// The router as the watcher sees it.
pub struct RelayWatched(pub Arc<Router>);

impl Watched for RelayWatched {
    fn linked(&self) -> Vec<Linked> {
        self.0
            .links
            .all()
            .iter()
            .map(|l| Linked {
                id: l.server_id.clone(),
                incarnation: l.incarnation.clone(),
                grpc_addr: l.grpc_addr.clone(),
            })
            .collect()
    }

    fn forget(&self, id: &str, incarnation: &str) -> usize {
        self.0.forget_server(id, incarnation)
    }
}
