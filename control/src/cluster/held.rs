//! Numbers (addresses as `u32`, published ports) held by any number of holders, kept so that
//! the first free one above or below any point is found without a walk of the held ones.
//!
//! The allocator gives each new VIP the highest free address of its network and each new task
//! the lowest; at 10,000 services those sit behind 10,000 VIPs and 20,000 task addresses, and
//! a scan from the end of the subnet past them was most of what a `service create` or a task's
//! placement cost. The held numbers are kept as runs of consecutive numbers as well, so the
//! first free number from a point is one lookup per run crossed: VIPs allocated one after the
//! other form one run.

use std::collections::{BTreeMap, HashMap};
use std::{hash::Hash, ops::RangeInclusive, sync::LazyLock};

/// A multiset of numbers: how many holders each has, and the runs of the held ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    holders: HashMap<u32, usize>,
    /// The held numbers as runs: first -> last (inclusive). Runs neither overlap nor touch.
    runs: BTreeMap<u32, u32>,
}

impl Held {
    /// Nothing held: for the sets of a network that has none yet.
    pub fn empty() -> &'static Held {
        static EMPTY: LazyLock<Held> = LazyLock::new(Held::default);
        &EMPTY
    }

    /// How many hold `n`.
    pub fn holders(&self, n: u32) -> usize {
        self.holders.get(&n).copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.holders.is_empty()
    }

    /// One more holder of `n`.
    pub fn add(&mut self, n: u32) {
        let holders = self.holders.entry(n).or_insert(0);
        *holders += 1;
        if *holders == 1 {
            self.join(n);
        }
    }

    /// One holder of `n` fewer (none: nothing changes).
    pub fn remove(&mut self, n: u32) {
        let Some(holders) = self.holders.get_mut(&n) else {
            return;
        };
        *holders -= 1;
        if *holders == 0 {
            self.holders.remove(&n);
            self.split(n);
        }
    }

    /// The lowest number at or above `n` that nobody holds (none: all up to `u32::MAX` are).
    pub fn free_from(&self, n: u32) -> Option<u32> {
        match self.run_holding(n) {
            Some((_, last)) => last.checked_add(1),
            None => Some(n),
        }
    }

    /// The highest number at or below `n` that nobody holds (none: all down to 0 are).
    pub fn free_down_from(&self, n: u32) -> Option<u32> {
        match self.run_holding(n) {
            Some((first, _)) => first.checked_sub(1),
            None => Some(n),
        }
    }

    /// The run `n` is in, if it is held.
    fn run_holding(&self, n: u32) -> Option<(u32, u32)> {
        self.runs
            .range(..=n)
            .next_back()
            .filter(|(_, last)| **last >= n)
            .map(|(first, last)| (*first, *last))
    }

    /// Puts the newly held `n` in the runs, joining the runs either side of it.
    fn join(&mut self, n: u32) {
        let mut first = n;
        let mut last = n;
        if let Some(below) = n.checked_sub(1)
            && let Some((start, _)) = self.run_holding(below)
        {
            self.runs.remove(&start);
            first = start;
        }
        if let Some(above) = n.checked_add(1)
            && let Some(end) = self.runs.remove(&above)
        {
            last = end;
        }
        self.runs.insert(first, last);
    }

    /// Takes the no longer held `n` out of its run, which may leave two.
    fn split(&mut self, n: u32) {
        let Some((first, last)) = self.run_holding(n) else {
            return;
        };
        self.runs.remove(&first);
        if first < n {
            self.runs.insert(first, n - 1);
        }
        if n < last {
            self.runs.insert(n + 1, last);
        }
    }
}

/// One holder more (`add`) or fewer of `n` in the set under `key` of `sets` (an emptied set
/// goes): for indexes of held numbers by network, protocol, ...
pub fn change_held<K: Hash + Eq>(sets: &mut HashMap<K, Held>, key: K, n: u32, add: bool) {
    if add {
        sets.entry(key).or_default().add(n);
    } else if let Some(held) = sets.get_mut(&key) {
        held.remove(n);
        if held.is_empty() {
            sets.remove(&key);
        }
    }
}

/// The lowest number of `range` that none of `taken` holds.
pub fn lowest_free(range: RangeInclusive<u32>, taken: &[&Held]) -> Option<u32> {
    let mut n = *range.start();
    while n <= *range.end() {
        // Each step moves past at least one run of one of the sets, or stops.
        let mut next = n;
        for held in taken {
            next = next.max(held.free_from(n)?);
        }
        if next == n {
            return Some(n);
        }
        n = next;
    }
    None
}

/// The highest number of `range` that none of `taken` holds.
pub fn highest_free(range: RangeInclusive<u32>, taken: &[&Held]) -> Option<u32> {
    let mut n = *range.end();
    while n >= *range.start() {
        let mut next = n;
        for held in taken {
            next = next.min(held.free_down_from(n)?);
        }
        if next == n {
            return Some(n);
        }
        n = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{Held, highest_free, lowest_free};

    fn held(numbers: &[u32]) -> Held {
        let mut held = Held::default();
        for n in numbers {
            held.add(*n);
        }
        held
    }

    #[test]
    fn runs_join_and_split_as_numbers_come_and_go() {
        let mut h = held(&[5, 7, 6, 9]);
        assert_eq!(h.runs, BTreeMap::from([(5, 7), (9, 9)]));
        h.add(8);
        assert_eq!(h.runs, BTreeMap::from([(5, 9)]));
        // Two holders of 7: it stays held until both let go.
        h.add(7);
        h.remove(7);
        assert_eq!(h.runs, BTreeMap::from([(5, 9)]));
        h.remove(7);
        assert_eq!(h.runs, BTreeMap::from([(5, 6), (8, 9)]));
        h.remove(5);
        h.remove(9);
        assert_eq!(h.runs, BTreeMap::from([(6, 6), (8, 8)]));
        // Letting go of what is not held changes nothing.
        h.remove(100);
        assert_eq!(h.holders(6), 1);
        assert_eq!(h.holders(7), 0);
        // The ends of the number line.
        let ends = held(&[0, u32::MAX]);
        assert_eq!(ends.free_from(u32::MAX), None);
        assert_eq!(ends.free_down_from(0), None);
        assert_eq!(ends.free_from(0), Some(1));
    }

    #[test]
    fn the_first_free_number_skips_every_set() {
        let a = held(&[10, 11, 12, 20]);
        let b = held(&[13, 14, 21]);
        assert_eq!(lowest_free(10..=30, &[&a, &b]), Some(15));
        assert_eq!(lowest_free(20..=30, &[&a, &b]), Some(22));
        assert_eq!(lowest_free(10..=14, &[&a, &b]), None);
        assert_eq!(highest_free(0..=14, &[&a, &b]), Some(9));
        assert_eq!(highest_free(10..=21, &[&a, &b]), Some(19));
        assert_eq!(highest_free(10..=14, &[&a, &b]), None);
        assert_eq!(lowest_free(0..=u32::MAX, &[Held::empty()]), Some(0));
    }

    /// Random holds and releases; after each, the first free number from every point, either
    /// way, is what a walk of the held ones gives.
    #[test]
    fn the_runs_answer_as_a_walk_does() {
        let mut seed: u64 = 7;
        let mut random = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((seed >> 33) % n) as u32
        };
        let mut h = Held::default();
        let mut counts = BTreeMap::<u32, usize>::new();
        for _ in 0..3_000 {
            let n = random(64);
            if random(3) == 0 {
                h.remove(n);
                if let Some(c) = counts.get_mut(&n) {
                    *c -= 1;
                    if *c == 0 {
                        counts.remove(&n);
                    }
                }
            } else {
                h.add(n);
                *counts.entry(n).or_default() += 1;
            }
            let from = random(64);
            let up = (from..=63).find(|m| !counts.contains_key(m));
            let down = (0..=from).rev().find(|m| !counts.contains_key(m));
            assert_eq!(lowest_free(from..=63, &[&h]), up, "from {from}");
            assert_eq!(highest_free(0..=from, &[&h]), down, "from {from}");
            for (n, c) in &counts {
                assert_eq!(h.holders(*n), *c);
            }
            let in_runs: u32 = h.runs.iter().map(|(f, l)| l - f + 1).sum();
            assert_eq!(in_runs as usize, counts.len());
        }
    }
}
