//! [`Shared`]: the reference-counted allocation a queued task lives in.
//!
//! Implementation notes. `Shared` is `Arc` without weak references. With one count
//! instead of two, the holder of the only reference (a worker running a
//! fire-and-forget task, or a task whose handle is gone) can tell so with one atomic
//! load and then free the allocation with no atomic read-modify-write at all:
//! `Arc::try_unwrap` takes two (the strong count, then the implicit weak one). On
//! `execute`, whose submitting and working threads contend for two cores, those two
//! locked operations measured about 3% of the task.
//!
//! Soundness rests on three facts, each noted where it is used:
//! - The allocation is a `Box<Inner<T>>`, made in [`Shared::new`] and freed once, by
//!   whoever ends the count: the last [`Drop`], or the [`Unique`] taken from the last
//!   reference.
//! - The count never rises from one behind its holder's back: a new reference is
//!   only ever cloned from an existing one, and weak references do not exist. So a
//!   holder that reads one owns the value outright.
//! - Every holder's accesses happen before the value is dropped: decrements are
//!   `Release`, and the thread that frees reads the count with `Acquire` first.
//!
//! Custom pointers cannot opt into unsizing coercions on stable Rust, so
//! [`shared_as!`] spells out the one `Arc` gets from the compiler.
//! tests/loom_pool.rs model-checks the count under loom.

use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use crate::sync::{AtomicUsize, Ordering};

/// The allocation: the count and the value.
pub(crate) struct Inner<T: ?Sized> {
    count: AtomicUsize,
    value: T,
}

/// A shared reference to a value on the heap, like `Arc<T>` without weak references.
pub(crate) struct Shared<T: ?Sized> {
    ptr: NonNull<Inner<T>>,
    /// Dropping a `Shared` may drop an `Inner<T>`.
    _owns: PhantomData<Inner<T>>,
}

// SAFETY: as for `Arc`: a `Shared` hands out `&T` on any thread and the last one drops
// the `T` on whichever thread it ends on, so both need `T: Send + Sync`.
#[allow(unsafe_code)]
unsafe impl<T: ?Sized + Send + Sync> Send for Shared<T> {}
// SAFETY: see `Send` above.
#[allow(unsafe_code)]
unsafe impl<T: ?Sized + Send + Sync> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// A new allocation holding `value`, with this one reference to it.
    pub(crate) fn new(value: T) -> Self {
        let inner = Box::new(Inner {
            count: AtomicUsize::new(1),
            value,
        });
        Shared {
            ptr: NonNull::from(Box::leak(inner)),
            _owns: PhantomData,
        }
    }
}

impl<U: ?Sized> Shared<U> {
    /// `from`, as a `Shared<U>`. Call it only through [`shared_as!`], which supplies
    /// the one `coerce` that is sound.
    ///
    /// # Safety
    ///
    /// `coerce` must return its argument, changed only by an unsizing coercion (the
    /// same address and allocation, with the metadata of `U`).
    #[allow(unsafe_code)]
    pub(crate) unsafe fn coerced<T: ?Sized>(
        from: Shared<T>,
        coerce: impl FnOnce(*mut Inner<T>) -> *mut Inner<U>,
    ) -> Self {
        let from = ManuallyDrop::new(from);
        let ptr = coerce(from.ptr.as_ptr());
        Shared {
            // SAFETY: `coerce` returned `from`'s pointer (the caller's promise), which
            // is not null; `from` is forgotten, so the count moves over unchanged.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
            _owns: PhantomData,
        }
    }
}

/// `shared_as!(shared => dyn Trait)`: a `Shared<T>` as a `Shared<dyn Trait>`, the
/// unsizing coercion `Arc` gets from the compiler. Only a coercion compiles: the
/// closure's body is its argument, coerced to the return type.
macro_rules! shared_as {
    ($shared:expr => $ty:ty) => {{
        let shared = $shared;
        #[allow(unsafe_code)]
        // SAFETY: the closure returns its argument, coerced (unsized) to the new type.
        let coerced = unsafe { $crate::pool::shared::Shared::<$ty>::coerced(shared, |ptr| ptr) };
        coerced
    }};
}
pub(crate) use shared_as;

impl<T: ?Sized> Shared<T> {
    fn inner(&self) -> &Inner<T> {
        // SAFETY: the allocation lives while any reference to it does, this one too.
        #[allow(unsafe_code)]
        unsafe {
            self.ptr.as_ref()
        }
    }

    /// The value itself, when this is its only reference: one load decides, since a
    /// count of one cannot rise while its holder has it (references are only cloned
    /// from references). Otherwise the reference comes back.
    ///
    /// That argument holds only while `Shared` has no weak references and no way to
    /// make a reference from a `&T`: adding either means this needs a
    /// read-modify-write, as `Arc::get_mut` does.
    pub(crate) fn into_unique(self) -> Result<Unique<T>, Self> {
        // Acquire: every former holder's accesses (released by its decrement) happen
        // before this one's.
        if self.inner().count.load(Ordering::Acquire) != 1 {
            return Err(self);
        }
        let this = ManuallyDrop::new(self);
        // SAFETY: the only reference, forgotten above, gives up the allocation `new`
        // made with `Box`; nothing else can reach it any more.
        #[allow(unsafe_code)]
        let boxed = unsafe { Box::from_raw(this.ptr.as_ptr()) };
        Ok(Unique(boxed))
    }
}

impl<T: ?Sized> Clone for Shared<T> {
    fn clone(&self) -> Self {
        // Relaxed, as `Arc`: a new reference only needs the count not to reach zero,
        // which the reference it is cloned from guarantees.
        let before = self.inner().count.fetch_add(1, Ordering::Relaxed);
        if before > isize::MAX as usize {
            // Only leaked references could get here; wrapping would free too early.
            std::process::abort();
        }
        Shared {
            ptr: self.ptr,
            _owns: PhantomData,
        }
    }
}

impl<T: ?Sized> Deref for Shared<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.inner().value
    }
}

impl<T: ?Sized> Drop for Shared<T> {
    fn drop(&mut self) {
        // Release: this holder's accesses happen before the drop of the value.
        if self.inner().count.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Acquire: and every other holder's too (a load rather than a fence, which
        // loom models alike).
        self.inner().count.load(Ordering::Acquire);
        // SAFETY: the count went from one to zero here: no reference is left, and the
        // allocation came from `Box` in `new`.
        #[allow(unsafe_code)]
        drop(unsafe { Box::from_raw(self.ptr.as_ptr()) });
    }
}

/// The value of a [`Shared`] whose only reference was given up: owned outright, freed
/// when dropped.
pub(crate) struct Unique<T: ?Sized>(Box<Inner<T>>);

impl<T: ?Sized> Deref for Unique<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0.value
    }
}

impl<T: ?Sized> DerefMut for Unique<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0.value
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize as Counter;
    use std::sync::Arc;

    /// Counts its drops.
    struct Tracked(Arc<Counter>);

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    trait Speak: Send + Sync {
        fn word(&self) -> &'static str;
    }

    impl Speak for Tracked {
        fn word(&self) -> &'static str {
            "tracked"
        }
    }

    fn drops() -> (Arc<Counter>, Tracked) {
        let count = Arc::new(Counter::new(0));
        (Arc::clone(&count), Tracked(count))
    }

    #[test]
    fn the_last_reference_drops_the_value_once() {
        let (dropped, value) = drops();
        let first = Shared::new(value);
        let second = first.clone();
        drop(first);
        assert_eq!(dropped.load(std::sync::atomic::Ordering::SeqCst), 0);
        drop(second);
        assert_eq!(dropped.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn only_the_only_reference_is_unique() {
        let (dropped, value) = drops();
        let first = Shared::new(value);
        let second = first.clone();
        let first = first.into_unique().err().expect("two references");
        drop(second);
        let unique = first.into_unique().ok().expect("one reference");
        assert_eq!(dropped.load(std::sync::atomic::Ordering::SeqCst), 0);
        drop(unique);
        assert_eq!(dropped.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn a_coerced_reference_shares_the_count_and_drops_the_concrete_value() {
        let (dropped, value) = drops();
        let concrete = Shared::new(value);
        let object: Shared<dyn Speak> = shared_as!(concrete.clone() => dyn Speak);
        assert_eq!(object.word(), "tracked");
        drop(concrete);
        let unique = object.into_unique().ok().expect("the last reference");
        assert_eq!(unique.word(), "tracked");
        drop(unique);
        assert_eq!(dropped.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn references_dropped_on_many_threads_drop_the_value_once() {
        let _check = crate::leak::LeakCheck::new();
        for _ in 0..200 {
            let (dropped, value) = drops();
            let shared = Shared::new(value);
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let mine = shared.clone();
                    std::thread::spawn(move || drop(mine))
                })
                .collect();
            drop(shared);
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(dropped.load(std::sync::atomic::Ordering::SeqCst), 1);
        }
    }
}
