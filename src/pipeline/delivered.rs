//! The (message, destination) pairs already delivered by this process, so that a message SQS
//! delivers again (at-least-once) is not posted twice to the same place. Bounded; oldest forgotten.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use crate::lock::lock;

pub struct DeliveredMemory {
    capacity: usize,
    seen: Mutex<Seen>,
}

/// A (message id, destination) pair.
type Delivered = (String, String);

/// The pairs for look-up, and in the order they came for forgetting.
#[derive(Default)]
struct Seen {
    set: HashSet<Delivered>,
    order: VecDeque<Delivered>,
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
            .set
            .contains(&(message_id.to_string(), destination.to_string()))
    }

    pub fn insert(&self, message_id: &str, destination: &str) {
        if message_id.is_empty() || self.capacity == 0 {
            return;
        }
        let key = (message_id.to_string(), destination.to_string());
        let mut seen = lock(&self.seen);
        let Seen { set, order } = &mut *seen;
        if set.insert(key.clone()) {
            order.push_back(key);
            while order.len() > self.capacity {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
    }
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
}
