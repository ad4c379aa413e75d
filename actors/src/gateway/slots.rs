//! Where the next worker comes from: the slots and spares free on each
//! node for this gateway, and the walk down the queue that hands them out.
//! Pure functions over plain data, tested here; `scheduler` applies them
//! to the gateway's state.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use ractor::ActorId;
use vidpress_cluster::NodeName;

use super::Slot;
use crate::job::JobId;
use crate::queue::JobQueue;

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
