//! The (message, destination) pairs already delivered by this process, so that a message SQS
//! delivers again (at-least-once) is not posted twice to the same place. Bounded; oldest forgotten.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::lock::lock;

pub struct DeliveredMemory {
    capacity: usize,
    seen: Mutex<Seen>,
}

/// Each message's destinations delivered (oldest first), looked up without allocating; and the
/// pairs in the order they came, by message, for forgetting.
#[derive(Default)]
struct Seen {
    by_message: HashMap<Arc<str>, Vec<Box<str>>>,
    order: VecDeque<Arc<str>>,
}

impl DeliveredMemory {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            seen: Mutex::new(Seen::default()),
        }
    }

    pub fn contains(&self, message_id: &str, destination: &str) -> bool {
        lock(&self.seen)
            .by_message
            .get(message_id)
            .is_some_and(|served| serves(served, destination))
    }

    pub fn insert(&self, message_id: &str, destination: &str) {
        if message_id.is_empty() || self.capacity == 0 {
            return;
        }
        let mut seen = lock(&self.seen);
        let Seen { by_message, order } = &mut *seen;
        let message = match by_message.get_key_value(message_id) {
            Some((_, served)) if serves(served, destination) => return,
            Some((message, _)) => message.clone(),
            None => Arc::from(message_id),
        };
        (by_message.entry(message.clone()).or_default()).push(destination.into());
        order.push_back(message);
        while order.len() > self.capacity {
            let Some(old) = order.pop_front() else { break };
            if let Some(served) = by_message.get_mut(&old) {
                served.remove(0);
                if served.is_empty() {
                    by_message.remove(&old);
                }
            }
        }
    }
}

fn serves(served: &[Box<str>], destination: &str) -> bool {
    served.iter().any(|d| &**d == destination)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivered_memory_forgets_the_oldest_beyond_its_capacity() {
        let memory = DeliveredMemory::new(2);
        memory.insert("m1", "d");
        memory.insert("m2", "d");
        memory.insert("m3", "d");
        assert!(!memory.contains("m1", "d"));
        assert!(memory.contains("m2", "d") && memory.contains("m3", "d"));
    }

    #[test]
    fn delivered_memory_forgets_a_messages_destinations_oldest_first_and_counts_each_once() {
        let memory = DeliveredMemory::new(3);
        memory.insert("m1", "a");
        memory.insert("m1", "a");
        memory.insert("m1", "b");
        memory.insert("m2", "a");
        assert!(memory.contains("m1", "a") && memory.contains("m1", "b"));
        memory.insert("m3", "a");
        assert!(!memory.contains("m1", "a"), "the oldest pair is forgotten");
        assert!(memory.contains("m1", "b") && memory.contains("m2", "a"));
        assert!(!memory.contains("m2", "b"));
    }
}
