//! One GCRA limit per key, in sharded maps with a bound on the keys remembered.
//!
//! Implementation notes. A key's whole state is its TAT (a `u64`, see `gcra.rs`), kept
//! in one of N shards, each a hash table of `(key, TAT)` behind its own lock (N a power
//! of two, four per CPU by default), chosen by the top bits of the key's hash (computed
//! once per call and stored with the key, so the table never rehashes): different keys
//! rarely share a lock, and a decision holds it for one map lookup and a few integer
//! operations. The clock is read before the lock is taken.
//!
//! Memory is bounded by `max_keys`, split across the shards; a full shard forgets
//! first the keys that are as good as fresh, then the keys closest to fresh
//! (`ShardMap::make_room`). A new key is never refused for lack of room.
//!
//! Waits claim the key's slot under the shard lock (or fail at once past their
//! deadline), sleep on the clock with no lock held, and, if cancelled, give the slot
//! back under the lock with the same rule as the direct limiter (`gcra::returned`).

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::{CheckError, InsufficientCapacity, NotUntil, WaitError};
use super::gcra::{decide, returned, Grant, Refusal, NEVER};
use super::quota::{sleep_until_ready, Bound, Quota, NANOS_PER_SEC};
use super::tally::Tally;
use crate::cancel::{CancelReason, CancelToken};
use crate::clock::{Clock, SystemClock};
use crate::config::ConfigError;
use crate::panic::{drop_caught, drop_quietly};
use crate::sync::{AtomicU64, Mutex, MutexGuard, Ordering};
use crate::timeline::Timeline;
use crate::wait::Until;

use hashbrown::HashTable;

const DEFAULT_MAX_KEYS: usize = 100_000;

/// A GCRA rate limit per key: each key gets `rate` cells per period and bursts of up to
/// `burst`, independently of the others, with at most `max_keys` keys remembered.
///
/// Built like [`RateLimiter`](crate::RateLimiter): [`per_second`](KeyedRateLimiter::per_second),
/// [`per_minute`](KeyedRateLimiter::per_minute) or
/// [`with_period`](KeyedRateLimiter::with_period), then
/// [`max_keys`](KeyedRateLimiterBuilder::max_keys) (100,000 by default).
///
/// [`check_key`](KeyedRateLimiter::check_key) decides at once; [`wait_key`](KeyedRateLimiter::wait_key)
/// and its bounded forms sleep on the clock until the key's slot, fail at once when the
/// slot lies past the deadline, and give the slot back when cancelled while asleep,
/// exactly as [`RateLimiter`](crate::RateLimiter)'s waits do.
///
/// Keys whose state is indistinguishable from a fresh key's are forgotten first when
/// the bound is reached, so a key is never refused for lack of room and memory never
/// exceeds the bound. See [`KeyedStats`] for what eviction cost.
///
/// # Keys that panic or call back
///
/// The key's `Hash` runs before any lock is taken; `Eq` and (for a key not yet
/// remembered) `Clone` run under its shard's lock and change nothing when they panic:
/// the panic reaches the caller that passed the key, the lock is released (it does not
/// poison), no cell is counted for that call, and the shard stays usable. Keys the
/// limiter forgets (eviction, [`retain_recent`](KeyedRateLimiter::retain_recent), its
/// own drop) are dropped outside every lock, each inside the panic boundary; a
/// panicking `Drop` is caught and counted in [`KeyedStats::key_drop_panics`]. A key's
/// `Eq` or `Clone` that calls back into the limiter for a key of the same shard would
/// deadlock on that shard's lock; it panics instead (the panic reaches the outer
/// caller as above). Calls back from `Hash` or `Drop` work normally.
///
/// # Example
///
/// ```
/// use corral::{KeyedRateLimiter, clock::ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let per_user = KeyedRateLimiter::per_second(2).clock(clock.clone()).build()?;
/// assert!(per_user.check_key(&"alice").is_ok());
/// assert!(per_user.check_key(&"alice").is_ok());
/// assert!(per_user.check_key(&"alice").is_err()); // alice used her burst
/// assert!(per_user.check_key(&"bob").is_ok()); // bob is independent
/// clock.advance(Duration::from_millis(500));
/// assert!(per_user.check_key(&"alice").is_ok());
/// # Ok::<(), corral::ConfigError>(())
/// ```
pub struct KeyedRateLimiter<K, C: Clock = SystemClock> {
    shards: Box<[Shard<K>]>,
    shard_bits: u32,
    hasher: RandomState,
    interval: u64,
    burst: u64,
    max_keys: usize,
    /// Keys whose `Drop` panicked when the limiter forgot them (caught, counted).
    key_drop_panics: AtomicU64,
    time: Timeline<C>,
    tally: Tally,
}

/// One shard on its own cache lines, so neighbours' locks do not false-share.
#[repr(align(128))]
struct Shard<K> {
    map: Mutex<ShardMap<K>>,
}

struct ShardMap<K> {
    entries: HashTable<Entry<K>>,
    cap: usize,
    evicted_idle: u64,
    evicted_active: u64,
    /// The generation the next inserted key gets.
    next_gen: u64,
    /// The latest instant at which a key was forgotten as idle. A caller that read
    /// the time before then must not bring such a key back with a full burst as of
    /// its older instant, so a fresh key never starts earlier than this.
    forgotten_at: u64,
}

/// One key's state, with its hash kept so the table never rehashes a key.
struct Entry<K> {
    hash: u64,
    tat: u64,
    /// Which insertion of the key this is: a give-back applies only to the entry its
    /// grant was claimed on, never to a key forgotten and seen again since.
    gen: u64,
    key: K,
}

std::thread_local! {
    /// The shard whose lock this thread holds while it runs the key's own code (`Eq`,
    /// `Clone`): a call back into that shard from there would deadlock, so it panics.
    static IN_KEY_CODE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the current thread as running key code under `shard`'s lock until dropped
/// (also on unwind).
struct KeyCode(usize);

impl KeyCode {
    fn enter<K>(shard: &Shard<K>) -> KeyCode {
        let id = shard as *const Shard<K> as usize;
        let outer = IN_KEY_CODE.with(|held| held.replace(id));
        KeyCode(outer)
    }
}

impl Drop for KeyCode {
    fn drop(&mut self) {
        IN_KEY_CODE.with(|held| held.set(self.0));
    }
}

impl<K> Shard<K> {
    /// Locks the shard; panics instead of deadlocking when called from the key's own
    /// `Eq` or `Clone` running under this very lock.
    #[cfg(not(loom))]
    fn lock(&self) -> MutexGuard<'_, ShardMap<K>> {
        if let Some(map) = self.map.try_lock() {
            return map;
        }
        let id = self as *const Shard<K> as usize;
        if IN_KEY_CODE.with(std::cell::Cell::get) == id {
            panic!(
                "KeyedRateLimiter called from a key's Eq or Clone while that key's shard is locked (it would deadlock)"
            );
        }
        self.map.lock()
    }

    /// Under loom (one OS thread runs every model thread) the re-entrancy check
    /// would be meaningless; no model calls back from key code.
    #[cfg(loom)]
    fn lock(&self) -> MutexGuard<'_, ShardMap<K>> {
        self.map.lock()
    }
}

impl<K: Hash + Eq> ShardMap<K> {
    /// Takes out every key whose state is that of a fresh key at `now` (into
    /// `forgotten`, to be dropped once the lock is released); returns how many.
    fn drop_idle(&mut self, now: u64, forgotten: &mut Vec<Entry<K>>) -> usize {
        let before = forgotten.len();
        forgotten.extend(self.entries.extract_if(|e| e.tat <= now));
        let idle = forgotten.len() - before;
        if idle > 0 {
            self.forgotten_at = self.forgotten_at.max(now);
        }
        self.evicted_idle = self
            .evicted_idle
            .saturating_add(u64::try_from(idle).unwrap_or(u64::MAX));
        idle
    }

    /// Makes room for one more key at `now`; the keys taken out go to `forgotten`.
    ///
    /// The shard first drops every key whose TAT is at or before now: such a key is
    /// indistinguishable from one never seen, so forgetting it changes no decision.
    /// Only if that frees less than an eighth of the shard are the keys closest to
    /// fresh (smallest TAT) dropped too, up to an eighth, so the scan is paid once per
    /// many inserts. A forgotten active key is treated as fresh when it comes back: it
    /// may be admitted early, which is counted in [`KeyedStats::evicted_active`] and
    /// avoided by a `max_keys` comfortably above the number of keys active within one
    /// burst window (the bound is split evenly across shards, so one shard can fill
    /// before the rest).
    fn make_room(&mut self, now: u64, forgotten: &mut Vec<Entry<K>>) {
        self.drop_idle(now, forgotten);
        let batch = (self.cap / 8).max(1);
        if self.entries.len() + batch <= self.cap {
            return;
        }
        // (Nearly) every key is active: forget those closest to fresh, a batch at a
        // time, so the scan above is paid once per `batch` new keys.
        let want = self.entries.len() + batch - self.cap;
        let mut tats: Vec<u64> = self.entries.iter().map(|e| e.tat).collect();
        let (_, threshold, _) = tats.select_nth_unstable(want - 1);
        let threshold = *threshold;
        let before = forgotten.len();
        forgotten.extend(self.entries.extract_if(|e| e.tat <= threshold));
        self.evicted_active = self
            .evicted_active
            .saturating_add(u64::try_from(forgotten.len() - before).unwrap_or(u64::MAX));
    }
}

/// Configures a [`KeyedRateLimiter`]; made by [`KeyedRateLimiter::per_second`] and friends.
///
/// # Example
///
/// ```
/// use corral::KeyedRateLimiter;
///
/// let limiter = KeyedRateLimiter::per_minute(600).burst(20).max_keys(10_000).build()?;
/// assert!(limiter.check_key(&42u64).is_ok());
/// # Ok::<(), corral::ConfigError>(())
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct KeyedRateLimiterBuilder<K, C = SystemClock> {
    quota: Quota,
    burst: Option<u32>,
    max_keys: usize,
    shards: Option<usize>,
    clock: C,
    name: Option<Arc<str>>,
    key: PhantomData<fn(K)>,
}

impl<K> KeyedRateLimiter<K> {
    /// The largest [`max_keys`](KeyedRateLimiterBuilder::max_keys) accepted: 2^26
    /// (about 67 million keys). Above it `build` returns a [`ConfigError`] naming
    /// `max_keys`.
    pub const MAX_KEYS: usize = 1 << 26;
}

impl<K: Hash + Eq + Clone> KeyedRateLimiter<K> {
    /// Each key gets `cells` per second, with a burst of `cells` by default.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::KeyedRateLimiter::per_second(1).build()?;
    /// assert!(limiter.check_key(&"10.0.0.1").is_ok());
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn per_second(cells: u32) -> KeyedRateLimiterBuilder<K> {
        KeyedRateLimiterBuilder::new(Quota::per(cells, NANOS_PER_SEC, "per_second"))
    }

    /// Each key gets `cells` per minute, with a burst of `cells` by default.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::KeyedRateLimiter::per_minute(6).build()?;
    /// assert!(limiter.check_key(&1u32).is_ok());
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn per_minute(cells: u32) -> KeyedRateLimiterBuilder<K> {
        KeyedRateLimiterBuilder::new(Quota::per(cells, 60 * NANOS_PER_SEC, "per_minute"))
    }

    /// Each key gets one cell per `period`, with a burst of 1 by default.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// let limiter = corral::KeyedRateLimiter::with_period(Duration::from_secs(1)).build()?;
    /// assert!(limiter.check_key(&'a').is_ok());
    /// assert!(limiter.check_key(&'a').is_err());
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn with_period(period: Duration) -> KeyedRateLimiterBuilder<K> {
        KeyedRateLimiterBuilder::new(Quota::with_period(period))
    }
}

impl<K> KeyedRateLimiterBuilder<K> {
    fn new(quota: Quota) -> Self {
        KeyedRateLimiterBuilder {
            quota,
            burst: None,
            max_keys: DEFAULT_MAX_KEYS,
            shards: None,
            clock: SystemClock,
            name: None,
            key: PhantomData,
        }
    }
}

impl<K: Hash + Eq + Clone, C: Clock> KeyedRateLimiterBuilder<K, C> {
    /// The most cells one key may use at one instant. `0` is reported by `build`.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::KeyedRateLimiter::per_second(10).burst(1).build()?;
    /// assert!(limiter.check_key(&"k").is_ok());
    /// assert!(limiter.check_key(&"k").is_err());
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// The most keys remembered at once (100,000 by default). `0`, or more than
    /// [`KeyedRateLimiter::MAX_KEYS`], is reported by `build`.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::KeyedRateLimiter::per_second(1).max_keys(2).build()?;
    /// for key in 0..10u32 {
    ///     assert!(limiter.check_key(&key).is_ok()); // never refused for lack of room
    /// }
    /// assert!(limiter.len() <= 2);
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// The number of independently locked shards (rounded up to a power of two; four
    /// per CPU by default, never more than `max_keys` nor 65,536: a larger value is
    /// capped there). `0` is reported by `build`.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::KeyedRateLimiter::per_second(1).shards(4).build()?;
    /// # let _ = limiter.check_key(&0u8);
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// The clock the limiter reads ([`SystemClock`] by default).
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{KeyedRateLimiter, clock::ManualClock};
    /// let limiter = KeyedRateLimiter::per_second(1).clock(ManualClock::new()).build()?;
    /// # let _ = limiter.check_key(&0u8);
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn clock<C2: Clock>(self, clock: C2) -> KeyedRateLimiterBuilder<K, C2> {
        KeyedRateLimiterBuilder {
            quota: self.quota,
            burst: self.burst,
            max_keys: self.max_keys,
            shards: self.shards,
            clock,
            name: self.name,
            key: PhantomData,
        }
    }

    /// A name for the limiter, shown in its `Debug`, in the thread dump (as "waiting
    /// for a slot of "name""), and in events and metrics.
    ///
    /// ```
    /// let per_user = corral::KeyedRateLimiter::<u64>::per_second(5).name("per-user").build()?;
    /// assert_eq!(per_user.name(), Some("per-user"));
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(Arc::from(name.into()));
        self
    }

    /// Builds the limiter; every key starts fresh, with its whole burst.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: `per_second`/`per_minute`/`with_period`
    /// for a zero rate or period, `burst` for a zero (or too large) burst, `max_keys`
    /// for 0 or more than [`KeyedRateLimiter::MAX_KEYS`], `shards` for 0.
    ///
    /// # Example
    ///
    /// ```
    /// let err = corral::KeyedRateLimiter::<u64>::per_second(1).max_keys(0).build().unwrap_err();
    /// assert_eq!(err.field(), "max_keys");
    /// ```
    pub fn build(self) -> Result<KeyedRateLimiter<K, C>, ConfigError> {
        let (interval, burst) = self.quota.resolve(self.burst)?;
        if self.max_keys == 0 {
            return Err(ConfigError::new("max_keys", 0, "must be at least 1"));
        }
        if self.max_keys > KeyedRateLimiter::<K>::MAX_KEYS {
            return Err(ConfigError::new(
                "max_keys",
                self.max_keys,
                "must be at most KeyedRateLimiter::MAX_KEYS (2^26)",
            ));
        }
        let shards = match self.shards {
            Some(0) => return Err(ConfigError::new("shards", 0, "must be at least 1")),
            Some(n) => n,
            None => num_cpus::get().saturating_mul(4),
        };
        let shards = shards
            .clamp(1, 1 << 16)
            .next_power_of_two()
            .min(prev_power_of_two(self.max_keys));
        let (per, extra) = (self.max_keys / shards, self.max_keys % shards);
        let shards_vec: Vec<Shard<K>> = (0..shards)
            .map(|i| Shard {
                map: Mutex::new(ShardMap {
                    entries: HashTable::new(),
                    cap: per + usize::from(i < extra),
                    evicted_idle: 0,
                    evicted_active: 0,
                    next_gen: 0,
                    forgotten_at: 0,
                }),
            })
            .collect();
        Ok(KeyedRateLimiter {
            shards: shards_vec.into_boxed_slice(),
            shard_bits: shards.trailing_zeros(),
            hasher: RandomState::new(),
            interval,
            burst,
            max_keys: self.max_keys,
            key_drop_panics: AtomicU64::new(0),
            time: Timeline::new(self.clock),
            tally: Tally::new("KeyedRateLimiter", self.name),
        })
    }
}

fn prev_power_of_two(n: usize) -> usize {
    if n == 0 {
        1
    } else {
        1 << (usize::BITS - 1 - n.leading_zeros())
    }
}

/// A snapshot of a [`KeyedRateLimiter`]'s memory and evictions.
///
/// # Example
///
/// ```
/// let limiter = corral::KeyedRateLimiter::per_second(1).max_keys(100).build()?;
/// limiter.check_key(&"a").unwrap();
/// let stats = limiter.stats();
/// assert_eq!((stats.keys, stats.max_keys), (1, 100));
/// # Ok::<(), corral::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyedStats {
    /// Keys remembered now.
    pub keys: usize,
    /// The bound on remembered keys.
    pub max_keys: usize,
    /// Keys forgotten because their state had become that of a fresh key (harmless).
    pub evicted_idle: u64,
    /// Keys forgotten while still limited, because every remembered key was active
    /// and room was needed; each may have been admitted early once it came back.
    pub evicted_active: u64,
    /// Forgotten keys whose `Drop` panicked. The panic is caught (the key is gone, the
    /// limiter unaffected) and counted here.
    pub key_drop_panics: u64,
    /// Calls admitted: `check_key`, `check_key_n` and waits that got their cells
    /// (zero-cell calls are not counted).
    pub admitted: u64,
    /// Calls refused: `check_key` and `check_key_n` that returned an error, and waits
    /// that failed.
    pub refused: u64,
}

impl<K: Hash + Eq + Clone, C: Clock> KeyedRateLimiter<K, C> {
    #[inline]
    fn shard_index(&self, hash: u64) -> usize {
        // The top bits pick the shard.
        if self.shard_bits == 0 {
            0
        } else {
            (hash >> (64 - self.shard_bits)) as usize
        }
    }

    /// Admits one cell for `key` now, or says when it would pass.
    ///
    /// # Errors
    ///
    /// [`NotUntil`] with the earliest instant at which `key` would be admitted.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::KeyedRateLimiter::per_second(1).build()?;
    /// assert!(limiter.check_key(&"alice").is_ok());
    /// assert!(limiter.check_key(&"alice").is_err());
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    #[doc(alias = "try_wait_key")]
    #[inline]
    pub fn check_key(&self, key: &K) -> Result<(), NotUntil> {
        match self.decide(key, 1) {
            Ok(()) => Ok(()),
            Err(CheckError::NotUntil(e)) => Err(e),
            // The burst is at least 1; this arm exists for exhaustiveness only.
            Err(_) => Err(NotUntil::new(self.time.anchor(), 0, 0)),
        }
    }

    /// Admits `cells` for `key` at once (all or none). `check_key_n(key, 0)` passes.
    ///
    /// # Errors
    ///
    /// [`CheckError::NotUntil`] (not now), or [`CheckError::InsufficientCapacity`]
    /// when `cells` exceeds the burst (it can never pass).
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{rate::CheckError, KeyedRateLimiter};
    /// let limiter = KeyedRateLimiter::per_second(5).build()?;
    /// assert!(limiter.check_key_n(&"upload", 5).is_ok());
    /// assert!(matches!(limiter.check_key_n(&"upload", 6), Err(CheckError::InsufficientCapacity(_))));
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn check_key_n(&self, key: &K, cells: u32) -> Result<(), CheckError> {
        if cells == 0 {
            return Ok(());
        }
        self.decide(key, cells)
    }

    fn decide(&self, key: &K, cells: u32) -> Result<(), CheckError> {
        let now = self.time.now();
        let claimed = self.claim(key, cells, now, Some(now));
        self.tally.count(claimed.is_ok());
        match claimed {
            Ok(_) => Ok(()),
            Err(Refusal::TooMany { burst }) => Err(InsufficientCapacity::new(cells, burst).into()),
            Err(Refusal::NotUntil { at, now }) => Err(self.not_until(at, now).into()),
        }
    }

    /// The name given by [`KeyedRateLimiterBuilder::name`], if any.
    pub fn name(&self) -> Option<&str> {
        self.tally.name().map(|n| &**n)
    }

    /// Claims `cells` for `key` at `now` unless their slot lies past `latest`.
    ///
    /// The key's `Hash` runs before the shard's lock is taken; its `Eq` and (for a new
    /// key) `Clone` run under the lock and change nothing if they panic; keys forgotten
    /// to make room are dropped after the lock is released.
    fn claim(&self, key: &K, cells: u32, now: u64, latest: Option<u64>) -> Result<Grant, Refusal> {
        let n = u64::from(cells);
        if n > self.burst {
            return Err(Refusal::TooMany { burst: self.burst });
        }
        let (hash, shard) = self.locate(key);
        let mut forgotten = Vec::new();
        let claimed = self.claim_locked(shard, hash, key, n, now, latest, &mut forgotten);
        self.forget(forgotten);
        claimed
    }

    #[allow(clippy::too_many_arguments)]
    fn claim_locked(
        &self,
        shard: &Shard<K>,
        hash: u64,
        key: &K,
        n: u64,
        now: u64,
        latest: Option<u64>,
        forgotten: &mut Vec<Entry<K>>,
    ) -> Result<Grant, Refusal> {
        let span = n.saturating_mul(self.interval);
        let mut map = shard.lock();
        let found = {
            let _key_code = KeyCode::enter(shard);
            map.entries.find_mut(hash, |e| e.key == *key)
        };
        if let Some(entry) = found {
            let (new_tat, ready) =
                match decide(entry.tat, now, n, self.interval, self.burst, latest) {
                    Ok(claim) => claim,
                    Err(Refusal::NotUntil { at: NEVER, .. }) if latest.is_none() => {
                        return Ok(Grant::never(entry.tat, entry.gen))
                    }
                    Err(refusal) => return Err(refusal),
                };
            let before = std::mem::replace(&mut entry.tat, new_tat);
            return Ok(Grant {
                before,
                after: new_tat,
                ready,
                span,
                epoch: entry.gen,
            });
        }
        // A fresh key always conforms at once (n <= burst, and a whole burst fits at
        // the horizon). It starts no earlier than the last time a key of this shard
        // was forgotten as idle: that instant has already been seen, and a key
        // forgotten then (full as of then) must not come back fuller as of a caller's
        // older reading of the clock.
        let now = now.max(map.forgotten_at);
        let latest = latest.map(|latest| latest.max(now));
        let (tat, ready) = decide(0, now, n, self.interval, self.burst, latest)?;
        let key = {
            let _key_code = KeyCode::enter(shard);
            key.clone()
        };
        if map.entries.len() >= map.cap {
            map.make_room(now, forgotten);
        }
        let gen = map.next_gen;
        map.next_gen = gen.wrapping_add(1);
        map.entries.insert_unique(
            hash,
            Entry {
                hash,
                tat,
                gen,
                key,
            },
            |e| e.hash,
        );
        Ok(Grant {
            before: 0,
            after: tat,
            ready,
            span,
            epoch: gen,
        })
    }

    /// Drops forgotten keys outside every lock, each inside the panic boundary: a
    /// panicking `Drop` is counted in [`KeyedStats::key_drop_panics`].
    fn forget(&self, forgotten: Vec<Entry<K>>) {
        for entry in forgotten {
            if drop_caught(entry).is_some() {
                self.key_drop_panics.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The table hash of `key` and its shard.
    #[inline]
    fn locate(&self, key: &K) -> (u64, &Shard<K>) {
        let hash = self.hasher.hash_one(key);
        let shard = &self.shards[self.shard_index(hash)];
        // The shard's table sees the hash rotated, so the bits that chose the shard
        // (constant within it) land in the middle, not in the index or tag bits.
        (hash.rotate_left(32), shard)
    }

    /// Waits (sleeping on the limiter's clock, never spinning) until one cell is
    /// admitted for `key`. Unbounded by design: a slot past the limiter's time horizon
    /// (see [`RateLimiter`](crate::RateLimiter)'s limits) is never reached, so such a
    /// wait never returns; use a bounded form to be told instead.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::KeyedRateLimiter::per_second(1000).burst(1).build()?;
    /// limiter.wait_key(&"alice");
    /// limiter.wait_key(&"alice"); // about a millisecond later
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn wait_key(&self, key: &K) {
        // One cell always fits the burst and nothing bounds the wait.
        let _ = self.wait_key_until(key, 1, Until::FOREVER);
    }

    /// Waits until `cells` are admitted at once for `key`.
    ///
    /// # Errors
    ///
    /// [`InsufficientCapacity`] at once if `cells` exceeds the burst.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::KeyedRateLimiter::per_second(1000).burst(4).build()?;
    /// limiter.wait_key_n(&7u32, 4)?;
    /// assert!(limiter.wait_key_n(&7u32, 5).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_key_n(&self, key: &K, cells: u32) -> Result<(), InsufficientCapacity> {
        match self.wait_key_until(key, cells, Until::FOREVER) {
            Err(WaitError::InsufficientCapacity(e)) => Err(e),
            // Unbounded and without a token, nothing else can stop the wait.
            _ => Ok(()),
        }
    }

    /// Waits at most `timeout` (on the limiter's clock) for one cell for `key`.
    ///
    /// # Errors
    ///
    /// [`WaitError::Timeout`] at once, without sleeping or using capacity, when the
    /// key's next slot lies further away than `timeout`.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{KeyedRateLimiter, clock::ManualClock, rate::WaitError};
    /// use std::time::Duration;
    ///
    /// let limiter = KeyedRateLimiter::per_second(1).clock(ManualClock::new()).build()?;
    /// assert!(limiter.wait_key_timeout(&"a", Duration::from_millis(10)).is_ok());
    /// let err = limiter.wait_key_timeout(&"a", Duration::from_millis(10)).unwrap_err();
    /// assert!(matches!(err, WaitError::Timeout(_)));
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn wait_key_timeout(&self, key: &K, timeout: Duration) -> Result<(), WaitError> {
        let deadline = crate::sync::time::deadline_after(self.time.clock().now(), timeout);
        self.wait_key_until(key, 1, Until::deadline(deadline))
    }

    /// Waits until `deadline` (on the limiter's clock) at most for one cell for `key`.
    ///
    /// # Errors
    ///
    /// [`WaitError::Timeout`] at once when the key's next slot lies past `deadline`.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{clock::{Clock, ManualClock}, KeyedRateLimiter};
    /// let clock = ManualClock::new();
    /// let limiter = KeyedRateLimiter::per_second(1).clock(clock.clone()).build()?;
    /// assert!(limiter.wait_key_deadline(&1u8, clock.now()).is_ok());
    /// assert!(limiter.wait_key_deadline(&1u8, clock.now()).is_err());
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn wait_key_deadline(&self, key: &K, deadline: Instant) -> Result<(), WaitError> {
        self.wait_key_until(key, 1, Until::deadline(deadline))
    }

    /// Waits for one cell for `key` until it is admitted or `token` is cancelled; a
    /// wait cancelled while asleep gives its slot back (unless a later claim for the
    /// key stands after it).
    ///
    /// # Errors
    ///
    /// [`WaitError::Cancelled`] when the token is (or becomes) cancelled, at once with
    /// [`CancelReason::DeadlineExceeded`](crate::cancel::CancelReason::DeadlineExceeded) if its
    /// deadline comes before the slot.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::KeyedRateLimiter::per_second(10).build()?;
    /// let token = corral::CancelToken::new();
    /// assert!(limiter.wait_key_cancellable(&"a", &token).is_ok());
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn wait_key_cancellable(&self, key: &K, token: &CancelToken) -> Result<(), WaitError> {
        self.wait_key_until(key, 1, Until::cancellable(token))
    }

    /// The one waiting path behind every `wait_key*` form.
    fn wait_key_until(&self, key: &K, cells: u32, until: Until<'_>) -> Result<(), WaitError> {
        if cells == 0 {
            return Ok(());
        }
        let waited = self.wait_key_cells(key, cells, until);
        self.tally.count(waited.is_ok());
        waited
    }

    fn wait_key_cells(&self, key: &K, cells: u32, until: Until<'_>) -> Result<(), WaitError> {
        if let Some(reason) = until.token().and_then(CancelToken::reason) {
            return Err(WaitError::Cancelled(reason));
        }
        let now = self.time.now();
        let bound = Bound::new(self.time.anchor(), &until, now);
        let grant = match self.claim(key, cells, now, bound.latest) {
            Ok(grant) => grant,
            Err(Refusal::TooMany { burst }) => {
                return Err(InsufficientCapacity::new(cells, burst).into())
            }
            Err(Refusal::NotUntil { at, now }) => {
                return Err(bound.refusal(self.not_until(at, now)))
            }
        };
        if grant.ready <= u128::from(now) {
            return Ok(());
        }
        let dump = crate::observe::waiting_for_rate(self.tally.name());
        if sleep_until_ready(&self.time, grant.ready, until.token()) {
            return Ok(());
        }
        drop(dump);
        // Cancelled while asleep: give the slot back if the key is still remembered
        // as the entry the slot was claimed on.
        let (hash, shard) = self.locate(key);
        let now = self.time.now();
        {
            let mut map = shard.lock();
            let found = {
                let _key_code = KeyCode::enter(shard);
                map.entries.find_mut(hash, |e| e.key == *key)
            };
            if let Some(entry) = found.filter(|e| e.gen == grant.epoch) {
                if let Some(tat) = returned(entry.tat, &grant, now) {
                    entry.tat = tat;
                }
            }
        }
        let reason = until
            .token()
            .and_then(CancelToken::reason)
            .unwrap_or(CancelReason::Cancelled);
        Err(WaitError::Cancelled(reason))
    }

    fn not_until(&self, at: u128, now: u64) -> NotUntil {
        NotUntil::new(self.time.anchor(), at, now)
    }

    /// Forgets every key whose state is that of a fresh key (changes no decision);
    /// returns how many were dropped. Not needed for the bound, which holds anyway.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{KeyedRateLimiter, clock::ManualClock};
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let limiter = KeyedRateLimiter::per_second(1).clock(clock.clone()).build()?;
    /// limiter.check_key(&"a").unwrap();
    /// clock.advance(Duration::from_secs(1));
    /// assert_eq!(limiter.retain_recent(), 1);
    /// assert!(limiter.is_empty());
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn retain_recent(&self) -> usize {
        let now = self.time.now();
        let mut dropped = 0;
        for shard in self.shards.iter() {
            let mut forgotten = Vec::new();
            dropped += shard.lock().drop_idle(now, &mut forgotten);
            self.forget(forgotten);
        }
        dropped
    }

    /// The number of keys remembered now (never more than `max_keys`).
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::KeyedRateLimiter::per_second(1).build()?;
    /// limiter.check_key(&1u8).unwrap();
    /// limiter.check_key(&2u8).unwrap();
    /// assert_eq!(limiter.len(), 2);
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().entries.len()).sum()
    }

    /// Whether no key is remembered.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::KeyedRateLimiter::<&str>::per_second(1).build()?;
    /// assert!(limiter.is_empty());
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The burst each key gets.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::KeyedRateLimiter::<u8>::per_second(3).build()?;
    /// assert_eq!(limiter.burst(), 3);
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn burst(&self) -> u32 {
        u32::try_from(self.burst).unwrap_or(u32::MAX)
    }

    /// The time one cell is worth.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::KeyedRateLimiter::<u8>::per_second(2).build()?;
    /// assert_eq!(limiter.interval(), std::time::Duration::from_millis(500));
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval)
    }

    /// The limiter's clock.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{clock::{Clock, ManualClock}, KeyedRateLimiter};
    /// let limiter = KeyedRateLimiter::<u8, _>::per_second(2).clock(ManualClock::new()).build()?;
    /// let _now = limiter.clock().now();
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn clock(&self) -> &C {
        self.time.clock()
    }

    /// Keys remembered, the bound, and evictions so far.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::KeyedRateLimiter::per_second(1).max_keys(1).build()?;
    /// limiter.check_key(&"a").unwrap();
    /// limiter.check_key(&"b").unwrap(); // "a" is still limited, but room is needed
    /// assert_eq!(limiter.stats().evicted_active, 1);
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn stats(&self) -> KeyedStats {
        let mut stats = KeyedStats {
            keys: 0,
            max_keys: self.max_keys,
            evicted_idle: 0,
            evicted_active: 0,
            key_drop_panics: self.key_drop_panics.load(Ordering::Relaxed),
            admitted: self.tally.admitted(),
            refused: self.tally.refused(),
        };
        for shard in self.shards.iter() {
            let map = shard.lock();
            stats.keys += map.entries.len();
            stats.evicted_idle += map.evicted_idle;
            stats.evicted_active += map.evicted_active;
        }
        stats
    }
}

impl<K, C: Clock> Drop for KeyedRateLimiter<K, C> {
    /// Drops every remembered key inside the panic boundary, so one key's panicking
    /// `Drop` neither unwinds out of the limiter's drop nor leaks the other keys.
    fn drop(&mut self) {
        for shard in self.shards.iter() {
            let entries = std::mem::take(&mut shard.map.lock().entries);
            for entry in entries {
                drop_quietly(entry);
            }
        }
    }
}

impl<K, C: Clock> fmt::Debug for KeyedRateLimiter<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimiter")
            .field("name", &self.tally.name())
            .field("interval", &Duration::from_nanos(self.interval))
            .field("burst", &self.burst)
            .field("max_keys", &self.max_keys)
            .field("shards", &self.shards.len())
            .field("clock", self.time.clock())
            .finish()
    }
}

impl<K, C: fmt::Debug> fmt::Debug for KeyedRateLimiterBuilder<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimiterBuilder")
            .field("quota", &self.quota)
            .field("burst", &self.burst)
            .field("max_keys", &self.max_keys)
            .field("clock", &self.clock)
            .field("name", &self.name)
            .finish()
    }
}
