//! `AudioLevelWindow`: the mean audio level (RFC 6464 dBov, 0 loudest … 127 silence) of one
//! published audio track over a reporting interval — what the media loop hands to the room's
//! dominant-speaker detection a few times a second instead of one message per packet.

/// Levels of one track since the last [`AudioLevelWindow::take`].
#[derive(Debug, Default, Clone, Copy)]
pub struct AudioLevelWindow {
    sum: u32,
    count: u32,
}

impl AudioLevelWindow {
    /// One packet's level (values above 127 count as 127).
    pub fn add(&mut self, level_dbov: u8) {
        self.sum = self.sum.saturating_add(u32::from(level_dbov.min(127)));
        self.count = self.count.saturating_add(1);
    }

    /// The mean level since the last call, and a fresh window; `None` without packets.
    pub fn take(&mut self) -> Option<u8> {
        let window = std::mem::take(self);
        (window.count > 0).then(|| (window.sum / window.count) as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_of_the_window_then_empty() {
        let mut w = AudioLevelWindow::default();
        assert_eq!(w.take(), None);
        for level in [10, 20, 30, 200] {
            w.add(level);
        }
        assert_eq!(w.take(), Some((10 + 20 + 30 + 127) / 4));
        assert_eq!(w.take(), None);
    }
}
