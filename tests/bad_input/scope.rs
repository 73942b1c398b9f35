//! Bad-input rows for `scope`.

use std::io::ErrorKind;

use corral::leak::LeakCheck;

fn own_name() -> Option<String> {
    std::thread::current().name().map(str::to_owned)
}

#[test]
fn scope_spawn_named_empty_name_is_allowed() {
    let _check = LeakCheck::new();
    let name = corral::scope(|s| s.spawn_named("", own_name).join().unwrap());
    assert_eq!(name.as_deref(), Some("corral-"));
}

#[test]
fn scope_spawn_named_nul_byte_is_escaped() {
    let _check = LeakCheck::new();
    let name = corral::scope(|s| s.spawn_named("a\0b", own_name).join().unwrap());
    assert_eq!(name.as_deref(), Some(r"corral-a\0b"));
}

#[test]
fn scope_try_spawn_named_nul_byte_is_an_invalid_input_error() {
    let _check = LeakCheck::new();
    corral::scope(|s| {
        let err = s.try_spawn_named("a\0b", own_name).map(|_| ()).unwrap_err();
        assert_eq!(err.io_error().kind(), ErrorKind::InvalidInput);
    });
}

#[test]
fn scope_try_spawn_named_empty_name_is_allowed() {
    let _check = LeakCheck::new();
    let name = corral::scope(|s| s.try_spawn_named("", own_name).unwrap().join().unwrap());
    assert_eq!(name.as_deref(), Some("corral-"));
}
