//! The messages and wire types that cross actors, and the process groups
//! by which actors on other nodes are found.
//!
//! Every actor module imports from here and none imports another actor
//! module: the gateway, the supervisors and the workers talk only through
//! these types.
//!
//! - [`gateway`]: [`GatewayMsg`] and what a submission carries and returns.
//! - [`supervisor`]: [`SupervisorMsg`] and a subscriber's [`Subscription`].
//! - [`worker`]: [`WorkerMsg`], the [`Assignment`] of an attempt and the
//!   [`AttemptReport`]s a worker sends back, from any node.

pub mod gateway;
pub mod supervisor;
pub mod worker;

pub use gateway::{
    CopiedInput, GatewayMsg, KeptCancel, NodeStats, SubmitError, SubmitRequest, Submitted,
};
pub use supervisor::{Subscription, SupervisorMsg};
pub use worker::{Assignment, AttemptReport, PieceWork, WorkerMsg};

use ractor::{ActorCell, ActorRef};
use vidpress_cluster::NodeName;

/// Returns the process group of the gateway of `node`.
pub fn gateway_group(node: &NodeName) -> String {
    format!("vidpress.gateway.{node}")
}

/// Returns the gateway of `node`, local or remote, if it is reachable.
pub fn gateway_of(scope: &str, node: &NodeName) -> Option<ActorRef<GatewayMsg>> {
    ractor::pg::get_scoped_members(&scope.to_owned(), &gateway_group(node))
        .into_iter()
        .next()
        .map(ActorRef::from)
}

/// Returns the process group of the workers of `node`.
pub fn workers_group(node: &NodeName) -> String {
    format!("vidpress.workers.{node}")
}

/// Returns the process group of the spare workers of `node`: held back for
/// jobs whose attempt was lost, so they run again at once instead of
/// behind the queue.
pub fn spares_group(node: &NodeName) -> String {
    format!("vidpress.spares.{node}")
}

/// Returns every worker of `node`, spares too: the ones to tell when an
/// attempt there must stop, whichever kind runs it.
pub fn all_workers_of(scope: &str, node: &NodeName) -> Vec<ActorCell> {
    let scope = scope.to_owned();
    let mut workers = ractor::pg::get_scoped_members(&scope, &workers_group(node));
    workers.extend(ractor::pg::get_scoped_members(&scope, &spares_group(node)));
    workers
}
