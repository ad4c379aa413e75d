//! The scheduler: the queue of jobs waiting for a worker slot, the slots
//! free on each node, the pump that hands them out, and this node's load.
//!
//! A job whose attempt was lost (its node died, froze, was cut off or
//! restarted) waits first in line, and when no slot is free anywhere it
//! takes a spare worker: each node holds some back (`--spare-workers`), so
//! a failover costs such a job the time to notice the loss, not the time
//! until another job ends.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use ractor::{ActorCell, ActorId, ActorRef};
use tracing::{info, warn};
use vidpress_cluster::{NodeLoad, NodeName};

use super::{GatewayState, Slot};
use crate::job::JobId;
use crate::protocol::gateway::node_load;
use crate::protocol::{SupervisorMsg, WorkerMsg};
use crate::queue::JobQueue;

/// How often queued jobs look again for free workers on other nodes, whose
/// load arrives with heartbeats.
pub(super) const PUMP_EVERY: Duration = Duration::from_millis(250);
/// A worker that refused an assignment is skipped for this long.
const REJECT_COOLDOWN: Duration = Duration::from_secs(1);
/// The worker slots a node has for this gateway now.
pub(super) struct NodeSlots<W> {
    pub node: NodeName,
    /// How many slots the node has free (for another node, at most what its
    /// heartbeats report).
    pub free: usize,
    /// The workers this gateway may hand out there.
    pub workers: Vec<W>,
    /// How many spare workers the node has free (for another node, at most
    /// what its heartbeats report).
    pub spare: usize,
    /// The spare workers this gateway may hand out there.
    pub spares: Vec<W>,
}

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

/// What the gateway knows of a job in its queue.
pub(super) enum Queued<S> {
    /// Not in the index (dropped meanwhile).
    Unknown,
    /// Indexed, but its supervisor has stopped.
    Gone,
    /// Its supervisor runs: the dispatch goes there.
    Live(S),
}

/// Returns the node the next slot comes from: the one with the most free
/// slots that has a worker to hand out, the first listed on a tie (this
/// node is listed first).
pub(super) fn pick_node<W>(nodes: &[NodeSlots<W>]) -> Option<usize> {
    most_free(nodes, |n| (n.free, n.workers.len()))
}

/// Returns the node the next spare worker comes from, for a job whose
/// attempt was lost: the one with the most spares free that has one to
/// hand out, the first listed on a tie.
pub(super) fn pick_spare<W>(nodes: &[NodeSlots<W>]) -> Option<usize> {
    most_free(nodes, |n| (n.spare, n.spares.len()))
}

/// Returns the node with the most free (`free`: how many it has free, and
/// how many workers this gateway may hand out there), of those with both;
/// the first listed on a tie.
fn most_free<W>(
    nodes: &[NodeSlots<W>],
    free: impl Fn(&NodeSlots<W>) -> (usize, usize),
) -> Option<usize> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (i, free(n)))
        .filter(|(_, (free, workers))| *free > 0 && *workers > 0)
        .max_by_key(|(i, (free, _))| (*free, std::cmp::Reverse(*i)))
        .map(|(i, _)| i)
}

/// Takes a worker for the job at the head of the queue out of `nodes`: a
/// slot of the node `pick_node` chooses, or, for a job whose attempt was
/// lost (`recovering`) when no slot is free, a spare of the node
/// `pick_spare` chooses. Returns the node's index, the worker and whether
/// it is a spare.
fn take_worker<W>(nodes: &mut [NodeSlots<W>], recovering: bool) -> Option<(usize, W, bool)> {
    if let Some(i) = pick_node(nodes) {
        let slots = &mut nodes[i];
        let worker = slots.workers.pop()?;
        slots.free -= 1;
        return Some((i, worker, false));
    }
    if !recovering {
        return None;
    }
    let i = pick_spare(nodes)?;
    let slots = &mut nodes[i];
    let worker = slots.spares.pop()?;
    slots.spare -= 1;
    Some((i, worker, true))
}

/// Gives a worker `take_worker` took back to its node.
fn give_back<W>(slots: &mut NodeSlots<W>, worker: W, spare: bool) {
    if spare {
        slots.spares.push(worker);
        slots.spare += 1;
    } else {
        slots.workers.push(worker);
        slots.free += 1;
    }
}

/// Returns whether a worker may be handed out: it holds no slot of this
/// gateway, runs no attempt here, and has not just refused one.
pub(super) fn usable(
    worker: &ActorId,
    busy: &HashSet<ActorId>,
    local_busy: &HashSet<ActorId>,
    cooldown: &HashMap<ActorId, Instant>,
) -> bool {
    !busy.contains(worker) && !local_busy.contains(worker) && !cooldown.contains_key(worker)
}

/// Returns how many slots a node has free: those usable here, and for
/// another node no more than its heartbeats report (`reported`: its
/// workers and its busy ones).
pub(super) fn free_on(usable: usize, reported: Option<(u32, u32)>) -> usize {
    match reported {
        None => usable,
        Some((workers, busy)) => usable.min(workers.saturating_sub(busy) as usize),
    }
}

/// Walks the queue from its head, handing each job a worker of the node
/// `pick_node` chooses (or a spare, `take_worker`), until the queue or the
/// slots run out. `job` tells
/// what is known of a queued job; `dispatch` sends it its slot, or gives
/// the worker back when it could not. A job whose supervisor is gone (or
/// not indexed) leaves the queue without taking a slot; each job leaves
/// the queue once, so the one behind it is never lost with it.
pub(super) fn walk<W, S>(
    queue: &mut JobQueue,
    nodes: &mut [NodeSlots<W>],
    mut job: impl FnMut(JobId) -> Queued<S>,
    mut dispatch: impl FnMut(JobId, S, &NodeName, W) -> Result<(), W>,
) {
    while let Some(id) = queue.front() {
        let Queued::Live(supervisor) = job(id) else {
            queue.pop_front();
            continue;
        };
        let Some((i, worker, spare)) = take_worker(nodes, queue.front_is_recovering()) else {
            break;
        };
        queue.pop_front();
        if let Err(worker) = dispatch(id, supervisor, &nodes[i].node, worker) {
            // The supervisor stopped meanwhile: the worker goes to the next
            // job that may take it.
            give_back(&mut nodes[i], worker, spare);
        }
    }
}

/// Takes out of a job's `slots` the one of `worker`, or all of them.
pub(super) fn take_slots(slots: &mut Vec<Slot>, worker: Option<ActorId>) -> Vec<Slot> {
    match worker {
        None => std::mem::take(slots),
        Some(worker) => match slots.iter().position(|s| s.worker.get_id() == worker) {
            Some(i) => vec![slots.swap_remove(i)],
            None => Vec::new(),
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> NodeName {
        s.parse().expect("a valid node name")
    }

    fn slots(node: &str, free: usize, workers: &[&'static str]) -> NodeSlots<&'static str> {
        NodeSlots {
            node: name(node),
            free,
            workers: workers.to_vec(),
            spare: 0,
            spares: Vec::new(),
        }
    }

    fn with_spares(
        mut slots: NodeSlots<&'static str>,
        spares: &[&'static str],
    ) -> NodeSlots<&'static str> {
        slots.spare = spares.len();
        slots.spares = spares.to_vec();
        slots
    }

    /// Walks a queue of `lost` (recovering) then `queued` jobs over
    /// `nodes`, and returns what was sent where.
    fn walk_recovering(
        lost: &[JobId],
        queued: &[JobId],
        nodes: &mut [NodeSlots<&'static str>],
    ) -> (Vec<(JobId, NodeName, &'static str)>, JobQueue) {
        let mut queue = queue_of(queued);
        for id in lost {
            queue.push_recovering(*id, 10);
        }
        let mut sent = Vec::new();
        walk(
            &mut queue,
            nodes,
            |_| Queued::Live(()),
            |id, (), node, w| {
                sent.push((id, node.clone(), w));
                Ok(())
            },
        );
        (sent, queue)
    }

    /// Walks `queue` over `nodes` where the dispatch of `unsent` cannot be
    /// sent (its supervisor stopped); returns what was sent, and with what.
    fn walk_unsent(
        queue: &mut JobQueue,
        nodes: &mut [NodeSlots<&'static str>],
        unsent: JobId,
    ) -> Vec<(JobId, &'static str)> {
        let mut sent = Vec::new();
        walk(
            queue,
            nodes,
            |_| Queued::Live(()),
            |id, (), _, w| {
                if id == unsent {
                    return Err(w);
                }
                sent.push((id, w));
                Ok(())
            },
        );
        sent
    }

    #[test]
    fn a_job_whose_attempt_was_lost_takes_a_spare_when_every_slot_is_busy() {
        let ids = ids(3);
        let (lost, queued) = (ids[0], &ids[1..]);
        let mut nodes = [
            with_spares(slots("a", 0, &[]), &["a-spare"]),
            with_spares(slots("b", 0, &[]), &["b-spare"]),
        ];
        let (sent, queue) = walk_recovering(&[lost], queued, &mut nodes);
        assert_eq!(sent, vec![(lost, name("a"), "a-spare")]);
        // The jobs queued before the loss wait for a slot; no spare for them.
        assert_eq!(queue.len(), 2);
        assert_eq!(nodes[1].spares, vec!["b-spare"]);
    }

    #[test]
    fn a_job_whose_attempt_was_lost_takes_a_free_slot_before_a_spare() {
        let ids = ids(2);
        let mut nodes = [
            with_spares(slots("a", 0, &[]), &["a-spare"]),
            with_spares(slots("b", 1, &["b1"]), &["b-spare"]),
        ];
        let (sent, queue) = walk_recovering(&ids, &[], &mut nodes);
        assert_eq!(
            sent,
            vec![(ids[0], name("b"), "b1"), (ids[1], name("a"), "a-spare")]
        );
        assert!(queue.is_empty());
    }

    #[test]
    fn a_spare_another_node_reports_busy_is_not_handed_out() {
        let ids = ids(1);
        let mut busy_b = with_spares(slots("b", 0, &[]), &["b-spare"]);
        busy_b.spare = 0;
        let mut nodes = [slots("a", 0, &[]), busy_b];
        let (sent, queue) = walk_recovering(&ids, &[], &mut nodes);
        assert!(sent.is_empty());
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn a_spare_whose_dispatch_could_not_be_sent_stays_a_spare() {
        let ids = ids(2);
        let (gone, lost) = (ids[0], ids[1]);
        let mut queue = JobQueue::default();
        queue.push_recovering(gone, 10);
        queue.push_recovering(lost, 10);
        let mut nodes = [with_spares(slots("a", 0, &[]), &["a-spare"])];
        let sent = walk_unsent(&mut queue, &mut nodes, gone);
        assert_eq!(sent, vec![(lost, "a-spare")]);
        assert_eq!((nodes[0].free, nodes[0].spare), (0, 0));
    }

    #[test]
    fn the_node_with_the_most_free_slots_gets_the_job() {
        let nodes = [slots("a", 1, &["a1"]), slots("b", 3, &["b1", "b2", "b3"])];
        assert_eq!(pick_node(&nodes), Some(1));
    }

    #[test]
    fn this_node_wins_a_tie() {
        let nodes = [slots("a", 2, &["a1", "a2"]), slots("b", 2, &["b1", "b2"])];
        assert_eq!(pick_node(&nodes), Some(0));
    }

    #[test]
    fn a_node_without_a_worker_to_hand_out_is_passed_over() {
        // Draining workers left the group: free by the load, none to use.
        let nodes = [
            slots("a", 0, &[]),
            slots("b", 4, &[]),
            slots("c", 1, &["c1"]),
        ];
        assert_eq!(pick_node(&nodes), Some(2));
    }

    #[test]
    fn no_node_is_picked_when_none_has_a_free_slot() {
        let nodes = [slots("a", 0, &["a1"]), slots("b", 0, &["b1"])];
        assert_eq!(pick_node(&nodes), None);
    }

    #[test]
    fn a_busy_or_cooling_down_worker_is_not_handed_out() {
        let (w, other) = (ActorId::Local(1), ActorId::Local(2));
        let none = HashSet::new();
        let held: HashSet<ActorId> = [w].into();
        let cooling: HashMap<ActorId, Instant> = [(w, Instant::now())].into();
        assert!(usable(&w, &none, &none, &HashMap::new()));
        assert!(!usable(&w, &held, &none, &HashMap::new()));
        assert!(!usable(&w, &none, &held, &HashMap::new()));
        assert!(!usable(&w, &none, &none, &cooling));
        assert!(usable(&other, &held, &held, &cooling));
    }

    #[test]
    fn another_node_is_judged_by_the_load_it_reports() {
        assert_eq!(free_on(3, None), 3);
        assert_eq!(free_on(3, Some((4, 3))), 1);
        assert_eq!(free_on(1, Some((4, 0))), 1);
        // Busier than it has workers (a report racing a restart): none.
        assert_eq!(free_on(2, Some((2, 5))), 0);
    }

    fn queue_of(ids: &[JobId]) -> JobQueue {
        let mut queue = JobQueue::default();
        for id in ids {
            queue.push_back(*id, 10, None);
        }
        queue
    }

    fn ids(n: usize) -> Vec<JobId> {
        (0..n).map(|_| JobId::new(&name("a"))).collect()
    }

    #[test]
    fn the_pump_dispatches_in_queue_order_until_slots_run_out() {
        let ids = ids(3);
        let mut queue = queue_of(&ids);
        let mut nodes = [slots("a", 1, &["a1"]), slots("b", 1, &["b1"])];
        let mut sent = Vec::new();
        walk(
            &mut queue,
            &mut nodes,
            |_| Queued::Live(()),
            |id, (), node, w| {
                sent.push((id, node.clone(), w));
                Ok(())
            },
        );
        assert_eq!(
            sent,
            vec![(ids[0], name("a"), "a1"), (ids[1], name("b"), "b1")]
        );
        assert_eq!(queue.front(), Some(ids[2]));
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn the_pump_drops_jobs_no_longer_indexed() {
        let ids = ids(2);
        let mut queue = queue_of(&ids);
        let mut nodes = [slots("a", 1, &["a1"])];
        let mut sent = Vec::new();
        let job = |id| {
            if id == ids[0] {
                Queued::Unknown
            } else {
                Queued::Live(())
            }
        };
        walk(&mut queue, &mut nodes, job, |id, (), _, _| {
            sent.push(id);
            Ok(())
        });
        assert_eq!(sent, vec![ids[1]]);
        assert!(queue.is_empty());
    }

    #[test]
    fn the_pump_leaves_the_queue_when_no_slot_is_free() {
        let ids = ids(2);
        let mut queue = queue_of(&ids);
        let mut nodes = [slots("a", 0, &["a1"])];
        walk(
            &mut queue,
            &mut nodes,
            |_| Queued::Live(()),
            |_, (), _, _| Ok(()),
        );
        assert_eq!(queue.len(), 2);
        assert_eq!(nodes[0].workers, vec!["a1"]);
    }

    #[test]
    fn a_job_whose_supervisor_is_gone_is_dropped_and_the_next_one_dispatched() {
        // A's supervisor stopped while A was queued; B waits behind it.
        let ids = ids(2);
        let (a, b) = (ids[0], ids[1]);
        let mut queue = queue_of(&ids);
        let mut nodes = [slots("a", 1, &["a1"])];
        let mut sent = Vec::new();
        let job = |id| {
            if id == a {
                Queued::Gone
            } else {
                Queued::Live(())
            }
        };
        walk(&mut queue, &mut nodes, job, |id, (), _, w| {
            sent.push((id, w));
            Ok(())
        });
        assert_eq!(sent, vec![(b, "a1")]);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_slot_whose_dispatch_could_not_be_sent_goes_to_the_next_job() {
        let ids = ids(2);
        let (a, b) = (ids[0], ids[1]);
        let mut queue = queue_of(&ids);
        let mut nodes = [slots("a", 1, &["a1"])];
        let sent = walk_unsent(&mut queue, &mut nodes, a);
        assert_eq!(sent, vec![(b, "a1")]);
        assert!(queue.is_empty());
        assert!(nodes[0].workers.is_empty());
    }
}
