//! Ids for stored records that sort by creation time and stay unique across workers.

/// Hands out ids `<prefix><13 hex digits of ms><4 of a sequence within the ms><12 random>`: they
/// sort by creation within one worker, and 48 random bits keep two tabs' ids of one millisecond
/// apart.
#[derive(Debug, Default)]
pub(crate) struct IdClock {
    last_ms: u64,
    sequence: u64,
}

impl IdClock {
    /// The next id at `now` (ms), with random bits from `rng`.
    pub(crate) fn next(&mut self, prefix: &str, now: u64, rng: &mut fastrand::Rng) -> String {
        if now > self.last_ms {
            self.last_ms = now;
            self.sequence = 0;
        } else {
            self.sequence += 1;
            if self.sequence > 0xffff {
                // 65 536 ids in one millisecond: borrow the next one (the clock never sees it).
                self.last_ms += 1;
                self.sequence = 0;
            }
        }
        let random = rng.u64(..) & 0xffff_ffff_ffff;
        format!(
            "{prefix}{:013x}{:04x}{random:012x}",
            self.last_ms, self.sequence
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_then_sequence_even_past_a_full_millisecond() {
        let mut clock = IdClock::default();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut ids: Vec<String> = (0..70_000).map(|_| clock.next("x", 5, &mut rng)).collect();
        ids.push(clock.next("x", 3, &mut rng));
        ids.push(clock.next("x", 9, &mut rng));
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(ids.iter().all(|id| id.len() == 30 && id.starts_with('x')));
    }
}
