#![cfg(loom)]
//! Loom models of the pipeline's reorder window (the source waits while it is more
//! than `window` packets ahead of the sink; the sink releases). The channels and OS
//! threads of a full run cannot run under loom: the stress test in tests/pipeline.rs
//! covers those.

use std::sync::Arc;

use corral::__LoomReorderGate as Gate;
use loom::thread;

#[test]
fn a_release_racing_the_wait_is_never_lost() {
    loom::model(|| {
        let gate = Arc::new(Gate::new(1));
        let sink = {
            let gate = Arc::clone(&gate);
            thread::spawn(move || gate.release(1))
        };
        // Packet 1 may go only once packet 0 has left the reorder buffer.
        assert!(gate.wait_for(1));
        assert_eq!(gate.released(), 1);
        sink.join().unwrap();
    });
}

#[test]
fn the_source_waits_through_several_releases() {
    loom::model(|| {
        let gate = Arc::new(Gate::new(1));
        let sink = {
            let gate = Arc::clone(&gate);
            thread::spawn(move || {
                gate.release(1);
                gate.release(2);
            })
        };
        assert!(gate.wait_for(2));
        assert!(gate.released() >= 2);
        sink.join().unwrap();
    });
}

#[test]
fn cancel_wakes_a_waiting_source() {
    loom::model(|| {
        let gate = Arc::new(Gate::new(2));
        let canceller = {
            let gate = Arc::clone(&gate);
            thread::spawn(move || gate.cancel())
        };
        // Nothing is released: only the cancel can end this wait.
        assert!(!gate.wait_for(5));
        canceller.join().unwrap();
    });
}

#[test]
fn within_the_window_there_is_no_wait() {
    loom::model(|| {
        let gate = Gate::new(3);
        assert!(gate.wait_for(0));
        assert!(gate.wait_for(2));
    });
}

#[test]
fn a_deadline_passing_wakes_a_waiting_source() {
    loom::model(|| {
        // The run's deadline, as `run_timeout` sets it: the model decides when it
        // passes (before, between or after the waiter's checks), never the wall clock.
        let gate = Arc::new(Gate::with_timeout(1, std::time::Duration::from_secs(1)));
        let clock = thread::spawn(corral::__loom_pass_every_deadline);
        assert!(!gate.wait_for(3));
        clock.join().unwrap();
    });
}

#[test]
fn a_release_racing_the_deadline_either_opens_or_stops_the_wait() {
    loom::model(|| {
        let gate = Arc::new(Gate::with_timeout(1, std::time::Duration::from_secs(1)));
        let sink = {
            let gate = Arc::clone(&gate);
            thread::spawn(move || gate.release(1))
        };
        let clock = thread::spawn(corral::__loom_pass_every_deadline);
        if gate.wait_for(1) {
            assert_eq!(gate.released(), 1);
        }
        sink.join().unwrap();
        clock.join().unwrap();
    });
}

/// A pushed input's door: senders enter, put their item in the queue and leave; a
/// close shuts the door. Once the door has settled, every accepted item is in the
/// queue, so the receivers may drain it and stop without losing one.
#[test]
fn close_racing_send_never_loses_an_accepted_item() {
    use corral::__LoomInputDoor as Door;
    use loom::sync::atomic::{AtomicUsize, Ordering};

    loom::model(|| {
        let door = Arc::new(Door::new());
        let queued = Arc::new(AtomicUsize::new(0));
        let senders: Vec<_> = (0..2)
            .map(|_| {
                let (door, queued) = (Arc::clone(&door), Arc::clone(&queued));
                thread::spawn(move || {
                    door.send_with(|| {
                        queued.fetch_add(1, Ordering::Relaxed);
                    })
                })
            })
            .collect();
        assert!(door.close());
        assert!(!door.close(), "the first close wins");
        // The receivers' side: wait until nobody is inside, then look at the queue.
        while !door.settled() {
            thread::yield_now();
        }
        let seen = queued.load(Ordering::Relaxed);
        let accepted = senders
            .into_iter()
            .map(|s| usize::from(s.join().unwrap()))
            .sum::<usize>();
        assert_eq!(
            seen, accepted,
            "an accepted item was not queued when the door settled"
        );
        // And nobody gets in after the close.
        assert!(!door.send_with(|| unreachable!()));
    });
}
