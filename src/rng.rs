//! The one seedable generator of incc: xoshiro256++ seeded through SplitMix64. Tiny, fast and
//! identical on every platform, so that a seed names one stream: initial weights, synthetic
//! inputs, the order of training data and each example's augmentation.

/// SplitMix64: the seeding generator (and, alone, the source of synthetic inputs).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    #[must_use]
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// xoshiro256++.
#[derive(Clone, Debug)]
pub struct Rng([u64; 4]);

impl Rng {
    #[must_use]
    pub fn new(seed: u64) -> Rng {
        let mut sm = SplitMix64::new(seed);
        Rng([sm.next_u64(), sm.next_u64(), sm.next_u64(), sm.next_u64()])
    }

    /// A stream named by several numbers (e.g. seed, epoch, example): each key is folded in
    /// through a SplitMix64 step, so that nearby keys give unrelated streams.
    #[must_use]
    pub fn keyed(keys: &[u64]) -> Rng {
        let h = keys.iter().fold(0x6a09_e667_f3bc_c908u64, |h, &k| SplitMix64::new(h ^ k).next_u64());
        Rng::new(h)
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = (s[0].wrapping_add(s[3])).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in (0, 1): never 0 or 1, so logarithms of it are finite.
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n` > 0), by the multiply-shift map; its bias, below n / 2^64, is far
    /// under anything a data set could show.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_streams_differ_and_repeat() {
        let first = |keys: &[u64]| Rng::keyed(keys).next_u64();
        assert_eq!(first(&[1, 2, 3]), first(&[1, 2, 3]));
        assert_ne!(first(&[1, 2, 3]), first(&[1, 3, 2]));
        assert_ne!(first(&[1, 2]), first(&[1, 2, 0]));
    }

    #[test]
    fn below_and_shuffle_cover_their_range() {
        let mut rng = Rng::new(5);
        let mut seen = [0usize; 7];
        for _ in 0..7000 {
            seen[rng.below(7)] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
        let mut items: Vec<usize> = (0..100).collect();
        rng.shuffle(&mut items);
        assert_ne!(items, (0..100).collect::<Vec<_>>());
        items.sort_unstable();
        assert_eq!(items, (0..100).collect::<Vec<_>>());
    }
}
