//! POSIX ACLs through a real mount, with `setfacl` and `getfacl` and other
//! users: a named user gets what the ACL grants (and the mask allows),
//! a default ACL is inherited in place of the umask, chmod narrows the
//! mask, and everyone else is refused.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use common::{fuse_missing, text, Scratch};

const NAMED: u32 = 65534;
const STRANGER: u32 = 65533;

fn run(program: &str, arguments: &[&str]) -> Output {
    Command::new(program)
        .args(arguments)
        .output()
        .unwrap_or_else(|error| panic!("{program} runs (Debian packages acl, attr): {error}"))
}

fn succeeded(output: &Output, what: &str) -> String {
    assert_eq!(
        output.status.code(),
        Some(0),
        "{what}: {}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// `sh -c script` as user and group `uid`, without supplementary groups.
fn as_user(uid: u32, script: &str) -> Output {
    Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("setpriv runs")
}

#[test]
fn acls_grant_named_users_are_inherited_and_follow_chmod() {
    if fuse_missing("acls_grant_named_users_are_inherited_and_follow_chmod") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let shared = scratch.at("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o770)).unwrap();
    let shared_path = shared.to_str().unwrap();
    // The mode keeps everyone but root out; the ACL lets one user in, and
    // makes what is created inside it theirs to share too.
    let named_rule = format!("u:{NAMED}:rwx");
    succeeded(
        &run(
            "setfacl",
            &["-m", &named_rule, "-d", "-m", &named_rule, shared_path],
        ),
        "setfacl",
    );
    let listed = succeeded(&run("getfacl", &["-cpn", shared_path]), "getfacl");
    assert!(listed.contains(&format!("user:{NAMED}:rwx")), "{listed}");
    assert!(
        listed.contains(&format!("default:user:{NAMED}:rwx")),
        "{listed}"
    );
    assert_eq!(
        fs::metadata(&shared).unwrap().permissions().mode() & 0o777,
        0o770,
        "the mask is the group bits"
    );

    // A file made inside with umask 077: the default ACL, not the umask,
    // decides its mode (0666 narrowed by the ACL: 0660), and the named
    // user may read and write it.
    let file = shared.join("note");
    let file_path = file.to_str().unwrap();
    let made = run(
        "sh",
        &["-c", &format!("umask 077 && echo hello > {file_path}")],
    );
    succeeded(&made, "create");
    let meta = fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let listed = succeeded(&run("getfacl", &["-cpn", file_path]), "getfacl");
    assert!(listed.contains(&format!("user:{NAMED}:rwx")), "{listed}");
    assert!(listed.contains("mask::rw-"), "{listed}");
    let appended = as_user(
        NAMED,
        &format!("echo more >> {file_path} && cat {file_path}"),
    );
    assert_eq!(
        text(&appended.stdout),
        "hello\nmore\n",
        "{}",
        text(&appended.stderr)
    );
    // The directory's ACL lets the named user make files in it too.
    let own = as_user(NAMED, &format!("touch {shared_path}/own"));
    succeeded(&own, "the named user creates in the shared directory");

    // Anyone else is "other": nothing.
    let refused = as_user(STRANGER, &format!("cat {file_path}"));
    assert_ne!(refused.status.code(), Some(0), "a stranger read the file");
    assert!(text(&refused.stderr).contains("Permission denied"));

    // chmod g=r narrows the mask: the named user may read, not write.
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
    let listed = succeeded(&run("getfacl", &["-cpn", file_path]), "getfacl");
    assert!(listed.contains("mask::r--"), "{listed}");
    let read = as_user(NAMED, &format!("cat {file_path}"));
    assert_eq!(
        text(&read.stdout),
        "hello\nmore\n",
        "{}",
        text(&read.stderr)
    );
    let write = as_user(NAMED, &format!("echo again >> {file_path}"));
    assert_ne!(write.status.code(), Some(0), "the mask let a write through");

    // Without its ACL the file is the mode's alone: the named user is out.
    succeeded(&run("setfacl", &["-b", file_path]), "setfacl -b");
    let read = as_user(NAMED, &format!("cat {file_path}"));
    assert_ne!(read.status.code(), Some(0), "the named user kept access");
    scratch.umount(pid);

    // The ACLs survive a remount.
    let pid = scratch.mount(&[]);
    let listed = succeeded(&run("getfacl", &["-cpn", shared_path]), "getfacl");
    assert!(
        listed.contains(&format!("default:user:{NAMED}:rwx")),
        "{listed}"
    );
    scratch.umount(pid);
}

#[test]
fn an_acl_that_says_no_more_than_the_mode_is_set_without_error() {
    if fuse_missing("an_acl_that_says_no_more_than_the_mode_is_set_without_error") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let file = scratch.at("plain");
    fs::write(&file, b"x").unwrap();
    let path = file.to_str().unwrap();
    // The kernel turns both into a removal of an ACL the file never had
    // (it answered ENODATA).
    succeeded(
        &run(
            "setfattr",
            &["-n", "system.posix_acl_access", "-v", "0x02000000", path],
        ),
        "an empty ACL",
    );
    succeeded(&run("setfacl", &["-m", "u::rw,g::r,o::r", path]), "setfacl");
    succeeded(&run("setfacl", &["-b", path]), "setfacl -b");
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let listed = succeeded(&run("getfacl", &["-c", path]), "getfacl");
    assert!(!listed.contains("mask"), "{listed}");
    scratch.umount(pid);
}
