//! The operator API (`switchboard.v1.Admin`), served by the relay and by
//! every message server so that an operator can point grpcurl at either.
//!
//! One implementation: what differs between the two kinds of node (what
//! they know about links and health, how they send a message) sits behind
//! `AdminNode`. Everything else comes from the presence store. This module
//! maps library errors to gRPC statuses; it holds no state of its own.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status as GrpcStatus};

use crate::clock::now_ms;
use crate::grpc::Bearer;
use crate::mailbox::{MailboxError, MailboxStore};
use crate::metrics::Metrics;
use crate::names::is_valid_name;
use crate::outcome::{ClientOutcome, OUTCOME_CODES};
use crate::pb::admin_server::{Admin, AdminServer};
use crate::pb::{self, Status};
use crate::presence::{LinkInfo, PresenceError, PresenceStore};

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
const MAX_CONTENT_BYTES: usize = 64 * 1024;

/// What a node knows about one server beyond the registry.
#[derive(Debug, Clone, Default)]
pub struct ServerView {
    pub linked_since_ms: Option<i64>,
    pub health: Option<String>,
    /// Its live links to relays, when the node knows them first-hand (a
    /// server itself); else the ones it published with its heartbeat.
    pub links: Option<Vec<LinkInfo>>,
}

#[tonic::async_trait]
pub trait AdminNode: Send + Sync + 'static {
    /// The relay's or the server's id.
    fn node_name(&self) -> String;
    /// Link and health knowledge, by server id.
    fn server_views(&self) -> HashMap<String, ServerView>;
    /// Delivers a message as a chat would, and returns its outcome.
    async fn send_as_operator(&self, message: pb::ChatMessage) -> Status;
    /// A cluster-unique message id.
    fn new_message_id(&self) -> String;
    fn metrics(&self) -> &Metrics;
}

pub struct AdminService<N> {
    node: Arc<N>,
    store: Arc<dyn PresenceStore>,
    /// The offline mailbox, on message servers started with `--mailbox`.
    mailbox: Option<Arc<dyn MailboxStore>>,
}

impl<N: AdminNode> AdminService<N> {
    /// The Admin API of `node`, behind a bearer-token check when `token`
    /// is set (without one the Admin API is open).
    pub fn serve(
        node: Arc<N>,
        store: Arc<dyn PresenceStore>,
        token: Option<String>,
    ) -> InterceptedService<AdminServer<Self>, impl Interceptor + Clone> {
        Self::serve_with_mailbox(node, store, None, token)
    }

    /// `serve`, with the offline mailbox: `LookupUser` shows its size and
    /// `ClearMailbox` empties it.
    pub fn serve_with_mailbox(
        node: Arc<N>,
        store: Arc<dyn PresenceStore>,
        mailbox: Option<Arc<dyn MailboxStore>>,
        token: Option<String>,
    ) -> InterceptedService<AdminServer<Self>, impl Interceptor + Clone> {
        let bearer = Bearer::new(
            token,
            "the Admin API needs the header 'authorization: Bearer <admin token>'",
        );
        let check = move |request: Request<()>| bearer.check(&request).map(|()| request);
        AdminServer::with_interceptor(
            Self {
                node,
                store,
                mailbox,
            },
            check,
        )
    }
}

fn store_status(e: PresenceError) -> GrpcStatus {
    GrpcStatus::unavailable(format!("presence registry: {e}"))
}

fn mailbox_status(e: MailboxError) -> GrpcStatus {
    GrpcStatus::unavailable(format!("mailbox: {e}"))
}

fn valid_user(name: &str) -> Result<(), GrpcStatus> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(GrpcStatus::invalid_argument(format!(
            "{name:?} is not a valid user name"
        )))
    }
}

type GrpcReply<T> = Result<Response<T>, GrpcStatus>;

#[tonic::async_trait]
impl<N: AdminNode> Admin for AdminService<N> {
    async fn list_servers(
        &self,
        _: Request<pb::ListServersRequest>,
    ) -> GrpcReply<pb::ListServersResponse> {
        let registry = self.store.servers().await.map_err(store_status)?;
        let mut views = self.node.server_views();
        let mut servers: Vec<pb::ServerStatus> = registry
            .into_iter()
            .map(|s| {
                let view = views.remove(&s.id).unwrap_or_default();
                let links = view.links.as_deref().unwrap_or(&s.links);
                pb::ServerStatus {
                    links: links.iter().map(link_status).collect(),
                    health: view.health.unwrap_or_else(|| "UNKNOWN".into()),
                    linked: view.linked_since_ms.is_some(),
                    linked_since_ms: view.linked_since_ms.unwrap_or(0),
                    id: s.id,
                    incarnation: s.incarnation,
                    grpc_addr: s.grpc_addr,
                    client_addr: s.client_addr,
                    connections: s.connections,
                    started_ms: s.started_ms,
                    heartbeat_ms: s.heartbeat_ms,
                }
            })
            .collect();
        // Linked but not (or no longer) registered: still worth showing.
        for (id, view) in views
            .into_iter()
            .filter(|(_, v)| v.linked_since_ms.is_some())
        {
            servers.push(pb::ServerStatus {
                links: view.links.iter().flatten().map(link_status).collect(),
                id,
                health: view.health.unwrap_or_else(|| "UNKNOWN".into()),
                linked: true,
                linked_since_ms: view.linked_since_ms.unwrap_or(0),
                ..Default::default()
            });
        }
        servers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Response::new(pb::ListServersResponse { servers }))
    }

    async fn list_relays(
        &self,
        _: Request<pb::ListRelaysRequest>,
    ) -> GrpcReply<pb::ListRelaysResponse> {
        let relays = self.store.relays().await.map_err(store_status)?;
        let relays = relays
            .into_iter()
            .map(|r| pb::RelayStatus {
                state: if r.draining { "DRAINING" } else { "SERVING" }.into(),
                id: r.id,
                incarnation: r.incarnation,
                grpc_addr: r.grpc_addr,
                links: r.links,
                started_ms: r.started_ms,
                heartbeat_ms: r.heartbeat_ms,
            })
            .collect();
        Ok(Response::new(pb::ListRelaysResponse { relays }))
    }

    async fn lookup_user(
        &self,
        req: Request<pb::LookupUserRequest>,
    ) -> GrpcReply<pb::LookupUserResponse> {
        let name = req.into_inner().name;
        valid_user(&name)?;
        let found = self.store.lookup(&name).await.map_err(store_status)?;
        let mailbox_messages = match &self.mailbox {
            Some(m) => m.size(&name).await.map_err(mailbox_status)?,
            None => 0,
        };
        let reply = match found {
            Some(p) => pb::LookupUserResponse {
                name,
                online: true,
                server: p.server,
                incarnation: p.incarnation,
                since_ms: p.since_ms,
                mailbox_messages,
            },
            None => pb::LookupUserResponse {
                name,
                mailbox_messages,
                ..Default::default()
            },
        };
        Ok(Response::new(reply))
    }

    async fn list_users(
        &self,
        req: Request<pb::ListUsersRequest>,
    ) -> GrpcReply<pb::ListUsersResponse> {
        let req = req.into_inner();
        let servers = self.store.servers().await.map_err(store_status)?;
        let Some(server) = servers.into_iter().find(|s| s.id == req.server_id) else {
            return Err(GrpcStatus::not_found(format!(
                "no server {:?} in the registry",
                req.server_id
            )));
        };
        let names = self
            .store
            .users_of(&server.id, &server.incarnation)
            .await
            .map_err(store_status)?;
        Ok(Response::new(page(
            names,
            &req.page_token,
            req.page_size as usize,
        )))
    }

    async fn kick_user(
        &self,
        req: Request<pb::KickUserRequest>,
    ) -> GrpcReply<pb::KickUserResponse> {
        let name = req.into_inner().name;
        valid_user(&name)?;
        let removed = self.store.kick(&name).await.map_err(store_status)?;
        if let Some(p) = &removed {
            tracing::info!(user = %name, server = %p.server, "operator kicked a user");
        }
        Ok(Response::new(pb::KickUserResponse {
            kicked: removed.is_some(),
            server: removed.map(|p| p.server).unwrap_or_default(),
        }))
    }

    async fn send_message(
        &self,
        req: Request<pb::SendMessageRequest>,
    ) -> GrpcReply<pb::SendMessageResponse> {
        let req = req.into_inner();
        valid_user(&req.to)?;
        let operator = if req.operator.is_empty() {
            "admin".to_owned()
        } else {
            req.operator
        };
        if !is_valid_name(&operator) {
            return Err(GrpcStatus::invalid_argument(
                "operator: letters, digits and _ - . @",
            ));
        }
        if req.content.len() > MAX_CONTENT_BYTES {
            return Err(GrpcStatus::invalid_argument("content is limited to 64 KiB"));
        }
        let message = pb::ChatMessage {
            id: self.node.new_message_id(),
            from: format!("operator:{operator}"),
            to: req.to,
            content: req.content,
            ts_ms: now_ms(),
        };
        let (id, from) = (message.id.clone(), message.from.clone());
        let status = self.node.send_as_operator(message).await;
        Ok(Response::new(pb::SendMessageResponse {
            id,
            status: ClientOutcome::of(status).code().to_owned(),
            from,
        }))
    }

    async fn clear_mailbox(
        &self,
        req: Request<pb::ClearMailboxRequest>,
    ) -> GrpcReply<pb::ClearMailboxResponse> {
        let name = req.into_inner().name;
        valid_user(&name)?;
        let Some(mailbox) = &self.mailbox else {
            return Err(GrpcStatus::failed_precondition(
                "this node has no offline mailbox: ask a message server started with --mailbox",
            ));
        };
        let removed = mailbox.clear(&name).await.map_err(mailbox_status)?;
        tracing::info!(user = %name, removed, "operator cleared a mailbox");
        Ok(Response::new(pb::ClearMailboxResponse { removed }))
    }

    async fn get_stats(&self, _: Request<pb::GetStatsRequest>) -> GrpcReply<pb::GetStatsResponse> {
        let servers = self.store.servers().await.map_err(store_status)?;
        let (purges, purged_entries) = self.store.purge_totals().await.map_err(store_status)?;
        let mut cluster = pb::Stats {
            purges,
            purged_entries,
            ..Default::default()
        };
        for s in &servers {
            add(&mut cluster, &s.stats);
            cluster.connections += s.connections;
        }
        let metrics = self.node.metrics();
        let mut node_stats = pb::Stats {
            purges: metrics.purges.get(),
            purged_entries: metrics.purged_entries.get(),
            connections: metrics.connections.get().max(0) as u64,
            ..Default::default()
        };
        add(&mut node_stats, &metrics.server_stats());
        Ok(Response::new(pb::GetStatsResponse {
            cluster: Some(cluster),
            node: self.node.node_name(),
            node_stats: Some(node_stats),
        }))
    }
}

fn link_status(l: &LinkInfo) -> pb::LinkStatus {
    pb::LinkStatus {
        relay_id: l.relay.clone(),
        state: if l.draining { "DRAINING" } else { "LINKED" }.into(),
        since_ms: l.since_ms,
    }
}

/// Adds a server's published counters (see `Metrics::server_stats`).
fn add(stats: &mut pb::Stats, counters: &std::collections::BTreeMap<String, u64>) {
    let get = |k: &str| counters.get(k).copied().unwrap_or(0);
    stats.messages_local += get("messages_local");
    stats.messages_forwarded += get("messages_forwarded");
    stats.logins += get("logins");
    stats.kicks += get("kicks");
    for code in OUTCOME_CODES {
        *stats.outcomes.entry(code.to_owned()).or_default() += get(&format!("outcome_{code}"));
    }
}

/// One page of sorted `names` after `token` (the last name of the
/// previous page): stable even when users come and go between pages.
fn page(names: Vec<String>, token: &str, size: usize) -> pb::ListUsersResponse {
    let size = if size == 0 {
        DEFAULT_PAGE
    } else {
        size.min(MAX_PAGE)
    };
    let total = names.len() as u64;
    let start = names.partition_point(|n| n.as_str() <= token);
    let chunk: Vec<String> = names[start..].iter().take(size).cloned().collect();
    let more = start + chunk.len() < names.len();
    let next_page_token = if more {
        chunk.last().cloned().unwrap_or_default()
    } else {
        String::new()
    };
    pb::ListUsersResponse {
        names: chunk,
        next_page_token,
        total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("u{i:03}")).collect()
    }

    #[test]
    fn pages_walk_every_name_once() {
        let all = names(25);
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let p = page(all.clone(), &token, 10);
            assert_eq!(p.total, 25);
            seen.extend(p.names);
            if p.next_page_token.is_empty() {
                break;
            }
            token = p.next_page_token;
        }
        assert_eq!(seen, all);
    }

    #[test]
    fn page_size_defaults_and_caps() {
        assert_eq!(page(names(150), "", 0).names.len(), DEFAULT_PAGE);
        assert_eq!(page(names(1500), "", 5000).names.len(), MAX_PAGE);
        assert!(page(names(3), "", 10).next_page_token.is_empty());
    }
}
