//! Support shared by the integration tests (not a test target itself).
#![allow(dead_code)] // each test file uses its own part

/// A tiny xorshift PRNG, so the tests need no `rand` dependency and every random
/// sequence is reproducible from its seed.
pub struct XorShift(u64);

impl XorShift {
    /// A generator for `seed` (any value, zero included).
    pub fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub mod dump;

#[cfg(all(feature = "tracing", feature = "metrics"))]
pub mod telemetry;
