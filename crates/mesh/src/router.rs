//! The router (SPEC N2): nodes registered by topic, one bounded queue per
//! topic, and the dispatch switch.
//!
//! A submit first [`Router::reserve`]s a place in its topic's queue; a
//! full queue refuses before anything is written, so a 503 loses nothing
//! and half-writes nothing. The reservation is given back when dropped
//! unpublished. Queued plus reserved messages never exceed a topic's
//! capacity, and the worker pool that takes from the queues is bounded, so
//! memory is bounded. While dispatch is off (log-only mode) messages are
//! queued and recorded but no worker takes them; switching it on wakes the
//! workers, which then drain the backlog.
//!
//! Written by hand: a `Mutex` over a few `VecDeque`s and a `Condvar` is
//! the whole mechanism; a channel crate would not give per-topic capacity
//! with reservation, or a round-robin over topics.

use crate::contract::Message;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

struct Topic<N: ?Sized> {
    node: Arc<N>,
    capacity: usize,
    queue: VecDeque<Message>,
    reserved: usize,
    published: u64,
}

struct Queues<N: ?Sized> {
    topics: BTreeMap<String, Topic<N>>,
    /// Where the round-robin over topics resumes.
    cursor: usize,
    closed: bool,
}

/// Topics, their nodes and queues. `N` is the node type (the mesh uses
/// `dyn Bot`).
pub struct Router<N: ?Sized> {
    queues: Mutex<Queues<N>>,
    ready: Condvar,
    dispatch: AtomicBool,
}

/// A topic's queue at capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Full {
    pub topic: String,
    pub capacity: usize,
}

/// One topic's numbers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TopicDepth {
    pub topic: String,
    pub queued: usize,
    pub reserved: usize,
    pub capacity: usize,
    pub published: u64,
}

/// A place held in a topic's queue.
pub struct Slot<'a, N: ?Sized> {
    router: &'a Router<N>,
    topic: String,
    used: bool,
}

impl<N: ?Sized> Router<N> {
    pub fn new(dispatch: bool) -> Self {
        Router {
            queues: Mutex::new(Queues {
                topics: BTreeMap::new(),
                cursor: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            dispatch: AtomicBool::new(dispatch),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queues<N>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register `node` on `topic` with a queue of `capacity` (≥ 1).
    pub fn register(&self, topic: &str, node: Arc<N>, capacity: usize) {
        self.lock().topics.insert(
            topic.to_string(),
            Topic {
                node,
                capacity: capacity.max(1),
                queue: VecDeque::new(),
                reserved: 0,
                published: 0,
            },
        );
    }

    pub fn node(&self, topic: &str) -> Option<Arc<N>> {
        self.lock().topics.get(topic).map(|t| t.node.clone())
    }

    pub fn topics(&self) -> Vec<String> {
        self.lock().topics.keys().cloned().collect()
    }

    /// Hold a place in `topic`'s queue, or say it is full.
    pub fn reserve(&self, topic: &str) -> Result<Slot<'_, N>, Full> {
        let mut q = self.lock();
        let Some(t) = q.topics.get_mut(topic) else {
            return Err(Full {
                topic: topic.into(),
                capacity: 0,
            });
        };
        if t.queue.len() + t.reserved >= t.capacity {
            return Err(Full {
                topic: topic.into(),
                capacity: t.capacity,
            });
        }
        t.reserved += 1;
        Ok(Slot {
            router: self,
            topic: topic.into(),
            used: false,
        })
    }

    /// Queue a message read back after a restart, past the capacity if it
    /// must (what was queued before the restart was within it).
    pub fn restore(&self, message: Message) {
        let mut q = self.lock();
        if let Some(t) = q.topics.get_mut(&message.topic) {
            t.queue.push_back(message);
        }
        drop(q);
        self.ready.notify_one();
    }

    pub fn dispatching(&self) -> bool {
        self.dispatch.load(Ordering::SeqCst)
    }

    /// Switch dispatch; returns the previous setting.
    pub fn set_dispatch(&self, on: bool) -> bool {
        let before = self.dispatch.swap(on, Ordering::SeqCst);
        // Take the lock so no worker misses the wake-up between its check
        // and its wait.
        drop(self.lock());
        self.ready.notify_all();
        before
    }

    /// The next message for a worker, oldest first within a topic and
    /// round-robin across topics, waiting up to `wait`. `None` when
    /// nothing is ready, dispatch is off, or the router is closed.
    pub fn next(&self, wait: Duration) -> Option<(Message, Arc<N>)> {
        let mut q = self.lock();
        loop {
            if q.closed {
                return None;
            }
            if self.dispatching() {
                if let Some(found) = Self::take(&mut q) {
                    return Some(found);
                }
            }
            let (guard, timeout) = self
                .ready
                .wait_timeout(q, wait)
                .unwrap_or_else(|p| p.into_inner());
            q = guard;
            if timeout.timed_out() {
                if q.closed || !self.dispatching() {
                    return None;
                }
                return Self::take(&mut q);
            }
        }
    }

    fn take(q: &mut Queues<N>) -> Option<(Message, Arc<N>)> {
        let n = q.topics.len();
        for i in 0..n {
            let at = (q.cursor + i) % n;
            let t = q.topics.values_mut().nth(at).expect("index below len");
            if let Some(m) = t.queue.pop_front() {
                let node = t.node.clone();
                q.cursor = (at + 1) % n;
                return Some((m, node));
            }
        }
        None
    }

    /// Wake every waiting worker and make [`Router::next`] return `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    pub fn depths(&self) -> Vec<TopicDepth> {
        self.lock()
            .topics
            .iter()
            .map(|(name, t)| TopicDepth {
                topic: name.clone(),
                queued: t.queue.len(),
                reserved: t.reserved,
                capacity: t.capacity,
                published: t.published,
            })
            .collect()
    }
}

impl<N: ?Sized> Slot<'_, N> {
    /// Queue `message` in the reserved place.
    pub fn publish(mut self, message: Message) {
        let mut q = self.router.lock();
        if let Some(t) = q.topics.get_mut(&self.topic) {
            t.reserved -= 1;
            t.published += 1;
            t.queue.push_back(message);
        }
        self.used = true;
        drop(q);
        self.router.ready.notify_one();
    }
}

impl<N: ?Sized> Drop for Slot<'_, N> {
    fn drop(&mut self) {
        if !self.used {
            if let Some(t) = self.router.lock().topics.get_mut(&self.topic) {
                t.reserved -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Glyph;
    use capsule_policy::Lane;

    fn msg(topic: &str, n: u32) -> Message {
        Message {
            msg_id: n.to_string(),
            ts: 0,
            lane: Lane::Prod,
            glyph: Glyph {
                id: n.to_string(),
                kind: "task".into(),
                version: 1,
                tags: vec![],
            },
            topic: topic.into(),
            payload_ref: String::new(),
        }
    }

    #[test]
    fn a_full_queue_refuses_and_a_dropped_reservation_is_given_back() {
        let r: Router<str> = Router::new(false);
        r.register("calc", Arc::from("calc-node"), 2);
        r.reserve("calc").unwrap().publish(msg("calc", 1));
        let held = r.reserve("calc").unwrap();
        assert_eq!(
            r.reserve("calc").err(),
            Some(Full {
                topic: "calc".into(),
                capacity: 2
            })
        );
        drop(held);
        r.reserve("calc").unwrap().publish(msg("calc", 2));
        assert!(r.reserve("calc").is_err());
        assert_eq!(r.depths()[0].queued, 2);
        assert_eq!(r.depths()[0].reserved, 0);
    }

    #[test]
    fn log_only_mode_holds_messages_until_dispatch_is_switched_on() {
        let r: Router<str> = Router::new(false);
        r.register("a", Arc::from("node-a"), 8);
        r.register("b", Arc::from("node-b"), 8);
        for n in 0..3 {
            r.reserve("a").unwrap().publish(msg("a", n));
        }
        r.reserve("b").unwrap().publish(msg("b", 9));
        assert!(r.next(Duration::from_millis(5)).is_none());
        r.set_dispatch(true);
        let order: Vec<String> = std::iter::from_fn(|| r.next(Duration::from_millis(5)))
            .map(|(m, node)| format!("{}{}", &node[5..], m.msg_id))
            .collect();
        // Round-robin across topics, oldest first within one.
        assert_eq!(order, ["a0", "b9", "a1", "a2"]);
    }

    #[test]
    fn a_waiting_worker_wakes_when_dispatch_is_switched_on_and_on_close() {
        let r: Arc<Router<str>> = Arc::new(Router::new(false));
        r.register("a", Arc::from("node-a"), 8);
        r.reserve("a").unwrap().publish(msg("a", 1));
        let worker = {
            let r = r.clone();
            std::thread::spawn(move || r.next(Duration::from_secs(30)).map(|(m, _)| m.msg_id))
        };
        std::thread::sleep(Duration::from_millis(20));
        r.set_dispatch(true);
        assert_eq!(worker.join().unwrap().as_deref(), Some("1"));
        let idle = {
            let r = r.clone();
            std::thread::spawn(move || r.next(Duration::from_secs(30)).is_none())
        };
        std::thread::sleep(Duration::from_millis(20));
        r.close();
        assert!(idle.join().unwrap());
    }
}
