//! A per-source ring buffer of recently received packets, for answering NACKs.
//!
//! Owns [`PacketCache`]: slots are indexed by the low bits of the RTP sequence number and store
//! the sequence number beside the packet, so a lookup of a sequence number whose slot has since
//! been reused returns `None`. Insert and lookup are O(1) and do not allocate after construction.

/// Smallest number of slots a cache has.
pub const MIN_CAPACITY: usize = 64;
/// Largest number of slots a cache has: a quarter of the sequence space, so slot reuse can never
/// be confused with sequence-number wrap-around.
pub const MAX_CAPACITY: usize = 1 << 14;

/// Ring buffer of the last packets of one source, keyed by RTP sequence number.
#[derive(Debug, Clone)]
pub struct PacketCache<P: Clone> {
    slots: Vec<Option<(u16, P)>>,
    /// `slots.len() - 1`; `slots.len()` is a power of two.
    mask: usize,
    occupied: usize,
}

impl<P: Clone> PacketCache<P> {
    /// Creates a cache holding up to `capacity` packets, rounded up to a power of two and clamped
    /// to [`MIN_CAPACITY`]..=[`MAX_CAPACITY`].
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity
            .clamp(MIN_CAPACITY, MAX_CAPACITY)
            .next_power_of_two();
        Self {
            slots: vec![None; capacity],
            mask: capacity - 1,
            occupied: 0,
        }
    }

    /// Stores `packet` under `seq`, replacing whatever occupied its slot (an older packet one lap
    /// behind, or a retransmitted copy of the same sequence number).
    pub fn insert(&mut self, seq: u16, packet: P) {
        let index = self.index_of(seq);
        if let Some(slot) = self.slots.get_mut(index) {
            if slot.is_none() {
                self.occupied += 1;
            }
            *slot = Some((seq, packet));
        }
    }

    /// The packet stored under `seq`, if it is still in the cache.
    pub fn get(&self, seq: u16) -> Option<&P> {
        match self.slots.get(self.index_of(seq))? {
            Some((stored_seq, packet)) if *stored_seq == seq => Some(packet),
            _ => None,
        }
    }

    /// Number of packets currently stored.
    pub fn len(&self) -> usize {
        self.occupied
    }

    pub fn is_empty(&self) -> bool {
        self.occupied == 0
    }

    /// Number of slots (the most packets the cache can hold).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Drops every stored packet, keeping the allocation.
    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|slot| *slot = None);
        self.occupied = 0;
    }

    fn index_of(&self, seq: u16) -> usize {
        usize::from(seq) & self.mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_rounded_up_and_clamped() {
        assert_eq!(PacketCache::<u8>::new(0).capacity(), 64);
        assert_eq!(PacketCache::<u8>::new(64).capacity(), 64);
        assert_eq!(PacketCache::<u8>::new(65).capacity(), 128);
        assert_eq!(PacketCache::<u8>::new(1000).capacity(), 1024);
        assert_eq!(PacketCache::<u8>::new(usize::MAX).capacity(), MAX_CAPACITY);
    }

    #[test]
    fn insert_and_get() {
        let mut cache = PacketCache::new(64);
        assert!(cache.is_empty());
        cache.insert(10, "a");
        cache.insert(11, "b");
        assert_eq!(cache.get(10), Some(&"a"));
        assert_eq!(cache.get(11), Some(&"b"));
        assert_eq!(cache.get(12), None);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn overwritten_slot_returns_none_for_the_old_seq() {
        let mut cache = PacketCache::new(64);
        cache.insert(5, 5u32);
        cache.insert(5 + 64, 69u32);
        assert_eq!(cache.get(5), None);
        assert_eq!(cache.get(69), Some(&69));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn same_seq_replaces_packet() {
        let mut cache = PacketCache::new(64);
        cache.insert(7, 1);
        cache.insert(7, 2);
        assert_eq!(cache.get(7), Some(&2));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn keeps_the_last_capacity_packets_across_wrap() {
        let mut cache = PacketCache::new(64);
        for i in 0..200u32 {
            let seq = 65_500u16.wrapping_add(i as u16);
            cache.insert(seq, i);
        }
        assert_eq!(cache.len(), 64);
        for i in 0..200u32 {
            let seq = 65_500u16.wrapping_add(i as u16);
            let expected = (i >= 136).then_some(i);
            assert_eq!(cache.get(seq).copied(), expected, "seq {seq}");
        }
        assert_eq!(cache.get(65_535).copied(), None);
        assert_eq!(cache.get(163).copied(), Some(199));
    }

    #[test]
    fn full_sequence_lap_does_not_alias() {
        let mut cache = PacketCache::new(64);
        cache.insert(100, 1);
        // Same slot, exactly 65536 / 64 laps later is seq 100 again; any other seq in the slot
        // must not answer for 100.
        cache.insert(100u16.wrapping_add(64 * 3), 2);
        assert_eq!(cache.get(100), None);
    }

    #[test]
    fn clear_empties() {
        let mut cache = PacketCache::new(64);
        cache.insert(1, ());
        cache.clear();
        assert!(cache.is_empty());
        assert_eq!(cache.get(1), None);
    }
}
