//! Password stretching: Argon2id with parameters bounded **before** any memory is
//! allocated, and a semaphore so that a login storm cannot exhaust memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;
use zeroize::Zeroize;

use crate::crypto::Key32;
use crate::error::{Error, Result};
use crate::format::slot::KdfParams;

/// The default cost of new password slots: OWASP's minimum for Argon2id (19 MiB, two
/// passes, one lane), about 20 to 40 ms on these machines.
pub const DEFAULT_KDF: KdfParams = KdfParams {
    m_kib: 19 * 1024,
    t: 2,
    p: 1,
};

/// The largest costs a deployment accepts from storage. A slot asking for more is refused
/// with [`Error::ExcessiveWork`] before anything is allocated, so these limits are what a
/// store attacker can make one derivation cost. By default they are the deployment's own
/// costs ([`KdfLimits::of`]): no slot in the store can make a login dearer than a login on
/// a slot the deployment wrote itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfLimits {
    /// Largest memory cost, KiB.
    pub max_m_kib: u32,
    /// Largest number of passes.
    pub max_t: u32,
    /// Largest number of lanes.
    pub max_p: u32,
}

impl Default for KdfLimits {
    /// The costs of [`DEFAULT_KDF`], and nothing above.
    fn default() -> Self {
        Self::of(&DEFAULT_KDF)
    }
}

impl KdfLimits {
    /// Limits that admit exactly `costs` and anything cheaper.
    pub const fn of(costs: &KdfParams) -> Self {
        Self {
            max_m_kib: costs.m_kib,
            max_t: costs.t,
            max_p: costs.p,
        }
    }

    /// These limits, raised where needed to admit `costs` as well.
    #[must_use]
    pub fn admitting(self, costs: &KdfParams) -> Self {
        Self {
            max_m_kib: self.max_m_kib.max(costs.m_kib),
            max_t: self.max_t.max(costs.t),
            max_p: self.max_p.max(costs.p),
        }
    }

    /// Checks `params` against these limits and Argon2's own minimums.
    ///
    /// # Errors
    /// [`Error::ExcessiveWork`] above a limit; [`Error::Tampered`] below Argon2's minimums
    /// (which no writer of this crate produces).
    pub fn check(&self, params: &KdfParams) -> Result<()> {
        if params.m_kib > self.max_m_kib || params.t > self.max_t || params.p > self.max_p {
            return Err(Error::ExcessiveWork {
                m_kib: params.m_kib,
                t: params.t,
                p: params.p,
            });
        }
        if params.t == 0 || params.p == 0 || params.m_kib < 8 * params.p {
            return Err(Error::Tampered);
        }
        Ok(())
    }
}

/// Working memory of Argon2id, kept by the [`KdfGate`] and reused from one derivation to
/// the next.
pub(crate) type KdfMemory = Vec<Block>;

/// Runs Argon2id in `memory` (grown as needed): `password` and `salt` to 32 bytes. The
/// caller has checked `params`.
pub(crate) fn argon2id(
    password: &[u8],
    salt: &[u8; 32],
    params: &KdfParams,
    memory: &mut KdfMemory,
) -> Result<Key32> {
    let params =
        Params::new(params.m_kib, params.t, params.p, Some(32)).map_err(|_| Error::Tampered)?;
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut out = zeroize::Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into_with_memory(password, salt, &mut out[..], &mut memory[..blocks])
        .map_err(|_| Error::Tampered)?;
    Ok(Key32::from_bytes(*out))
}

/// Bounds how many key derivations run at once (default: the number of cores), and owns
/// their working memory: one Argon2 buffer per permit, reused and wiped after each use, so
/// memory stays at `permits × one derivation` whatever the number of logins (allocating
/// 19 MiB per login instead fragments the allocator's per-thread heaps until a login
/// storm holds hundreds of MiB).
#[derive(Debug, Clone)]
pub struct KdfGate {
    permits: Arc<Semaphore>,
    memory: Arc<Mutex<Vec<KdfMemory>>>,
    derivations: Arc<AtomicU64>,
}

impl KdfGate {
    /// A gate letting `concurrent` derivations run at once.
    pub fn new(concurrent: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrent.max(1))),
            memory: Arc::default(),
            derivations: Arc::default(),
        }
    }

    /// How many derivations this gate (and its clones) has run: what a login cost, as an
    /// operator (or a test) can count it.
    pub fn derivations(&self) -> u64 {
        self.derivations.load(Ordering::Relaxed)
    }

    /// Runs the derivation `work` on a blocking thread once a permit is free, lending it
    /// the permit's working memory (wiped afterwards).
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut KdfMemory) -> T + Send + 'static,
    ) -> Result<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Config("key derivation gate closed".into()))?;
        let mut memory = self
            .memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default();
        self.derivations.fetch_add(1, Ordering::Relaxed);
        let (result, memory) = tokio::task::spawn_blocking(move || {
            let result = work(&mut memory);
            memory.iter_mut().for_each(Zeroize::zeroize);
            (result, memory)
        })
        .await
        .map_err(|e| Error::Config(format!("key derivation task: {e}")))?;
        self.memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(memory);
        Ok(result)
    }
}

impl Default for KdfGate {
    fn default() -> Self {
        Self::new(std::thread::available_parallelism().map_or(2, usize::from))
    }
}
