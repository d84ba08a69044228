//! A panic in a request handler fails that request with EIO and leaves
//! the mount serving: the adapter catches it at its boundary. The panic
//! comes from the `test-hooks` feature (a lookup of `.vigilfs-test-panic`
//! panics), enabled for this crate's tests only.

mod common;

use std::fs;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use fserror::{EventKind, Group, GroupConfig};

/// Runs `operation` on a thread; its result, or `None` if it has not
/// returned within `timeout` (a mount that stopped answering).
fn within<T: Send + 'static>(
    timeout: Duration,
    operation: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let _ = sender.send(operation());
    });
    receiver.recv_timeout(timeout).ok()
}

#[test]
fn a_panicking_handler_fails_its_request_with_eio_and_the_mount_serves_on() {
    if !common::fuse_available() {
        return;
    }
    let mount = common::Mount::new();
    let group = Group::new(GroupConfig::merge());
    group.subscribe(mount.engine().events()).unwrap();
    let running = group.read_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(running.kind, EventKind::Running);
    fs::write(mount.join("before"), b"written before").unwrap();
    let trap: PathBuf = mount.join(".vigilfs-test-panic");

    // More panics than the mount has threads (4): none may take a thread
    // down with it.
    for attempt in 0..12 {
        let path = trap.clone();
        let outcome = within(Duration::from_secs(5), move || fs::metadata(&path))
            .unwrap_or_else(|| panic!("attempt {attempt}: the mount stopped answering"));
        let error = outcome.expect_err("a panicking lookup cannot succeed");
        assert_eq!(error.raw_os_error(), Some(libc::EIO), "attempt {attempt}");
    }

    // Everything else still works.
    let root = mount.path().to_path_buf();
    let served = within(
        Duration::from_secs(5),
        move || -> std::io::Result<Vec<u8>> {
            fs::write(root.join("after"), b"written after")?;
            assert_eq!(fs::read(root.join("before"))?, b"written before");
            fs::create_dir(root.join("dir"))?;
            fs::read(root.join("after"))
        },
    )
    .expect("the mount answers after the panics");
    assert_eq!(served.unwrap(), b"written after");

    // The panics were announced as error events. The EIO reply goes out
    // while the panic unwinds, before the event is emitted, so the last
    // panic's error may come as an event of its own after the merged one.
    let mut announced = 0;
    while announced < 12 {
        let event = group
            .read_timeout(Duration::from_secs(2))
            .unwrap_or_else(|_| panic!("{announced} of 12 panics announced"));
        assert_eq!(event.kind, EventKind::Error);
        assert_eq!(event.first.map(|first| first.errno.get()), Some(libc::EIO));
        announced += event.count;
    }
    assert_eq!(announced, 12);
    mount.finish();
}
