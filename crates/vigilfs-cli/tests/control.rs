//! The control plane end to end: a client trusts only the mount owner's
//! sockets (a planted one is refused), a slow client cannot hold the
//! server or delay unmount, stale sockets are cleaned away, a freeze keeps
//! serving reads, and a frozen mount detached lazily still ends at a
//! signal. They need root and /dev/fuse.

mod common;

use std::fs;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use vigilfs::format::FsState;

/// The control socket the mount process logged ("control socket PATH)"),
/// in the line it logs just after `--daemon` has returned.
fn control_socket(scratch: &Scratch) -> PathBuf {
    wait_until("the mount logs its socket", Duration::from_secs(30), || {
        scratch.log().contains("control socket ")
    });
    let log = scratch.log();
    let start = log
        .rfind("control socket ")
        .unwrap_or_else(|| panic!("no control socket in the log: {log}"))
        + "control socket ".len();
    let end = start + log[start..].find(')').unwrap();
    PathBuf::from(&log[start..end])
}

/// A listener on DIRECTORY/NAME whose server credentials (SO_PEERCRED) are
/// uid and gid 65534: bound by a thread that changed its own effective ids
/// with the raw system calls (which, unlike libc's wrappers, change only
/// the calling thread), as a socket planted by another user would be. The
/// directory is made (by that user) if missing.
fn listen_as_nobody(directory: &Path, name: &str) -> std::os::unix::net::UnixListener {
    let path = directory.join(name);
    let directory = directory.to_path_buf();
    std::thread::spawn(move || {
        // SAFETY: plain system calls on this thread's credentials; -1 keeps
        // the real and saved ids (root), so nothing else is affected.
        unsafe {
            let keep = -1 as libc::c_long;
            assert_eq!(libc::syscall(libc::SYS_setresgid, keep, 65534, keep), 0);
            assert_eq!(libc::syscall(libc::SYS_setresuid, keep, 65534, keep), 0);
        }
        if !directory.exists() {
            fs::create_dir(&directory).unwrap();
        }
        std::os::unix::net::UnixListener::bind(&path).unwrap()
    })
    .join()
    .unwrap()
}

/// Serves a planted listener: answers every request line with success and
/// counts the requests it got. Stops when `stop` is set.
fn serve_planted(
    listener: std::os::unix::net::UnixListener,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    use std::io::{BufRead, Write};
    use std::sync::atomic::Ordering;
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let mut requests = 0;
        while !stop.load(Ordering::Acquire) {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(2)))
                        .unwrap();
                    let mut line = Vec::new();
                    let _ = std::io::BufReader::new(&stream).read_until(b'\n', &mut line);
                    if !line.is_empty() {
                        requests += 1;
                        let _ = (&stream)
                            .write_all(b"{\"ok\":true,\"result\":{\"state\":\"running\"}}\n");
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        requests
    })
}

#[test]
fn a_planted_control_socket_is_refused() {
    if fuse_missing("a_planted_control_socket_is_refused") {
        return;
    }
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let real = control_socket(&scratch);
    assert!(real.starts_with("/run/vigilfs"), "{}", real.display());
    let name = real.file_name().unwrap().to_str().unwrap().to_string();
    let hidden = real.with_file_name(format!("{name}.hidden"));

    // 1. In the directory the client trusts, a socket served by uid 65534
    // (as if /run/vigilfs were writable to others): refused by SO_PEERCRED
    // before anything is sent.
    let planting = PathBuf::from(format!("/run/vigilfs-plant-{}", std::process::id()));
    fs::create_dir_all(&planting).unwrap();
    std::os::unix::fs::chown(&planting, Some(65534), Some(65534)).unwrap();
    let planted = listen_as_nobody(&planting, &name);
    let stop = Arc::new(AtomicBool::new(false));
    let server = serve_planted(planted, Arc::clone(&stop));
    fs::rename(&real, &hidden).unwrap();
    fs::rename(planting.join(&name), &real).unwrap();
    for command in ["sync", "freeze"] {
        let output = vigilfs(&[command, scratch.mnt()]);
        let message = text(&output.stderr);
        assert_eq!(output.status.code(), Some(8), "{command}: {message}");
        assert!(
            message.contains("refusing") && message.contains("uid 65534"),
            "{command}: {message}"
        );
    }
    stop.store(true, Ordering::Release);
    assert_eq!(
        server.join().unwrap(),
        0,
        "the planted server got a request"
    );
    fs::remove_file(&real).unwrap();
    fs::remove_dir(&planting).unwrap();

    // 2. Where only the planting user can write (its /tmp/vigilfs-65534,
    // or a $XDG_RUNTIME_DIR it controls): never even looked at for a mount
    // owned by root.
    let other_tmp = Path::new("/tmp/vigilfs-65534");
    let runtime = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(runtime.path(), Some(65534), Some(65534)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let servers = [
        serve_planted(listen_as_nobody(other_tmp, &name), Arc::clone(&stop)),
        serve_planted(
            listen_as_nobody(&runtime.path().join("vigilfs"), &name),
            Arc::clone(&stop),
        ),
    ];
    let output = Command::new(binary())
        .args(["sync", scratch.mnt()])
        .env("XDG_RUNTIME_DIR", runtime.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(8), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("no vigilfs mount is served there"),
        "{}",
        text(&output.stderr)
    );
    stop.store(true, Ordering::Release);
    for server in servers {
        assert_eq!(server.join().unwrap(), 0, "a planted server got a request");
    }
    fs::remove_file(other_tmp.join(&name)).unwrap();

    // 3. The planted socket under the mount's name and the real one under
    // another, as a moved mount's is: the planted one is refused, and the
    // real server found by asking the owner's sockets (review 58: the
    // refusal ended every command on a moved mount).
    let elsewhere = real.with_file_name(format!(
        "{:016x}.sock",
        0xbeef_0000_0000_0000_u64 | u64::from(std::process::id())
    ));
    fs::rename(&hidden, &elsewhere).unwrap();
    fs::create_dir_all(&planting).unwrap();
    std::os::unix::fs::chown(&planting, Some(65534), Some(65534)).unwrap();
    let planted = listen_as_nobody(&planting, &name);
    let stop = Arc::new(AtomicBool::new(false));
    let server = serve_planted(planted, Arc::clone(&stop));
    fs::rename(planting.join(&name), &real).unwrap();
    let status = vigilfs(&["status", scratch.mnt(), "--json"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stderr));
    assert!(
        text(&status.stderr).contains("refusing"),
        "{}",
        text(&status.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(answer["pid"].as_u64(), Some(u64::from(pid)));
    stop.store(true, Ordering::Release);
    assert_eq!(
        server.join().unwrap(),
        0,
        "the planted server got a request"
    );
    fs::remove_file(&real).unwrap();
    fs::remove_dir(&planting).unwrap();

    // The real server was never asked to freeze.
    fs::rename(&elsewhere, &real).unwrap();
    assert_eq!(scratch.status()["state"], "running");
    scratch.umount(pid);
}

/// `identify` as a client sends it, answered.
fn identify(socket: &Path) -> serde_json::Value {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream.write_all(b"{\"command\":\"identify\"}\n").unwrap();
    let mut answer = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut answer)
        .unwrap();
    serde_json::from_str(&answer).unwrap()
}

/// A server whose mount has ended says it serves none. The kernel gives a
/// freed FUSE device number to the next mount at once, and an exiting
/// server still naming its old one was taken for that mount's (an fsck of
/// an image just unmounted was told it "is mounted on" a crash lab's mount
/// point, whose mount had got the number).
#[test]
fn an_exiting_server_says_it_serves_no_mount() {
    if fuse_missing("an_exiting_server_says_it_serves_no_mount") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let socket = control_socket(&scratch);
    let serving = identify(&socket);
    assert!(serving["result"]["device"].is_string(), "{serving}");
    // The unmount's last flush is held, so the process is still there,
    // serving its socket, once the mount is gone.
    let slow = scratch.inject(&["--delay", "1s", "--io", "flush"]);
    assert_eq!(slow.status.code(), Some(0), "{}", text(&slow.stderr));
    fs::write(scratch.at("dirty"), b"written back at the unmount").unwrap();
    umount_retrying_busy(&scratch.mountpoint);
    assert!(!process_gone(pid), "the process did not wait for its flush");
    let exiting = identify(&socket);
    assert_eq!(
        exiting["result"]["device"],
        serde_json::Value::Null,
        "{exiting}"
    );
    wait_until("the mount process exits", Duration::from_secs(60), || {
        process_gone(pid)
    });
}

/// Sends a status request one byte every 2 s until the server cuts it off
/// (a write fails or an answer arrives) or `give_up` passes; returns how
/// long that took and the answer, if any.
fn trickle(socket: &Path, give_up: Duration) -> (Duration, String) {
    use std::io::Write;
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    let start = Instant::now();
    let request = b"{\"command\":\"status\"}";
    let mut answer = Vec::new();
    for byte in request.iter().cycle() {
        if stream.write_all(&[*byte]).is_err() || start.elapsed() > give_up {
            break;
        }
        let mut buffer = [0u8; 512];
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match stream.read(&mut buffer) {
                Ok(0) => break,
                Ok(count) => answer.extend_from_slice(&buffer[..count]),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        if !answer.is_empty() {
            break;
        }
    }
    (start.elapsed(), text(&answer))
}

#[test]
fn a_slow_client_is_cut_off_and_does_not_delay_unmount() {
    if fuse_missing("a_slow_client_is_cut_off_and_does_not_delay_unmount") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let socket = control_socket(&scratch);

    // The whole request has a deadline (5 s), however the bytes trickle.
    let (took, answer) = trickle(&socket, Duration::from_secs(30));
    eprintln!("a client sending one byte every 2 s was cut off after {took:?}");
    assert!(took < Duration::from_secs(9), "cut off after {took:?}");
    assert!(answer.contains("no complete request line"), "{answer}");
    assert_eq!(scratch.status()["state"], "running");

    // Unmounting while a slow client is mid-request: the process does not
    // wait for it.
    let slow = {
        let socket = socket.clone();
        std::thread::spawn(move || trickle(&socket, Duration::from_secs(30)))
    };
    // Long enough for the client to connect and send a byte, short
    // against the deadline: the process's exit must come before it.
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let umount = Command::new("umount")
        .arg(&scratch.mountpoint)
        .output()
        .unwrap();
    assert!(umount.status.success(), "{}", text(&umount.stderr));
    wait_until("the mount process exits", Duration::from_secs(60), || {
        process_gone(pid)
    });
    let exit = start.elapsed();
    eprintln!("umount to mount-process exit with a slow client connected: {exit:?}");
    assert_eq!(superblock_state(&scratch.image), FsState::Clean);
    // A process that waited for the client would have sent it the
    // deadline's answer (4.7 s after the unmount) before exiting; one that
    // did not wait just closed the connection. Judged by what the client
    // got, not by a time a loaded machine can miss; only an exit slower
    // than the deadline for other reasons leaves nothing to judge.
    let (_, answer) = slow.join().unwrap();
    if exit < Duration::from_secs(4) {
        assert!(
            !answer.contains("no complete request line"),
            "the mount process waited for the slow client ({exit:?}): {answer}"
        );
    } else {
        eprintln!("the mount process took {exit:?} to exit: the deadline came first");
    }
}

#[test]
fn stale_control_sockets_are_removed() {
    if fuse_missing("stale_control_sockets_are_removed") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let socket = control_socket(&scratch);
    // SAFETY: killing the mount process by pid.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    wait_until("the mount process dies", Duration::from_secs(30), || {
        process_gone(pid)
    });
    assert!(socket.exists(), "a killed process leaves its socket");

    // The client that finds it says the process is gone, and removes it.
    let status = vigilfs(&["status", scratch.mnt()]);
    let message = text(&status.stderr);
    assert_eq!(status.status.code(), Some(8), "{message}");
    assert!(message.contains("the mount process is gone"), "{message}");
    assert!(
        message.contains("removed the stale control socket"),
        "{message}"
    );
    assert!(!socket.exists(), "the stale socket is still there");
    lazy_unmount(&scratch.mountpoint);
    let _ = fs::remove_file(&scratch.pid_file);

    // A new server sweeps its directory: another dead mount's socket goes,
    // a live mount's stays.
    let other = Scratch::new();
    let other_pid = other.mount(&["--size", "64M"]);
    let live = control_socket(&other);
    let dead = socket.with_file_name(format!(
        "{:016x}.sock",
        0xdead_0000_0000_0000_u64 | u64::from(std::process::id())
    ));
    drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
    assert!(dead.exists());
    let pid = scratch.mount(&["--size", "64M"]);
    assert!(
        !dead.exists(),
        "the new server left a stale socket in its directory"
    );
    assert!(live.exists(), "the new server removed a live socket");
    assert_eq!(other.status()["state"], "running");
    scratch.umount(pid);
    other.umount(other_pid);
}

/// Waits up to `timeout` for `child`: how long it ran and its output, or
/// the child, sent SIGKILL, if it had not exited by then. Such a child is
/// not waited for here: blocked behind a lock the kernel holds for a FUSE
/// request, it exits only once that request is answered.
/// Whether process `pid` is inside system call `number` now (blocked in
/// it, as a writer behind a freeze is).
fn in_system_call(pid: u32, number: libc::c_long) -> bool {
    fs::read_to_string(format!("/proc/{pid}/syscall"))
        .is_ok_and(|call| call.split_whitespace().next() == Some(&number.to_string()))
}

fn finish_within(mut child: Child, timeout: Duration) -> Result<(Duration, Output), Child> {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return Ok((start.elapsed(), child.wait_with_output().unwrap()));
        }
        if start.elapsed() >= timeout {
            let _ = child.kill();
            return Err(child);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What [`finish_within`] returned, judged after thaw: the child that had
/// to be killed is reaped now, and its lateness is the failure.
fn in_time(outcome: Result<(Duration, Output), Child>, what: &str) -> (Duration, Output) {
    outcome.unwrap_or_else(|child| {
        let _ = child.wait_with_output();
        panic!("{what} took over 1 s during the freeze")
    })
}

fn spawn(program: &str, arguments: &[&str]) -> Child {
    Command::new(program)
        .args(arguments)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// During a freeze, writers wait; with more of them than the mount has
/// FUSE threads, reads, stat and the control plane must still answer, and
/// after thaw every writer completes. Everything that touches the mount
/// during the freeze is a child process: a process holding a file of the
/// mount open could not even start one (closing the inherited descriptor
/// at exec sends FUSE a FLUSH).
#[test]
fn a_freeze_with_more_writers_than_threads_still_serves_reads_stat_and_status() {
    if fuse_missing("a_freeze_with_more_writers_than_threads_still_serves_reads_stat_and_status") {
        return;
    }
    const THREADS: usize = 2;
    const WRITERS: usize = 6;
    let scratch = Scratch::new();
    let threads = format!("threads={THREADS}");
    let pid = scratch.mount(&["--size", "64M", "-o", &threads]);
    fs::write(scratch.at("other"), b"read me during the freeze").unwrap();
    for writer in 0..WRITERS {
        fs::write(scratch.at(&format!("w{writer}")), b"").unwrap();
    }
    // Remount: the kernel has nothing of "other" cached, so reading and
    // stat-ing it reach the mount process.
    scratch.umount(pid);
    let pid = scratch.mount(&["-o", &threads]);

    let freeze = vigilfs(&["freeze", scratch.mnt()]);
    assert_eq!(freeze.status.code(), Some(0), "{}", text(&freeze.stderr));
    let writers: Vec<Child> = (0..WRITERS)
        .map(|writer| {
            let script = format!(
                "printf 'writer {writer}' 1<> '{}'",
                scratch.at(&format!("w{writer}")).display()
            );
            spawn("sh", &["-c", &script])
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    // Anything stuck behind the freeze waits until the thaw, never ends:
    // a long limit still tells the two apart on a loaded machine.
    let limit = Duration::from_secs(20);
    let other = scratch.at("other");
    let read = finish_within(spawn("cat", &[other.to_str().unwrap()]), limit);
    let stat = finish_within(spawn("ls", &["-l", scratch.mnt()]), limit);
    let status = finish_within(spawn(binary(), &["status", scratch.mnt(), "--json"]), limit);
    let mut writers = writers;
    let all_waiting = writers
        .iter_mut()
        .all(|writer| writer.try_wait().unwrap().is_none());

    // Thaw before judging, so a failure leaves no writer stuck.
    let thaw = vigilfs(&["thaw", scratch.mnt()]);
    assert_eq!(thaw.status.code(), Some(0), "{}", text(&thaw.stderr));
    for (number, writer) in writers.into_iter().enumerate() {
        let (_, output) = finish_within(writer, Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("writer {number} did not finish after thaw"));
        assert!(
            output.status.success(),
            "writer {number}: {}",
            text(&output.stderr)
        );
    }

    let (took, output) = in_time(read, "reading a file");
    assert_eq!(output.stdout, b"read me during the freeze");
    eprintln!(
        "read during the freeze with {WRITERS} writers waiting on {THREADS} threads: {took:?}"
    );
    let (took, output) = in_time(stat, "ls -l");
    let listing = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        listing.contains("other") && listing.contains("w5"),
        "{listing}"
    );
    eprintln!("ls -l during the freeze: {took:?}");
    let (took, output) = in_time(status, "vigilfs status");
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["state"], "frozen");
    eprintln!("vigilfs status during the freeze: {took:?}");
    assert!(all_waiting, "a writer got through the frozen gate");
    for writer in 0..WRITERS {
        assert_eq!(
            fs::read(scratch.at(&format!("w{writer}"))).unwrap(),
            format!("writer {writer}").as_bytes()
        );
    }
    scratch.umount(pid);
}

/// A frozen mount detached lazily (`umount -l`, or Ctrl-C of a busy
/// foreground mount) with a writer waiting for the thaw: the mount table
/// no longer has it, so no command reaches it, and it would go only once
/// the writer's file closed, which the freeze never let happen. A signal
/// to the mount process thaws it first: the writer finishes, the mount
/// goes, and the image is left clean.
#[test]
fn a_signal_thaws_a_frozen_mount_so_its_lazy_unmount_ends() {
    if fuse_missing("a_signal_thaws_a_frozen_mount_so_its_lazy_unmount_ends") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let freeze = vigilfs(&["freeze", scratch.mnt()]);
    assert_eq!(freeze.status.code(), Some(0), "{}", text(&freeze.stderr));
    let script = format!("printf 'waited' > '{}'", scratch.at("late").display());
    let writer = spawn("sh", &["-c", &script]);
    // Detached before its open reached the mount, the writer would create
    // the file in the directory underneath.
    wait_until(
        "the writer waits on the freeze",
        Duration::from_secs(20),
        || in_system_call(writer.id(), libc::SYS_openat),
    );
    lazy_unmount(Path::new(scratch.mnt()));
    // SAFETY: signalling the mount process this test started, by pid.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let (_, output) = finish_within(writer, Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("the writer still waits: {}", scratch.log()));
    assert!(output.status.success(), "{}", text(&output.stderr));
    wait_until("the mount process exits", Duration::from_secs(30), || {
        process_gone(pid)
    });
    assert!(scratch.log().contains("thawed"), "{}", scratch.log());
    let fsck = vigilfs(&["fsck", scratch.img()]);
    assert_eq!(fsck.status.code(), Some(0), "{}", text(&fsck.stdout));
    let pid = scratch.mount(&[]);
    assert_eq!(fs::read(scratch.at("late")).unwrap(), b"waited");
    scratch.umount(pid);
}

/// A second Ctrl-C of a mount detached because files stay open says why
/// it goes on (it said nothing; review 43), and the mount ends once the
/// last file closes.
#[test]
fn a_second_signal_to_a_detached_busy_mount_says_what_it_waits_for() {
    if fuse_missing("a_second_signal_to_a_detached_busy_mount_says_what_it_waits_for") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let held = fs::File::create(scratch.at("held")).unwrap();
    for _ in 0..2 {
        // SAFETY: signalling the mount process this test started, by pid.
        unsafe {
            libc::kill(pid as i32, libc::SIGINT);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    wait_until(
        "the second signal is answered",
        Duration::from_secs(20),
        || {
            scratch.log().contains("SIGINT: ")
                && scratch
                    .log()
                    .contains("is detached and ends when its last open file closes (1 still open)")
        },
    );
    assert!(!process_gone(pid), "{}", scratch.log());
    drop(held);
    wait_until("the mount process exits", Duration::from_secs(30), || {
        process_gone(pid)
    });
    assert!(scratch.log().contains("(clean)"), "{}", scratch.log());
}

/// A client waiting on a stopped mount process (SIGSTOP, a debugger)
/// gives up within seconds and says why, and what it asked is not done
/// once the process resumes. A freeze carried out then held every writer
/// of a mount nobody knew was frozen.
#[test]
fn a_freeze_whose_client_gave_up_on_a_stopped_mount_is_not_carried_out() {
    if fuse_missing("a_freeze_whose_client_gave_up_on_a_stopped_mount_is_not_carried_out") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    // The client's look at the mount point comes from the kernel's cache.
    fs::metadata(scratch.mnt()).unwrap();
    let socket = control_socket(&scratch);
    // SAFETY: signalling the mount process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let outcome = finish_within(
        spawn(env!("CARGO_BIN_EXE_vigilfs"), &["freeze", scratch.mnt()]),
        Duration::from_secs(60),
    );
    // `vigilfs freeze` does not send its request before the server says
    // which mount it serves; a client sending it at once, and leaving:
    let mut raw = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    raw.write_all(b"{\"command\":\"freeze\"}\n").unwrap();
    drop(raw);
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    let (waited, output) = outcome.unwrap_or_else(|child| {
        let _ = child.wait_with_output();
        panic!("freeze waited a minute on a stopped mount process")
    });
    assert_ne!(output.status.code(), Some(0));
    assert!(
        text(&output.stderr).contains(&format!("it is stopped: `kill -CONT {pid}`")),
        "{}",
        text(&output.stderr)
    );
    eprintln!("freeze gave up on the stopped mount process after {waited:?}");
    wait_until(
        "the mount logs the request it did not carry out",
        Duration::from_secs(30),
        || {
            scratch
                .log()
                .contains("whose client had left was not carried out")
        },
    );
    assert_eq!(scratch.status()["state"], "running");
    fs::write(scratch.at("after"), b"not frozen").unwrap();
    scratch.umount(pid);
}

/// A mount process out of file descriptors (its `ulimit -n` reached, here
/// by event streams) tells a control client so and serves it again once
/// descriptors are free. The connection waited in the socket's backlog,
/// never accepted, until the client called the process hung.
#[test]
fn a_mount_process_out_of_descriptors_says_so_to_control_clients() {
    if fuse_missing("a_mount_process_out_of_descriptors_says_so_to_control_clients") {
        return;
    }
    let scratch = Scratch::new();
    let binary = env!("CARGO_BIN_EXE_vigilfs");
    let mounted = Command::new("sh")
        .args(["-c", "ulimit -n 40 && exec \"$0\" \"$@\"", binary])
        .args([
            "mount",
            scratch.img(),
            scratch.mnt(),
            "--daemon",
            "--size",
            "64M",
        ])
        .args(["--pid-file", scratch.pid_file.to_str().unwrap()])
        .args(["--log-file", scratch.log_file.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(mounted.status.code(), Some(0), "{}", text(&mounted.stderr));
    let pid: u32 = fs::read_to_string(&scratch.pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let descriptors = || fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let mut followers = Vec::new();
    let mut refusal = None;
    while followers.len() < 30 && refusal.is_none() {
        let before = descriptors();
        let mut follower = spawn(binary, &["events", "--follow", scratch.mnt()]);
        wait_until(
            "the stream is served or refused",
            Duration::from_secs(30),
            || descriptors() > before || follower.try_wait().unwrap().is_some(),
        );
        followers.push(follower);
        let (_, status) = finish_within(
            spawn(binary, &["status", scratch.mnt()]),
            Duration::from_secs(60),
        )
        .unwrap_or_else(|child| {
            let _ = child.wait_with_output();
            panic!("status waited a minute on a mount process out of descriptors")
        });
        if status.status.code() != Some(0) {
            refusal = Some(status);
        }
    }
    let refusal = refusal.expect("30 event streams never reached the limit of 40 descriptors");
    assert_eq!(refusal.status.code(), Some(8), "{}", text(&refusal.stderr));
    assert!(
        text(&refusal.stderr).contains("Too many open files"),
        "{}",
        text(&refusal.stderr)
    );
    for mut follower in followers {
        let _ = follower.kill();
        let _ = follower.wait();
    }
    wait_until("the mount answers again", Duration::from_secs(30), || {
        vigilfs(&["status", scratch.mnt()]).status.code() == Some(0)
    });
    assert!(
        scratch.log().contains("cannot accept a connection"),
        "{}",
        scratch.log()
    );
    scratch.umount(pid);
}

/// `vigilfs events` and a second mount of the image of a stopped mount
/// process (SIGSTOP, a debugger) name it and its pid within seconds. Both
/// waited until it was resumed: the stream's first answer had no timeout,
/// and the second mount looked at the first mount's root.
#[test]
fn events_and_a_second_mount_name_a_stopped_mount_process_rather_than_wait_for_it() {
    if fuse_missing(
        "events_and_a_second_mount_name_a_stopped_mount_process_rather_than_wait_for_it",
    ) {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let second = scratch.directory.path().join("second");
    fs::create_dir(&second).unwrap();
    // SAFETY: signalling the mount process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let binary = env!("CARGO_BIN_EXE_vigilfs");
    let events = finish_within(
        spawn(binary, &["events", scratch.mnt()]),
        Duration::from_secs(60),
    );
    let mounted = finish_within(
        spawn(binary, &["mount", scratch.img(), second.to_str().unwrap()]),
        Duration::from_secs(60),
    );
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    for (what, outcome) in [("events", events), ("a second mount", mounted)] {
        let (waited, output) = outcome.unwrap_or_else(|child| {
            let _ = child.wait_with_output();
            panic!("{what} waited a minute on a stopped mount process")
        });
        assert_eq!(
            output.status.code(),
            Some(8),
            "{what}: {}",
            text(&output.stderr)
        );
        assert!(
            text(&output.stderr).contains(&format!("`kill -CONT {pid}`")),
            "{what}: {}",
            text(&output.stderr)
        );
        eprintln!("{what} gave up on the stopped mount process after {waited:?}");
    }
    assert!(!is_mounted(&second), "the second mount point was mounted");
    assert_eq!(scratch.status()["state"], "running");
    scratch.umount(pid);
}
