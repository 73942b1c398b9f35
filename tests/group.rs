//! TaskGroup (errgroup) through the public API.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use corral::leak::LeakCheck;
use corral::{cancel::CancelReason, group::GroupError, pool::SubmitError, CancelToken, TaskGroup};

const LONG: Duration = Duration::from_secs(30);

#[test]
fn limit_bounds_concurrency_exactly() {
    let _check = LeakCheck::new();
    const LIMIT: usize = 3;
    let running = AtomicUsize::new(0);
    let high_water = AtomicUsize::new(0);
    let first_wave = Barrier::new(LIMIT);
    let values = corral::scope(|s| {
        let group = TaskGroup::<usize, ()>::new(s).limit(LIMIT).unwrap();
        for i in 0..40 {
            let (running, high_water, first_wave) = (&running, &high_water, &first_wave);
            group.spawn(move |_| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                high_water.fetch_max(now, Ordering::SeqCst);
                if i < LIMIT {
                    // The first LIMIT tasks meet here: the limit is reachable.
                    first_wave.wait();
                }
                for _ in 0..50 {
                    thread::yield_now();
                }
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(i)
            });
        }
        group.wait().unwrap()
    });
    assert_eq!(values, (0..40).collect::<Vec<_>>());
    assert_eq!(high_water.load(Ordering::SeqCst), LIMIT);
}

#[test]
fn limit_zero_is_a_config_error() {
    corral::scope(|s| {
        let err = TaskGroup::<(), ()>::new(s).limit(0).unwrap_err();
        assert_eq!((err.field(), err.value()), ("limit", "0"));
    });
}

#[test]
fn try_spawn_and_bounded_spawns_hand_the_closure_back() {
    let _check = LeakCheck::new();
    corral::scope(|s| {
        let group = TaskGroup::<u32, ()>::new(s).limit(1).unwrap();
        let (open, gate) = mpsc::channel::<()>();
        group.spawn(move |_| {
            gate.recv().ok();
            Ok(0)
        });
        match group.try_spawn(|_| Ok(1)) {
            Err(SubmitError::Full(f)) => assert_eq!(f(&CancelToken::new()), Ok(1)),
            other => panic!("expected Full, got {other:?}"),
        }
        let err = group
            .spawn_timeout(|_| Ok(2), Duration::from_millis(10))
            .unwrap_err();
        assert!(err.is_timeout());
        assert!(group
            .spawn_deadline(|_| Ok(3), Instant::now())
            .unwrap_err()
            .is_timeout());
        let token = CancelToken::new();
        token.cancel();
        assert!(matches!(
            group.spawn_cancellable(|_| Ok(4), &token),
            Err(SubmitError::Cancelled(_, CancelReason::Cancelled))
        ));
        open.send(()).unwrap();
        // A slot frees when the first task ends: a bounded spawn now succeeds.
        let id = group.spawn_timeout(|_| Ok(5), LONG).unwrap();
        assert_eq!(id.index(), 1);
        assert_eq!(group.wait().unwrap(), vec![0, 5]);
    });
}

#[test]
fn first_error_cancels_the_group_and_is_returned() {
    let _check = LeakCheck::new();
    let sibling_saw_cancel = AtomicBool::new(false);
    let result = corral::scope(|s| {
        let group = TaskGroup::<(), String>::new(s);
        group.spawn(|token| {
            // Waits for the failure below to cancel the group.
            let reason = token.wait_timeout(LONG);
            sibling_saw_cancel.store(reason.is_some(), Ordering::SeqCst);
            Ok(())
        });
        group.spawn(|_| Err("replica 2 is down".to_string()));
        group.wait()
    });
    assert_eq!(result, Err("replica 2 is down".to_string()));
    assert!(sibling_saw_cancel.load(Ordering::SeqCst));
}

#[test]
fn wait_returns_the_first_error_in_time_not_in_spawn_order() {
    let _check = LeakCheck::new();
    let result = corral::scope(|s| {
        let group = TaskGroup::<(), &str>::new(s);
        group.spawn(|token| {
            token.wait_timeout(LONG);
            Err("second, after the cancel")
        });
        group.spawn(|_| Err("first"));
        group.wait()
    });
    assert_eq!(result, Err("first"));
}

#[test]
fn wait_all_keys_every_outcome_by_task_id() {
    let _check = LeakCheck::new();
    let results = corral::scope(|s| {
        let group = TaskGroup::<u32, String>::new(s);
        let ids: Vec<_> = (0..6u32)
            .map(|i| {
                group.spawn(move |_| {
                    if i == 4 {
                        Err(format!("task {i} failed"))
                    } else {
                        Ok(i * 10)
                    }
                })
            })
            .collect();
        assert_eq!(group.len(), 6);
        let results = group.wait_all();
        assert_eq!(results.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids);
        results
    });
    for (id, outcome) in results {
        match (id.index(), outcome) {
            (4, Err(GroupError::Failed(e))) => assert_eq!(e, "task 4 failed"),
            (i, Ok(v)) => assert_eq!(v as u64, i * 10),
            (i, other) => panic!("task {i}: unexpected {other:?}"),
        }
    }
}

#[test]
fn a_panic_is_reraised_by_wait_after_every_task_joined() {
    let _check = LeakCheck::new();
    let sibling_done = AtomicBool::new(false);
    let caught = catch_unwind(AssertUnwindSafe(|| {
        corral::scope(|s| {
            let group = TaskGroup::<(), ()>::new(s);
            group.spawn(|token| {
                token.wait_timeout(LONG);
                sibling_done.store(true, Ordering::SeqCst);
                Ok(())
            });
            group.spawn(|_| panic!("index out of range"));
            group.wait()
        })
    }));
    let payload = caught.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"index out of range"));
    assert!(sibling_done.load(Ordering::SeqCst));
}

#[test]
fn wait_all_returns_panics_as_values() {
    let _check = LeakCheck::new();
    let results = corral::scope(|s| {
        let group = TaskGroup::<(), ()>::new(s);
        group.spawn(|_| Ok(()));
        group.spawn(|_| panic!("kept"));
        group.wait_all()
    });
    match &results[1].1 {
        Err(GroupError::Panicked(p)) => {
            assert_eq!(p.message(), Some("kept"));
            assert!(p.thread_name().unwrap().starts_with("corral-group-"));
        }
        other => panic!("expected a panic, got {other:?}"),
    }
}

#[test]
fn dropping_the_group_cancels_and_joins() {
    let _check = LeakCheck::new();
    let stopped = AtomicBool::new(false);
    corral::scope(|s| {
        let group = TaskGroup::<(), ()>::new(s);
        group.spawn(|token| {
            let reason = token.wait_timeout(LONG);
            stopped.store(reason == Some(CancelReason::Cancelled), Ordering::SeqCst);
            Ok(())
        });
        drop(group);
        // Joined by the drop, before the scope ends.
        assert!(stopped.load(Ordering::SeqCst));
    });
}

#[test]
fn a_dropped_group_still_reraises_a_panic() {
    let caught = catch_unwind(AssertUnwindSafe(|| {
        corral::scope(|s| {
            let group = TaskGroup::<(), ()>::new(s);
            group.spawn(|_| panic!("not lost"));
        })
    }));
    assert_eq!(
        caught.unwrap_err().downcast_ref::<&str>(),
        Some(&"not lost")
    );
}

#[test]
fn group_token_follows_the_scope_token() {
    corral::scope(|s| {
        let group = TaskGroup::<(), ()>::new(s);
        s.token().cancel();
        assert!(group.token().is_cancelled());
        let id = group.spawn(|token| {
            assert!(token.is_cancelled());
            Ok(())
        });
        assert_eq!(id.to_string(), "task 0");
        group.wait().unwrap();
    });
}

#[test]
fn stress_limit_and_counts() {
    let _check = LeakCheck::new();
    const LIMIT: usize = 4;
    let running = AtomicUsize::new(0);
    let over = AtomicBool::new(false);
    let results = corral::scope(|s| {
        let group = TaskGroup::<usize, usize>::new(s).limit(LIMIT).unwrap();
        for i in 0..300 {
            let (running, over) = (&running, &over);
            let task = move |_: &CancelToken| {
                if running.fetch_add(1, Ordering::SeqCst) >= LIMIT {
                    over.store(true, Ordering::SeqCst);
                }
                thread::yield_now();
                running.fetch_sub(1, Ordering::SeqCst);
                if i % 7 == 0 {
                    Err(i)
                } else {
                    Ok(i)
                }
            };
            if i % 2 == 0 {
                group.spawn(task);
            } else if let Err(refused) = group.try_spawn(task) {
                group.spawn(refused.into_inner());
            }
        }
        group.wait_all()
    });
    assert!(
        !over.load(Ordering::SeqCst),
        "more than {LIMIT} tasks ran at once"
    );
    assert_eq!(results.len(), 300);
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    assert_eq!(failed, (0..300).filter(|i| i % 7 == 0).count());
}

// ---- The group waited on or dropped inside one of its own tasks.

#[test]
fn a_group_waited_on_inside_its_own_task_joins_the_others_and_leaves_itself_out() {
    let _check = LeakCheck::new();
    let finished = AtomicUsize::new(0);
    let seen = corral::scope(|s| {
        let group = TaskGroup::<usize, ()>::new(s);
        let (give, take) = mpsc::channel::<TaskGroup<'_, '_, usize, ()>>();
        let (back, out) = mpsc::channel();
        group.spawn(move |_| {
            let group = take.recv().unwrap();
            // Without the fix std panics: "Resource deadlock avoided".
            back.send(group.wait_all()).unwrap();
            Ok(0)
        });
        for i in 1..=4 {
            let finished = &finished;
            group.spawn(move |_| {
                finished.fetch_add(1, Ordering::SeqCst);
                Ok(i)
            });
        }
        give.send(group).unwrap();
        out.recv_timeout(LONG).unwrap()
    });
    assert_eq!(finished.load(Ordering::SeqCst), 4);
    let ids: Vec<u64> = seen.iter().map(|(id, _)| id.index()).collect();
    assert_eq!(ids, vec![1, 2, 3, 4]);
    assert!(seen.iter().all(|(_, outcome)| outcome.is_ok()));
}

#[test]
fn a_group_dropped_inside_its_own_task_cancels_and_joins_the_others() {
    let _check = LeakCheck::new();
    let stopped = AtomicUsize::new(0);
    let finished = AtomicBool::new(false);
    corral::scope(|s| {
        let group = TaskGroup::<(), ()>::new(s);
        let (give, take) = mpsc::channel::<TaskGroup<'_, '_, (), ()>>();
        let dropper = {
            let (stopped, finished) = (&stopped, &finished);
            group.spawn(move |_| {
                drop(take.recv().unwrap());
                // Every other task was joined by the drop, before this line.
                assert_eq!(stopped.load(Ordering::SeqCst), 3);
                finished.store(true, Ordering::SeqCst);
                Ok(())
            })
        };
        assert_eq!(dropper.index(), 0);
        for _ in 0..3 {
            let stopped = &stopped;
            group.spawn(move |token| {
                token.wait_timeout(LONG);
                stopped.fetch_add(1, Ordering::SeqCst);
                Ok(())
            });
        }
        give.send(group).unwrap();
    });
    assert_eq!(stopped.load(Ordering::SeqCst), 3);
    // Without the fix the drop panics inside the task (std: "Resource deadlock
    // avoided"), which the task's own catch swallowed: the task never got here.
    assert!(
        finished.load(Ordering::SeqCst),
        "the dropping task ran to its end"
    );
}

// ---- What the group discards is dropped inside the panic boundary.

/// A value or error whose destructor panics when `loud`, counting every drop.
struct Loud<'a> {
    loud: bool,
    drops: &'a AtomicUsize,
}

impl Drop for Loud<'_> {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        if self.loud {
            panic!("a discarded value panicked on drop");
        }
    }
}

#[test]
fn a_discarded_value_that_panics_on_drop_is_reraised_after_everything_else_is_dropped() {
    let _check = LeakCheck::new();
    let drops = AtomicUsize::new(0);
    let caught = catch_unwind(AssertUnwindSafe(|| {
        corral::scope(|s| {
            let group = TaskGroup::<Loud<'_>, Loud<'_>>::new(s);
            let drops = &drops;
            for i in 0..4 {
                group.spawn(move |_| {
                    Ok(Loud {
                        loud: i == 1,
                        drops,
                    })
                });
            }
            group.spawn(move |_| Err(Loud { loud: false, drops }));
            // The values are discarded (an error is returned): all four are dropped,
            // then the loud one's panic comes back, the error dropped with it.
            let _ = group.wait();
        })
    }));
    assert_eq!(
        caught.unwrap_err().downcast_ref::<&str>(),
        Some(&"a discarded value panicked on drop")
    );
    assert_eq!(drops.load(Ordering::SeqCst), 5);
}

#[test]
fn a_dropped_group_whose_outcomes_panic_on_drop_drops_them_all() {
    let _check = LeakCheck::new();
    let drops = AtomicUsize::new(0);
    let caught = catch_unwind(AssertUnwindSafe(|| {
        corral::scope(|s| {
            let group = TaskGroup::<Loud<'_>, Loud<'_>>::new(s);
            let drops = &drops;
            for _ in 0..3 {
                group.spawn(move |_| Ok(Loud { loud: true, drops }));
            }
            group.spawn(move |_| Err(Loud { loud: true, drops }));
            drop(group);
        })
    }));
    assert!(caught.is_err());
    assert_eq!(drops.load(Ordering::SeqCst), 4);
}

#[test]
fn a_task_spawning_into_its_own_group_at_the_limit_runs_the_task_instead_of_deadlocking() {
    let _check = LeakCheck::new();
    let values = corral::scope(|s| {
        let group = std::sync::Arc::new(TaskGroup::<u64, ()>::new(s).limit(1).unwrap());
        let inner = std::sync::Arc::clone(&group);
        let (done_tx, done) = mpsc::channel::<()>();
        group.spawn(move |_| {
            // This task holds the only slot: waiting for one would never end.
            let id = inner.spawn(|_| Ok(20));
            drop(inner);
            done_tx.send(()).unwrap();
            Ok(id.index() * 10)
        });
        done.recv_timeout(LONG).expect("no deadlock");
        // The task dropped its reference before it signalled.
        let group = std::sync::Arc::try_unwrap(group).unwrap_or_else(|_| panic!("shared"));
        group.wait().unwrap()
    });
    assert_eq!(values, vec![10, 20]);
}
