//! The control server end to end over its socket: answers, deadlines,
//! connection bounds, and stopping without waiting for a client.

use super::*;
use crate::control::client;
use crate::control::protocol::Request;
use std::io::{BufRead, Read, Write};
use vigilfs::device::{FaultDevice, MemoryDevice, SectorSize};
use vigilfs::fs::Filesystem;
use vigilfs::fs::MountOptions;
use vigilfs::mkfs::{make_filesystem, MkfsOptions};

fn mounted() -> (Arc<EngineSlot>, Arc<FaultPlan>) {
    let memory = Arc::new(MemoryDevice::new(64 << 20, SectorSize::Bytes512));
    make_filesystem(memory.clone(), &MkfsOptions::default()).unwrap();
    let plan = Arc::new(FaultPlan::new());
    let device = FaultDevice::new(memory, Arc::clone(&plan));
    let options = MountOptions {
        fault_plan: Some(Arc::clone(&plan)),
        ..MountOptions::default()
    };
    let fs = Filesystem::mount(Arc::new(device), options).unwrap();
    (EngineSlot::new(Arc::new(fs)), plan)
}

/// Takes the engine out of `slot` and unmounts it: nothing else may
/// hold it by now.
/// A control server at `directory` for a fresh mount, held to `limits`.
fn serve_limited(directory: &Path, limits: Limits) -> (Arc<EngineSlot>, ControlServer) {
    let (slot, plan) = mounted();
    let server = serve(
        directory,
        Served {
            limits,
            ..Served::new(Arc::clone(&slot), plan, 0)
        },
    )
    .unwrap();
    (slot, server)
}

/// A socket whose listener is closed may be swept as stale, and a
/// socket bound next may get its inode number (ext4): a stopping
/// server must remove its names while it still listens, or its removal
/// "by identity" takes the newcomer's (a flake: a mount's socket
/// vanished right after the mount).
#[test]
fn a_stopping_server_removes_its_socket_while_it_still_listens() {
    let mountpoint = tempfile::tempdir().unwrap();
    let (slot, server) = serve_limited(mountpoint.path(), Limits::default());
    let path = server.path().to_path_buf();
    let lock = DirectoryLock::take(path.parent().unwrap());
    let stopper = std::thread::spawn(move || server.stop());
    // Longer than the accept loop takes to see the stop.
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        connect_nonblocking(&path).is_ok(),
        "the listener closed before the socket's names were removed"
    );
    drop(lock);
    stopper.join().unwrap();
    assert!(!path.exists());
    unmount(&slot);
}

fn unmount(slot: &EngineSlot) {
    let fs = slot.take().expect("the engine");
    let Ok(fs) = Arc::try_unwrap(fs) else {
        panic!("a client thread holds the engine");
    };
    fs.unmount().unwrap();
}

fn raw_exchange(path: &Path, request: &[u8]) -> Value {
    let mut stream = UnixStream::connect(path).unwrap();
    stream.write_all(request).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap()
}

fn read_answer(stream: &UnixStream) -> Value {
    let mut line = Vec::new();
    io::BufReader::new(stream)
        .read_until(b'\n', &mut line)
        .unwrap();
    serde_json::from_slice(&line).unwrap()
}

#[test]
fn the_server_answers_status_inject_and_sync_and_survives_garbage() {
    let directory = tempfile::tempdir().unwrap();
    let (slot, plan) = mounted();
    let server = serve(
        directory.path(),
        Served::new(Arc::clone(&slot), Arc::clone(&plan), 4242),
    )
    .unwrap();
    let socket = server.path().to_path_buf();
    assert!(socket.exists());
    let me = current_uid();
    let at = canonical_mountpoint(directory.path()).unwrap();
    let call = |request: &Request| client::call_owned(&at, me, request);

    let status = call(&Request::Status).unwrap();
    assert_eq!(status["state"], "running");
    assert_eq!(status["owner_uid"], 4242);
    assert_eq!(status["fault_rules"].as_array().unwrap().len(), 0);

    let added = call(&Request::InjectAdd {
        rules: vec!["fail op=write class=data".into()],
        drop_caches: false,
    })
    .unwrap();
    let id = added["added"][0]["id"].as_u64().unwrap();
    assert_eq!(plan.rules().len(), 1);
    let listed = call(&Request::InjectList).unwrap();
    assert_eq!(listed["rules"][0]["id"].as_u64(), Some(id));
    let bad = call(&Request::InjectAdd {
        rules: vec!["fail op=write".into(), "explode now".into()],
        drop_caches: false,
    });
    assert!(bad.is_err());
    assert_eq!(plan.rules().len(), 1, "nothing added from a bad batch");
    call(&Request::InjectRemove { id }).unwrap();
    assert!(call(&Request::InjectRemove { id }).is_err());
    // Clearing no rules changes nothing, and says so by no event (review
    // 57: each empty clear logged "0 rules active").
    let newest = || slot.current().unwrap().event_log().newest_id();
    let before = newest();
    call(&Request::InjectClear).unwrap();
    assert_eq!(newest(), before);

    call(&Request::Sync).unwrap();
    call(&Request::Freeze).unwrap();
    assert_eq!(call(&Request::Status).unwrap()["state"], "frozen");
    call(&Request::Thaw).unwrap();
    assert!(call(&Request::Thaw).is_err());

    for garbage in [
        &b"not json\n"[..],
        b"{\"command\":\"explode\"}\n",
        b"",
        &[0xff, 0xfe, b'\n'],
        b"{\"command\":\"shutdown\"}\n",
    ] {
        let answer = raw_exchange(&socket, garbage);
        assert_eq!(answer["ok"], false, "{answer}");
        assert_eq!(answer["error"]["kind"], "bad_request");
    }
    let answer = raw_exchange(&socket, b"{\"command\":\"status\"}");
    assert_eq!(answer["ok"], true);

    server.stop();
    assert!(!socket.exists(), "the socket is removed at stop");
    assert!(call(&Request::Status).is_err());
    unmount(&slot);
}

#[test]
fn a_request_trickling_in_is_cut_off_at_the_whole_request_deadline() {
    let directory = tempfile::tempdir().unwrap();
    let limits = Limits {
        request_deadline: Duration::from_millis(600),
        ..Limits::default()
    };
    let (slot, server) = serve_limited(directory.path(), limits);
    let stream = UnixStream::connect(server.path()).unwrap();
    let start = Instant::now();
    // One byte every 100 ms: each read is quick, the whole is not.
    let request = br#"{"command":"status"}"#;
    let mut cut_off = false;
    for byte in request {
        if (&stream).write_all(&[*byte]).is_err() {
            cut_off = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let answer = if cut_off {
        None
    } else {
        Some(read_answer(&stream))
    };
    let elapsed = start.elapsed();
    if let Some(answer) = answer {
        assert_eq!(answer["ok"], false, "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("no complete request line"),
            "{answer}"
        );
    }
    assert!(
        elapsed < Duration::from_millis(600 + 1_000),
        "cut off after {elapsed:?}"
    );
    // A prompt client is still served.
    let at = canonical_mountpoint(directory.path()).unwrap();
    assert_eq!(
        client::call_owned(&at, current_uid(), &Request::Status).unwrap()["state"],
        "running"
    );
    server.stop();
    unmount(&slot);
}

#[test]
fn connections_beyond_the_bound_are_refused_as_busy() {
    let directory = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_connections: 3,
        max_per_uid: 2,
        ..Limits::default()
    };
    let (slot, server) = serve_limited(directory.path(), limits);
    // Two idle connections fill this uid's share.
    let idle: Vec<UnixStream> = (0..2)
        .map(|_| UnixStream::connect(server.path()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let third = UnixStream::connect(server.path()).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let answer = read_answer(&third);
    assert_eq!(answer["ok"], false);
    assert_eq!(answer["error"]["kind"], "busy", "{answer}");
    let at = canonical_mountpoint(directory.path()).unwrap();
    let refused = client::call_owned(&at, current_uid(), &Request::Status).unwrap_err();
    let failure = refused.into_failure("status", directory.path());
    assert_eq!(failure.exit_code(), 8);
    assert!(failure.to_string().contains("try again"), "{failure}");
    // Closing them frees the slots.
    drop(idle);
    let start = Instant::now();
    loop {
        match client::call_owned(&at, current_uid(), &Request::Status) {
            Ok(status) => {
                assert_eq!(status["state"], "running");
                break;
            }
            Err(error) => assert!(
                start.elapsed() < Duration::from_secs(5),
                "still refused: {error:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    server.stop();
    unmount(&slot);
}

/// Event listeners hold their connections for as long as the mount
/// lives: they must not take the room of one-shot requests, or a few
/// `events --follow` hooks lock everyone out of status, sync and
/// failure reports.
#[test]
fn event_followers_do_not_take_the_room_of_requests() {
    let directory = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_connections: 3,
        max_per_uid: 2,
        max_streams: 4,
        max_streams_per_uid: 3,
        ..Limits::default()
    };
    let (slot, server) = serve_limited(directory.path(), limits);
    let follow = |expect_busy: bool| {
        let stream = UnixStream::connect(server.path()).unwrap();
        (&stream)
            .write_all(b"{\"command\":\"events\",\"follow\":true}\n")
            .unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let answer = read_answer(&stream);
        assert_eq!(answer["ok"] == false, expect_busy, "{answer}");
        if expect_busy {
            assert_eq!(answer["error"]["kind"], "busy", "{answer}");
        }
        stream
    };
    let followers: Vec<UnixStream> = (0..3).map(|_| follow(false)).collect();
    let refused = follow(true);
    let at = canonical_mountpoint(directory.path()).unwrap();
    for _ in 0..4 {
        let status = client::call_owned(&at, current_uid(), &Request::Status).unwrap();
        assert_eq!(status["state"], "running");
    }
    drop((followers, refused));
    server.stop();
    unmount(&slot);
}

/// Other users' connections, however many, cannot lock root (or the
/// user who mounted) out of the mount's control.
#[test]
fn other_users_cannot_take_the_room_of_root() {
    let directory = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_connections: 2,
        max_per_uid: 4,
        ..Limits::default()
    };
    let (slot, server) = serve_limited(directory.path(), limits);
    // uid 65534 holds every shared connection, idle.
    std::fs::set_permissions(directory.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let hold = "import socket, sys, time\n\
                held = []\n\
                for _ in range(2):\n    \
                    s = socket.socket(socket.AF_UNIX)\n    \
                    s.connect(sys.argv[1])\n    \
                    held.append(s)\n\
                print('held', flush=True)\n\
                time.sleep(4)\n";
    let mut holder = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["/usr/bin/python3", "-c"])
        .arg(hold)
        .arg(server.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");
    std::thread::sleep(Duration::from_millis(200));
    let at = canonical_mountpoint(directory.path()).unwrap();
    let status = client::call_owned(&at, current_uid(), &Request::Status).unwrap();
    assert_eq!(status["state"], "running");
    let _ = holder.kill();
    let _ = holder.wait();
    server.stop();
    unmount(&slot);
}

#[test]
fn stopping_does_not_wait_for_a_client_and_the_engine_is_free_at_once() {
    let directory = tempfile::tempdir().unwrap();
    let (slot, plan) = mounted();
    let server = serve(directory.path(), Served::new(Arc::clone(&slot), plan, 0)).unwrap();
    let stuck = UnixStream::connect(server.path()).unwrap();
    (&stuck).write_all(b"{\"comm").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    server.stop();
    unmount(&slot);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    drop(stuck);
}
