//! Sets of byte ranges: the parts of a file that were touched, merged as they come in.

use std::collections::BTreeMap;

/// Disjoint, non-adjacent half-open byte ranges `[start, end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start → end
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `[start, end)`, merging it with every range it overlaps or touches.
    pub fn insert(&mut self, start: u64, end: u64) {
        self.insert_with_gap(start, end, 0);
    }

    /// Like [`RangeSet::insert`], also merging with ranges less than `gap` bytes away.
    pub fn insert_with_gap(&mut self, mut start: u64, mut end: u64, gap: u64) {
        if end <= start {
            return;
        }
        // The last range starting at or before `end + gap` is the rightmost that can merge;
        // walk left while ranges still reach `start - gap`.
        let reach = start.saturating_sub(gap);
        let limit = end.saturating_add(gap);
        let mut absorbed = Vec::new();
        for (&s, &e) in self.map.range(..=limit).rev() {
            if e < reach {
                break;
            }
            start = start.min(s);
            end = end.max(e);
            absorbed.push(s);
        }
        for s in absorbed {
            self.map.remove(&s);
        }
        self.map.insert(start, end);
    }

    /// Adds every range of `other`.
    pub fn extend(&mut self, other: &RangeSet, gap: u64) {
        for (s, e) in other.iter() {
            self.insert_with_gap(s, e, gap);
        }
    }

    /// The ranges in order, as `(start, end)`.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map.iter().map(|(&s, &e)| (s, e))
    }

    /// Cuts every range at `limit` (e.g. the file size).
    pub fn clip(&mut self, limit: u64) {
        let beyond: Vec<u64> = self.map.range(limit..).map(|(&s, _)| s).collect();
        for s in beyond {
            self.map.remove(&s);
        }
        if let Some(mut last) = self.map.last_entry()
            && *last.get() > limit
        {
            *last.get_mut() = limit;
        }
    }

    /// Total bytes covered.
    pub fn bytes(&self) -> u64 {
        self.iter().map(|(s, e)| e - s).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// As `[offset, length]` pairs (the access log and hot set format).
    pub fn to_pairs(&self) -> Vec<[u64; 2]> {
        self.iter().map(|(s, e)| [s, e - s]).collect()
    }

    /// From `[offset, length]` pairs, merging as needed.
    pub fn from_pairs(pairs: &[[u64; 2]]) -> Self {
        let mut set = RangeSet::new();
        for [off, len] in pairs {
            set.insert(*off, off.saturating_add(*len));
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(set: &RangeSet) -> Vec<(u64, u64)> {
        set.iter().collect()
    }

    #[test]
    fn overlapping_and_adjacent_ranges_merge() {
        let mut s = RangeSet::new();
        s.insert(100, 200);
        s.insert(300, 400);
        s.insert(0, 10);
        assert_eq!(ranges(&s), [(0, 10), (100, 200), (300, 400)]);
        s.insert(200, 300); // touches both neighbours
        assert_eq!(ranges(&s), [(0, 10), (100, 400)]);
        s.insert(5, 150); // overlaps both
        assert_eq!(ranges(&s), [(0, 400)]);
        s.insert(50, 60); // inside
        assert_eq!(ranges(&s), [(0, 400)]);
        assert_eq!(s.bytes(), 400);
        s.insert(7, 7); // empty
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_gap_merges_near_ranges_only() {
        let mut s = RangeSet::new();
        s.insert_with_gap(0, 100, 50);
        s.insert_with_gap(140, 200, 50);
        s.insert_with_gap(300, 400, 50);
        assert_eq!(ranges(&s), [(0, 200), (300, 400)]);
    }

    #[test]
    fn clip_cuts_at_the_limit() {
        let mut s = RangeSet::from_pairs(&[[0, 10], [20, 30], [60, 10]]);
        s.clip(35);
        assert_eq!(s.to_pairs(), [[0, 10], [20, 15]]);
        s.clip(20);
        assert_eq!(s.to_pairs(), [[0, 10]]);
        s.clip(0);
        assert!(s.is_empty());
    }
}
