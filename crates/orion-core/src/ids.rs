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
        let mut id = String::with_capacity(prefix.len() + 29);
        id.push_str(prefix);
        push_hex(&mut id, self.last_ms, 13);
        push_hex(&mut id, self.sequence, 4);
        push_hex(&mut id, random, 12);
        id
    }
}

/// Appends the `digits` low hex digits of `value`, lowercase and zero-padded: `format!`'s
/// `{:013x}` without the formatting machinery, which was a tenth of the cost of enqueueing a job.
fn push_hex(id: &mut String, value: u64, digits: u32) {
    for place in (0..digits).rev() {
        let nibble = (value >> (place * 4)) & 0xf;
        id.extend(char::from_digit(nibble as u32, 16));
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

    #[test]
    fn hex_digits_are_those_format_writes() {
        for (value, digits) in [
            (0u64, 4),
            (0xabc, 4),
            (0x1_9a2b_3c4d_5e6f, 13),
            (u64::MAX, 12),
        ] {
            let mut id = String::new();
            push_hex(&mut id, value, digits);
            let full = format!("{value:016x}");
            assert_eq!(id, full[full.len() - digits as usize..], "{value:x}");
        }
    }
}
