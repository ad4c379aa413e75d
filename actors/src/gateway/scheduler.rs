//! The scheduler: the queue of jobs waiting for a worker slot, the slots
//! free on each node (chosen by `slots`), the pump that hands them out,
//! and this node's load.
//!
//! A job whose attempt was lost (its node died, froze, was cut off or
//! restarted) waits first in line, and when no slot is free anywhere it
//! takes a spare worker: each node holds some back (`--spare-workers`), so
//! a failover costs such a job the time to notice the loss, not the time
//! until another job ends.

use std::time::{Duration, Instant};

use ractor::{ActorCell, ActorId, ActorRef};
use tracing::{info, warn};
use vidpress_cluster::{NodeLoad, NodeName};

use super::slots::{free_on, take_slots, usable, walk, NodeSlots, Queued};
use super::{GatewayState, Slot};
use crate::job::JobId;
use crate::protocol::gateway::node_load;
use crate::protocol::{SupervisorMsg, WorkerMsg};

/// How often queued jobs look again for free workers on other nodes, whose
/// load arrives with heartbeats.
pub(super) const PUMP_EVERY: Duration = Duration::from_millis(250);
/// A worker that refused an assignment is skipped for this long.
const REJECT_COOLDOWN: Duration = Duration::from_secs(1);

/// A node's load, as this gateway counts it.
pub(super) struct Load {
    pub workers: usize,
    pub busy: usize,
    pub queued: usize,
    pub spare: usize,
    pub spare_busy: usize,
}

impl Load {
    /// Returns the load in its wire form, as heartbeats carry it.
    pub fn wire(&self) -> NodeLoad {
        node_load(self.workers, self.busy, self.queued, self.spare)
    }
}

impl GatewayState {
    /// A worker slot of the job is free again: `worker`'s, or every one it
    /// holds; a worker that refused it is skipped for a while.
    pub(super) fn slot_freed(&mut self, job: JobId, worker: Option<ActorId>, rejected: bool) {
        if !rejected {
            // Its attempt ran and ended: a job that lost it again says so.
            self.recovering.remove(&job);
        }
        let freed = match self.running.get_mut(&job) {
            None => Vec::new(),
            Some(slots) => {
                let freed = take_slots(slots, worker);
                if slots.is_empty() {
                    self.running.remove(&job);
                }
                freed
            }
        };
        for slot in freed {
            let id = slot.worker.get_id();
            self.busy.remove(&id);
            if rejected {
                self.cooldown.insert(id, Instant::now() + REJECT_COOLDOWN);
            }
        }
        self.pump();
    }

    pub(super) fn worker_busy(&mut self, worker: ActorId, busy: bool) {
        // The gateway learns of a worker's death before the messages it sent
        // last (supervision events come first): a dead one stays out.
        if busy && ractor::registry::where_is_pid(worker).is_none() {
            return;
        }
        if busy {
            self.local_busy.insert(worker);
        } else {
            self.local_busy.remove(&worker);
        }
        self.pump();
    }

    /// Puts a job whose dispatch failed back at the head of the queue (of
    /// its tenant's line, or of the recovering jobs' when it is one).
    pub(super) fn dispatch_failed(&mut self, id: JobId) {
        let (bytes, tenant) = self
            .jobs
            .get(&id)
            .map_or((0, None), |e| (e.bytes, e.tenant.clone()));
        if self.recovering.contains(&id) {
            self.queue.push_recovering(id, bytes);
        } else {
            self.queue.push_front(id, bytes, tenant);
        }
        self.pump();
    }

    /// Puts a job whose attempt was lost in line before every tenant's,
    /// where it may take a spare worker.
    pub(super) fn attempt_lost(&mut self, id: JobId) {
        let bytes = self.jobs.get(&id).map_or(0, |e| e.bytes);
        self.recovering.insert(id);
        self.queue.push_recovering(id, bytes);
        self.pump();
    }

    pub(super) fn canceled_while_queued(&mut self, id: JobId) {
        self.recovering.remove(&id);
        self.queue.remove(id);
        self.publish_load();
    }

    /// Takes no new jobs and no new attempts here from now on.
    pub(super) fn drain(&mut self) {
        info!(node = %self.args.node, "draining: no new jobs, no new attempts here");
        self.draining = true;
        for cell in self.local_workers() {
            let _ = ActorRef::<WorkerMsg>::from(cell).cast(WorkerMsg::Drain);
        }
        // The node's slots are gone until it is back: as many of its queued
        // jobs as it had slots go first in line, with the spares elsewhere,
        // as when a node is lost.
        for id in self.queue.promote(self.args.workers) {
            self.recovering.insert(id);
        }
        self.pump();
    }

    /// Periodic: cooldowns run out, expired jobs go, queued jobs look again.
    pub(super) fn tick(&mut self) {
        let now = Instant::now();
        self.cooldown.retain(|_, until| *until > now);
        self.sweep_if_due(now);
        self.pump();
    }

    /// Returns this node's load: its worker slots, the busy ones, the
    /// queue's length and the spare workers free.
    pub(super) fn load(&self) -> Load {
        let me = &self.args.node;
        let spare = self
            .spares_of(me)
            .iter()
            .filter(|w| !self.local_busy.contains(&w.get_id()))
            .count();
        let spare_busy = self
            .local_busy
            .iter()
            .filter(|w| self.spares.contains(w))
            .count();
        Load {
            workers: self.workers_of(me).len(),
            busy: self.local_busy.len() - spare_busy,
            queued: self.queue.len(),
            spare,
            spare_busy,
        }
    }

    /// Publishes this node's load for the heartbeats, when it changed.
    pub(super) fn publish_load(&self) {
        let Some(cluster) = &self.args.cluster else {
            return;
        };
        // Not `stats()`, which goes over every job: this runs at every
        // dispatch and dequeue.
        let load = self.load().wire();
        cluster.load.send_if_modified(|current| {
            let changed = *current != load;
            *current = load;
            changed
        });
    }

    /// Returns, per node, the workers this gateway may hand out now and how
    /// many slots the node has free: this node first, then the others that
    /// are up, each judged by the load its heartbeats report.
    pub(super) fn free_slots(&self) -> Vec<NodeSlots<ActorCell>> {
        let usable = |cells: Vec<ActorCell>| -> Vec<ActorCell> {
            cells
                .into_iter()
                .filter(|w| usable(&w.get_id(), &self.busy, &self.local_busy, &self.cooldown))
                .collect()
        };
        let me = &self.args.node;
        let local = usable(self.workers_of(me));
        let spares = usable(self.spares_of(me));
        let mut nodes = vec![NodeSlots {
            node: me.clone(),
            free: free_on(local.len(), None),
            workers: local,
            spare: spares.len(),
            spares,
        }];
        if let Some(cluster) = &self.args.cluster {
            let view = cluster.view.borrow().clone();
            for member in view.up().filter(|m| &m.name != me) {
                let workers = usable(self.workers_of(&member.name));
                let spares = usable(self.spares_of(&member.name));
                let reported = (member.load.workers, member.load.busy);
                nodes.push(NodeSlots {
                    node: member.name.clone(),
                    free: free_on(workers.len(), Some(reported)),
                    workers,
                    spare: spares.len().min(member.load.spare as usize),
                    spares,
                });
            }
        }
        nodes
    }

    /// Hands free worker slots to the jobs at the head of the queue, each to
    /// the node with the most free slots (this node on a tie).
    pub(super) fn pump(&mut self) {
        // Cut off, an attempt started here could run beside the one the
        // majority starts after taking the job over.
        if !self.queue.is_empty() && !self.board.cut_off() {
            let mut nodes = self.free_slots();
            let Self {
                queue,
                jobs,
                board,
                busy,
                running,
                args,
                ..
            } = self;
            let job = |id| match jobs.get(&id) {
                None => Queued::Unknown,
                Some(entry) => entry.supervisor.clone().map_or(Queued::Gone, Queued::Live),
            };
            let dispatch = |id,
                            supervisor: ActorRef<SupervisorMsg>,
                            node: &NodeName,
                            cell: ActorCell| {
                let worker: ActorRef<WorkerMsg> = cell.into();
                let message = SupervisorMsg::Dispatch {
                    worker: worker.clone(),
                    node: node.clone(),
                };
                if supervisor.cast(message).is_err() {
                    let attempt = board.get(id).map(|p| p.attempt).unwrap_or_default();
                    warn!(job_id = %id, node = %args.node, attempt = attempt.get(), "job supervisor gone before dispatch");
                    return Err(worker.get_cell());
                }
                busy.insert(worker.get_id());
                let node = node.clone();
                running.entry(id).or_default().push(Slot { worker, node });
                Ok(())
            };
            walk(queue, &mut nodes, job, dispatch);
        }
        self.publish_load();
    }
}
