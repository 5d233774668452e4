use std::fmt;

use rand::RngCore;

/// Where random bytes (keys, salts, ids) come from.
///
/// Production code uses [`RandomSource::os`], the operating system's CSPRNG. The
/// `testkit` feature adds [`RandomSource::seeded`], a deterministic generator used only
/// to pin known-answer vectors; never enable that feature in a deployment.
#[derive(Clone, Default)]
pub struct RandomSource {
    inner: Inner,
}

#[derive(Clone, Default)]
enum Inner {
    #[default]
    Os,
    #[cfg(feature = "testkit")]
    Seeded(std::sync::Arc<std::sync::Mutex<rand_chacha::ChaCha20Rng>>),
}

impl RandomSource {
    /// The operating system's CSPRNG.
    pub fn os() -> Self {
        Self { inner: Inner::Os }
    }

    /// A deterministic generator from a seed (test kit only: keys become predictable).
    #[cfg(feature = "testkit")]
    pub fn seeded(seed: u64) -> Self {
        use rand::SeedableRng;
        Self {
            inner: Inner::Seeded(std::sync::Arc::new(std::sync::Mutex::new(
                rand_chacha::ChaCha20Rng::seed_from_u64(seed),
            ))),
        }
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&self, buf: &mut [u8]) {
        match &self.inner {
            Inner::Os => rand::rngs::OsRng.fill_bytes(buf),
            #[cfg(feature = "testkit")]
            Inner::Seeded(rng) => rng
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .fill_bytes(buf),
        }
    }

    /// `N` random bytes.
    pub(crate) fn array<const N: usize>(&self) -> [u8; N] {
        let mut out = [0u8; N];
        self.fill(&mut out);
        out
    }

    /// 32 random bytes (for tests that need a secret of their own, such as a
    /// directory's account secret).
    #[cfg(feature = "testkit")]
    pub fn bytes32_for_tests(&self) -> [u8; 32] {
        self.bytes32()
    }

    /// 32 random bytes.
    pub(crate) fn bytes32(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        self.fill(&mut out);
        out
    }
}

impl fmt::Debug for RandomSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Os => f.write_str("RandomSource::Os"),
            #[cfg(feature = "testkit")]
            Inner::Seeded(_) => f.write_str("RandomSource::Seeded"),
        }
    }
}
