//! A tiny deterministic generator (xorshift64*) for the seeded randomized tests of every
//! layer: a failure names its seed and replays exactly. Never for secrets (those come from
//! `secret`, i.e. the OS).

/// xorshift64* over a non-zero state.
#[derive(Debug, Clone)]
pub struct SeededRng(u64);

impl SeededRng {
    /// A generator for `seed` (0 is mapped to 1: xorshift has no zero state).
    pub fn new(seed: u64) -> SeededRng {
        SeededRng(seed.max(1))
    }

    /// The seed in `LLMBOX_FUZZ_SEED`, else `default`.
    pub fn from_env(default: u64) -> SeededRng {
        let seed = std::env::var("LLMBOX_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default);
        SeededRng::new(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` must be above 0).
    pub fn below(&mut self, n: usize) -> usize {
        // The remainder is below `n`, which is a usize.
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.next_u64().is_multiple_of(n.max(1))
    }

    /// One of `items` (which must not be empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Up to `max` pieces drawn from `pieces`, joined.
    pub fn text(&mut self, pieces: &[&str], max: usize) -> String {
        let n = self.below(max + 1);
        (0..n).map(|_| *self.pick(pieces)).collect()
    }

    /// Up to `max` random bytes.
    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_replays_the_same_numbers() {
        let (mut a, mut b) = (SeededRng::new(7), SeededRng::new(7));
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert!(xs.windows(2).all(|w| w[0] != w[1]));
        assert!((0..1000).all(|_| a.below(3) < 3));
    }
}
