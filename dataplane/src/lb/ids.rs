//! [`IdPool`]: the service and backend IDs the load balancer hands out, lowest free first.

/// IDs `1..max` (0 means "none" in the maps), lowest free first.
pub(super) struct IdPool {
    used: Vec<bool>,
    /// Where the search for a free ID starts: below it, every ID is used.
    next: usize,
}

impl IdPool {
    pub(super) fn new(max: u32) -> Self {
        let mut used = vec![false; max as usize];
        used[0] = true;
        IdPool { used, next: 1 }
    }

    pub(super) fn mark_used(&mut self, id: u32) {
        if let Some(slot) = self.used.get_mut(id as usize) {
            *slot = true;
        }
    }

    pub(super) fn take(&mut self) -> Option<u32> {
        let id = (self.next..self.used.len()).find(|i| !self.used[*i])?;
        self.used[id] = true;
        self.next = id + 1;
        Some(id as u32)
    }

    pub(super) fn give_back(&mut self, id: u32) {
        if let Some(slot) = self.used.get_mut(id as usize)
            && id != 0
        {
            *slot = false;
            self.next = self.next.min(id as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::IdPool;

    #[test]
    fn ids_start_at_one_and_are_reused_lowest_first() {
        let mut pool = IdPool::new(4);
        assert_eq!(
            [pool.take(), pool.take(), pool.take()],
            [Some(1), Some(2), Some(3)]
        );
        assert_eq!(
            pool.take(),
            None,
            "0 is never handed out and 4 is the limit"
        );
        pool.give_back(2);
        pool.give_back(0);
        assert_eq!(pool.take(), Some(2));
        assert_eq!(pool.take(), None);
    }

    #[test]
    fn marked_ids_are_skipped() {
        let mut pool = IdPool::new(5);
        pool.mark_used(1);
        pool.mark_used(3);
        pool.mark_used(99);
        assert_eq!(
            [pool.take(), pool.take(), pool.take()],
            [Some(2), Some(4), None]
        );
    }
}
