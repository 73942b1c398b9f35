//! LeakCheck's OS-thread mode. One test in its own binary, so the only threads in the
//! process are libtest's and the ones this test starts.

use std::time::Duration;

use corral::leak::{self, LeakCheck};
use crossbeam_channel::bounded;

#[test]
fn os_mode_catches_any_leaked_thread_and_passes_once_joined() {
    if leak::os_threads().is_none() {
        eprintln!("this platform cannot list OS threads; OS mode reports it");
        let report = LeakCheck::builder()
            .os_threads()
            .build()
            .verify()
            .unwrap_err();
        assert!(report.os_unsupported);
        return;
    }

    // A thread from "some other library": plain std, not corral.
    let check = LeakCheck::builder()
        .os_threads()
        .grace(Duration::from_millis(100))
        .build();
    let (release_tx, release_rx) = bounded::<()>(0);
    let leaked = std::thread::Builder::new()
        .name("foreign-worker".into())
        .spawn(move || {
            let _ = release_rx.recv();
        })
        .unwrap();
    let report = check.verify().expect_err("a foreign thread is alive");
    assert_eq!(report.os.len(), 1);
    assert_eq!(report.os[0].name, "foreign-worker");
    assert!(report.to_string().contains("foreign-worker"));

    // Ignored by name prefix.
    let check = LeakCheck::builder()
        .os_threads()
        .ignore_name_prefix("foreign-")
        .grace(Duration::from_millis(20))
        .build();
    let (release2_tx, release2_rx) = bounded::<()>(0);
    let ignored = std::thread::Builder::new()
        .name("foreign-ignored".into())
        .spawn(move || {
            let _ = release2_rx.recv();
        })
        .unwrap();
    assert!(check.verify().is_ok());

    // Threads alive when the check starts are ignored; joined threads pass.
    let check = LeakCheck::builder().os_threads().build();
    release_tx.send(()).unwrap();
    release2_tx.send(()).unwrap();
    leaked.join().unwrap();
    ignored.join().unwrap();
    corral::scope(|s| {
        s.spawn(|| ());
    });
    assert!(check.verify().is_ok());
}
