//! Seeded randomness for hostile pod states: a generator small enough to
//! stay the same across versions (a failing seed must replay the same
//! bytes forever), and the byte strings the kernel lets a pod put where
//! the agent reads.

/// SplitMix64: a fixed, well-mixed sequence per seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A seed nobody chose: the clock and the process.
    pub fn fresh_seed() -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng::new(nanos ^ (u64::from(std::process::id()) << 32)).next_u64()
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// An interface name the kernel accepts (`dev_valid_name`): 1 to 15
    /// bytes, none of them NUL, `/`, `:` or whitespace; `%` is left out
    /// too (the kernel would number it). At least one byte is outside
    /// ASCII or a control character, so that no name is plain text.
    pub fn link_name(&mut self) -> Vec<u8> {
        let len = self.between(1, 15) as usize;
        let mut name: Vec<u8> = (0..len).map(|_| self.name_byte()).collect();
        let at = self.below(len as u64) as usize;
        name[at] = *self.pick(&[0xff, 0xfe, 0xc0, 0x01, 0x1b, 0x7f, 0xf8]);
        if name == b"." || name == b".." {
            name.push(0xff);
        }
        name
    }

    fn name_byte(&mut self) -> u8 {
        loop {
            let b = self.between(1, 255) as u8;
            if !matches!(
                b,
                b'/' | b':' | b'%' | b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'
            ) {
                return b;
            }
        }
    }

    /// An interface alias: 1 to 255 bytes of anything but NUL, with a
    /// newline and a byte outside UTF-8 in it.
    pub fn alias(&mut self) -> Vec<u8> {
        let len = self.between(2, 255) as usize;
        let mut alias: Vec<u8> = (0..len).map(|_| self.between(1, 255) as u8).collect();
        alias[0] = 0xff;
        alias[len - 1] = b'\n';
        alias
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_bytes() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        for _ in 0..100 {
            assert_eq!(a.link_name(), b.link_name());
        }
        // Pinned: a kept seed must mean the same case in every version.
        assert_eq!(Rng::new(1).next_u64(), 0x910a_2dec_8902_5cc1);
    }

    #[test]
    fn names_are_what_the_kernel_accepts() {
        let mut r = Rng::new(7);
        for _ in 0..1000 {
            let n = r.link_name();
            assert!((1..=15).contains(&n.len()));
            assert!(!n
                .iter()
                .any(|b| matches!(b, 0 | b'/' | b':' | b'%') || b.is_ascii_whitespace()));
            assert!(std::str::from_utf8(&n).is_err() || n.iter().any(|b| b.is_ascii_control()));
        }
    }
}
