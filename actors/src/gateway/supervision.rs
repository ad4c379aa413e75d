//! Supervision: the ends of the gateway's children, its workers and its
//! job supervisors.

use ractor::{ActorRef, SupervisionEvent};
use tracing::error;

use super::GatewayState;
use crate::job::JobId;
use crate::protocol::GatewayMsg;

impl GatewayState {
    /// Handles the end of a child.
    pub(super) async fn child_event(
        &mut self,
        _myself: &ActorRef<GatewayMsg>,
        event: SupervisionEvent,
    ) {
        match event {
            SupervisionEvent::ActorFailed(who, why) => {
                error!(node = %self.args.node, actor = %who.get_id(), error = %why, "actor failed");
                self.local_busy.remove(&who.get_id());
            }
            SupervisionEvent::ActorTerminated(who, _, _) => {
                self.local_busy.remove(&who.get_id());
                // A job's supervisor that stopped (finished, or dropped):
                // let go of its reference.
                if let Some(id) = who.get_name().as_deref().and_then(JobId::from_actor_name) {
                    if let Some(entry) = self.jobs.get_mut(&id) {
                        entry.supervisor = None;
                    }
                }
            }
            _ => {}
        }
    }
}
