//! The iteration order of a CPython (3.8+, 64-bit) `set` of `(int, int)` tuples.
//!
//! InternVL sorts its candidate tile grids by tile count with a stable sort over a set,
//! so grids with equal counts keep the set's iteration order, and that order decides
//! ties in the grid choice. The order follows from CPython's tuple hash and its
//! open-addressing table (`Objects/setobject.c`), emulated here.

/// CPython's `PySet_MINSIZE`: the initial table size.
const MIN_SIZE: usize = 8;
/// Slots probed linearly before jumping (`LINEAR_PROBES`).
const LINEAR_PROBES: usize = 9;
/// `PERTURB_SHIFT`: how fast the high hash bits enter the probe sequence.
const PERTURB_SHIFT: u32 = 5;

/// `hash((a, b))` for non-negative ints below 2^61 - 1 (which hash to themselves): the
/// xxHash-based tuple hash of CPython 3.8+.
pub(super) fn tuple_hash(a: u64, b: u64) -> u64 {
    const PRIME_1: u64 = 11_400_714_785_074_694_791;
    const PRIME_2: u64 = 14_029_467_366_897_019_727;
    const PRIME_5: u64 = 2_870_177_450_012_600_261;
    let mut acc = PRIME_5;
    for lane in [a, b] {
        acc = acc.wrapping_add(lane.wrapping_mul(PRIME_2));
        acc = acc.rotate_left(31);
        acc = acc.wrapping_mul(PRIME_1);
    }
    // The tuple length, mangled as CPython does to keep hash(()) stable.
    acc = acc.wrapping_add(2 ^ (PRIME_5 ^ 3_527_539));
    // -1 is reserved for errors in CPython.
    if acc == u64::MAX {
        1_546_275_796
    } else {
        acc
    }
}

/// A CPython set of `(u32, u32)` tuples, reduced to what decides iteration order.
pub(super) struct PySet {
    /// Slots: `(hash, key)` or empty. No element is ever removed, so there are no dummies.
    table: Vec<Option<(u64, (u32, u32))>>,
    /// Number of occupied slots (`fill` == `used` without deletions).
    used: usize,
}

impl PySet {
    pub(super) fn new() -> Self {
        PySet {
            table: vec![None; MIN_SIZE],
            used: 0,
        }
    }

    /// `set.add(key)`: a key already present leaves the table untouched.
    pub(super) fn add(&mut self, key: (u32, u32)) {
        let hash = tuple_hash(key.0.into(), key.1.into());
        let slot = match probe(&self.table, hash, |entry| entry == &(hash, key)) {
            Probe::Found => return,
            Probe::Empty(slot) => slot,
        };
        self.table[slot] = Some((hash, key));
        self.used += 1;
        let mask = self.table.len() - 1;
        if self.used * 5 >= mask * 3 {
            let min_used = if self.used > 50_000 {
                self.used * 2
            } else {
                self.used * 4
            };
            self.resize(min_used);
        }
    }

    /// The elements in iteration order (table slot order).
    pub(super) fn into_ordered(self) -> Vec<(u32, u32)> {
        self.table
            .into_iter()
            .flatten()
            .map(|(_, key)| key)
            .collect()
    }

    /// `set_table_resize`: the smallest power of two above `min_used`, re-inserting the
    /// old entries in old slot order.
    fn resize(&mut self, min_used: usize) {
        let mut size = MIN_SIZE;
        while size <= min_used {
            size <<= 1;
        }
        let old = std::mem::replace(&mut self.table, vec![None; size]);
        for (hash, key) in old.into_iter().flatten() {
            if let Probe::Empty(slot) = probe(&self.table, hash, |_| false) {
                self.table[slot] = Some((hash, key));
            }
        }
    }
}

enum Probe {
    Found,
    Empty(usize),
}

/// CPython's probe sequence: from `hash & mask`, look at up to `LINEAR_PROBES` following
/// slots (when they fit before the table end), then jump with the perturbed recurrence.
fn probe(
    table: &[Option<(u64, (u32, u32))>],
    hash: u64,
    is_match: impl Fn(&(u64, (u32, u32))) -> bool,
) -> Probe {
    let mask = table.len() - 1;
    let mut index = (hash as usize) & mask;
    let mut perturb = hash;
    loop {
        let run = if index + LINEAR_PROBES <= mask {
            LINEAR_PROBES + 1
        } else {
            1
        };
        for (offset, slot) in table[index..index + run].iter().enumerate() {
            match slot {
                None => return Probe::Empty(index + offset),
                Some(entry) if is_match(entry) => return Probe::Found,
                Some(_) => {}
            }
        }
        perturb >>= PERTURB_SHIFT;
        index = (index
            .wrapping_mul(5)
            .wrapping_add(1)
            .wrapping_add(perturb as usize))
            & mask;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuple_hash_matches_cpython() {
        // python3 -c "print(hash((1, 1)), hash((2, 3)))" on 64-bit CPython 3.11
        assert_eq!(tuple_hash(1, 1) as i64, 8_389_048_192_121_911_274);
        assert_eq!(tuple_hash(2, 3) as i64, 8_409_376_899_596_376_432);
    }

    #[test]
    fn duplicates_do_not_change_the_order() {
        let mut set = PySet::new();
        for key in [(1, 2), (2, 1), (1, 2), (3, 1)] {
            set.add(key);
        }
        assert_eq!(set.into_ordered().len(), 3);
    }
}
