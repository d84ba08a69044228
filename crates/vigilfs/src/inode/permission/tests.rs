//! The permission rules held to the Linux behaviour the parent module's
//! comment cites, case by case: each class of caller, each exception.

use super::xattr::FILE_CAPABILITY_XATTR;
use super::*;
use crate::inode::record::Timestamp;

const OWNER: u32 = 1000;
const GROUP: u32 = 100;

fn inode(kind: FileType, permissions: u32) -> InodeRecord {
    InodeRecord {
        mode: kind.mode_bits() | permissions,
        uid: OWNER,
        gid: GROUP,
        nlink: 1,
        flags: 0,
        size: 0,
        generation: 1,
        rdev: 0,
        atime: Timestamp::default(),
        mtime: Timestamp::default(),
        ctime: Timestamp::default(),
        btime: Timestamp::default(),
    }
}

fn file(permissions: u32) -> InodeRecord {
    inode(FileType::Regular, permissions)
}

fn dir(permissions: u32) -> InodeRecord {
    inode(FileType::Directory, permissions)
}

fn user(uid: u32, gid: u32, groups: &[u32]) -> Caller {
    Caller {
        uid,
        gid,
        groups: groups.to_vec().into(),
        umask: 0,
    }
}

fn owner() -> Caller {
    user(OWNER, 500, &[])
}

fn member() -> Caller {
    user(2000, GROUP, &[])
}

fn stranger() -> Caller {
    user(3000, 300, &[301])
}

fn errno<T: fmt::Debug>(result: PermResult<T>) -> i32 {
    result.expect_err("expected a refusal").errno()
}

const RW: Access = Access(6);

#[test]
fn caller_groups_count_primary_and_supplementary() {
    let caller = user(5, 10, &[11, 12]);
    assert!(caller.in_group(10) && caller.in_group(12));
    assert!(!caller.in_group(13));
    assert!(Caller::root().is_root() && !caller.is_root());
}

#[test]
fn owner_class_applies_to_the_owner() {
    let record = file(0o600);
    assert!(check_access(&record, &owner(), RW).is_ok());
    assert_eq!(
        errno(check_access(&record, &owner(), Access::EXECUTE)),
        libc::EACCES
    );
    assert_eq!(
        errno(check_access(&record, &member(), Access::READ)),
        libc::EACCES
    );
}

#[test]
fn owner_with_mode_0o070_is_denied_even_when_in_the_group() {
    let record = file(0o070);
    let owner_in_group = user(OWNER, GROUP, &[]);
    assert_eq!(
        errno(check_access(&record, &owner_in_group, Access::READ)),
        libc::EACCES
    );
    assert!(check_access(&record, &member(), RW | Access::EXECUTE).is_ok());
}

#[test]
fn group_class_applies_to_members_and_does_not_fall_through_to_other() {
    let record = file(0o604);
    assert_eq!(
        errno(check_access(&record, &member(), Access::READ)),
        libc::EACCES
    );
    assert!(check_access(&record, &stranger(), Access::READ).is_ok());
}

#[test]
fn supplementary_groups_select_the_group_class() {
    let record = file(0o040);
    let supplementary = user(2000, 7, &[8, GROUP]);
    assert!(check_access(&record, &supplementary, Access::READ).is_ok());
    assert_eq!(
        errno(check_access(&record, &stranger(), Access::READ)),
        libc::EACCES
    );
}

#[test]
fn other_class_applies_to_strangers() {
    let record = file(0o661);
    assert!(check_access(&record, &stranger(), Access::EXECUTE).is_ok());
    assert_eq!(
        errno(check_access(&record, &stranger(), Access::WRITE)),
        libc::EACCES
    );
    assert!(check_access(&record, &stranger(), Access::NONE).is_ok());
}

#[test]
fn root_reads_and_writes_anything() {
    assert!(check_access(&file(0o000), &Caller::root(), RW).is_ok());
    assert!(check_access(&dir(0o000), &Caller::root(), RW).is_ok());
}

#[test]
fn root_executes_only_when_an_execute_bit_is_set_or_a_directory() {
    let root = Caller::root();
    assert_eq!(
        errno(check_access(&file(0o666), &root, Access::EXECUTE)),
        libc::EACCES
    );
    assert!(check_access(&file(0o001), &root, Access::EXECUTE).is_ok());
    assert!(check_access(&dir(0o000), &root, Access::EXECUTE).is_ok());
}

#[test]
fn sticky_directory_lets_only_owners_and_root_delete() {
    let sticky = dir(0o1777);
    let mut victim = file(0o644);
    victim.uid = 4000;
    let victim_owner = user(4000, 1, &[]);
    assert!(check_sticky_delete(&sticky, &victim, &victim_owner).is_ok());
    assert!(check_sticky_delete(&sticky, &victim, &owner()).is_ok());
    assert!(check_sticky_delete(&sticky, &victim, &Caller::root()).is_ok());
    assert_eq!(
        errno(check_sticky_delete(&sticky, &victim, &stranger())),
        libc::EPERM
    );
    // The group owning the directory does not count.
    assert_eq!(
        errno(check_sticky_delete(&sticky, &victim, &member())),
        libc::EPERM
    );
}

#[test]
fn non_sticky_directory_does_not_restrict_delete() {
    assert!(check_sticky_delete(&dir(0o777), &file(0o644), &stranger()).is_ok());
}

#[test]
fn new_inode_takes_the_callers_uid_and_gid() {
    let caller = user(7, 8, &[]);
    assert_eq!(
        new_inode_owner(&dir(0o755), &caller, 0o644, false),
        (7, 8, 0o644)
    );
    assert_eq!(
        new_inode_owner(&dir(0o755), &caller, 0o2755, true),
        (7, 8, 0o2755)
    );
}

#[test]
fn setgid_directory_gives_its_group_and_setgid_to_subdirectories() {
    let parent = dir(0o2775);
    let caller = user(7, 8, &[GROUP]);
    assert_eq!(
        new_inode_owner(&parent, &caller, 0o755, true),
        (7, GROUP, 0o2755)
    );
    assert_eq!(
        new_inode_owner(&parent, &caller, 0o644, false),
        (7, GROUP, 0o644)
    );
}

#[test]
fn new_setgid_file_outside_the_callers_groups_loses_setgid() {
    let parent = dir(0o2777);
    let outsider = user(7, 8, &[]);
    assert_eq!(
        new_inode_owner(&parent, &outsider, 0o2755, false),
        (7, GROUP, 0o755)
    );
    // Without group execute it is a locking mark and stays.
    assert_eq!(
        new_inode_owner(&parent, &outsider, 0o2644, false),
        (7, GROUP, 0o2644)
    );
    let insider = user(7, 8, &[GROUP]);
    assert_eq!(
        new_inode_owner(&parent, &insider, 0o2755, false),
        (7, GROUP, 0o2755)
    );
    let root = Caller::root();
    assert_eq!(
        new_inode_owner(&parent, &root, 0o2755, false),
        (0, GROUP, 0o2755)
    );
}

fn chmod(mode: u32) -> SetAttrRequest {
    SetAttrRequest {
        mode: Some(mode),
        ..SetAttrRequest::default()
    }
}

fn chown(uid: Option<u32>, gid: Option<u32>) -> SetAttrRequest {
    SetAttrRequest {
        uid,
        gid,
        ..SetAttrRequest::default()
    }
}

#[test]
fn chmod_by_owner_or_root_only() {
    let record = file(0o644);
    assert_eq!(
        check_setattr(&record, &owner(), &chmod(0o600)),
        Ok(Adjusted { mode: Some(0o600) })
    );
    assert_eq!(
        check_setattr(&record, &Caller::root(), &chmod(0o7777)),
        Ok(Adjusted { mode: Some(0o7777) })
    );
    assert_eq!(
        errno(check_setattr(&record, &member(), &chmod(0o600))),
        libc::EPERM
    );
    assert_eq!(
        errno(check_setattr(&file(0o777), &stranger(), &chmod(0o600))),
        libc::EPERM
    );
}

#[test]
fn chmod_by_owner_outside_the_group_drops_setgid() {
    // owner() is not in GROUP.
    assert_eq!(
        check_setattr(&file(0o644), &owner(), &chmod(0o2755)),
        Ok(Adjusted { mode: Some(0o755) })
    );
    assert_eq!(
        check_setattr(&dir(0o755), &owner(), &chmod(0o2755)),
        Ok(Adjusted { mode: Some(0o755) })
    );
    let owner_in_group = user(OWNER, 1, &[GROUP]);
    assert_eq!(
        check_setattr(&file(0o644), &owner_in_group, &chmod(0o6755)),
        Ok(Adjusted { mode: Some(0o6755) })
    );
}

#[test]
fn chown_of_the_uid_needs_root() {
    let record = file(0o644);
    assert_eq!(
        errno(check_setattr(&record, &owner(), &chown(Some(5), None))),
        libc::EPERM
    );
    assert_eq!(
        errno(check_setattr(
            &record,
            &stranger(),
            &chown(Some(OWNER), None)
        )),
        libc::EPERM
    );
    assert!(check_setattr(&record, &owner(), &chown(Some(OWNER), None)).is_ok());
    assert!(check_setattr(&record, &Caller::root(), &chown(Some(5), Some(6))).is_ok());
}

#[test]
fn chown_of_the_gid_by_the_owner_only_to_their_groups() {
    let record = file(0o644);
    let owner = user(OWNER, 500, &[501]);
    assert!(check_setattr(&record, &owner, &chown(None, Some(501))).is_ok());
    assert!(check_setattr(&record, &owner, &chown(None, Some(500))).is_ok());
    // Its current group, even one the owner is not in.
    assert!(check_setattr(&record, &owner, &chown(None, Some(GROUP))).is_ok());
    assert_eq!(
        errno(check_setattr(&record, &owner, &chown(None, Some(999)))),
        libc::EPERM
    );
    // A member of the target group who is not the owner may not.
    assert_eq!(
        errno(check_setattr(&record, &member(), &chown(None, Some(GROUP)))),
        libc::EPERM
    );
}

#[test]
fn chown_with_nothing_to_change_needs_no_permission() {
    assert_eq!(
        check_setattr(&file(0o6755), &stranger(), &chown(None, None)),
        Ok(Adjusted { mode: None })
    );
}

#[test]
fn chown_of_a_file_clears_setuid_and_executable_setgid_even_by_root() {
    let root = Caller::root();
    assert_eq!(
        check_setattr(&file(0o6555), &root, &chown(Some(5), Some(6))),
        Ok(Adjusted { mode: Some(0o555) })
    );
    let owner = user(OWNER, 500, &[501]);
    assert_eq!(
        check_setattr(&file(0o6555), &owner, &chown(None, Some(501))),
        Ok(Adjusted { mode: Some(0o555) })
    );
    // Setgid without group execute stays; nothing to clear is None.
    assert_eq!(
        check_setattr(&file(0o6644), &root, &chown(Some(5), None)),
        Ok(Adjusted { mode: Some(0o2644) })
    );
    assert_eq!(
        check_setattr(&file(0o644), &root, &chown(Some(5), None)),
        Ok(Adjusted { mode: None })
    );
}

#[test]
fn chown_of_a_directory_keeps_its_setid_bits() {
    assert_eq!(
        check_setattr(&dir(0o6775), &Caller::root(), &chown(Some(5), Some(6))),
        Ok(Adjusted { mode: None })
    );
}

#[test]
fn chmod_and_chown_together_clear_bits_from_the_new_mode() {
    let request = SetAttrRequest {
        mode: Some(0o6755),
        uid: Some(5),
        ..SetAttrRequest::default()
    };
    assert_eq!(
        check_setattr(&file(0o644), &Caller::root(), &request),
        Ok(Adjusted { mode: Some(0o755) })
    );
}

fn utimes(atime: Option<TimeChange>, mtime: Option<TimeChange>) -> SetAttrRequest {
    SetAttrRequest {
        atime,
        mtime,
        ..SetAttrRequest::default()
    }
}

#[test]
fn explicit_times_need_owner_or_root() {
    let record = file(0o666);
    let explicit = utimes(Some(TimeChange::Explicit), Some(TimeChange::Explicit));
    assert!(check_setattr(&record, &owner(), &explicit).is_ok());
    assert!(check_setattr(&record, &Caller::root(), &explicit).is_ok());
    // Write access is not enough.
    assert_eq!(
        errno(check_setattr(&record, &stranger(), &explicit)),
        libc::EPERM
    );
    let mixed = utimes(Some(TimeChange::Now), Some(TimeChange::Explicit));
    assert_eq!(
        errno(check_setattr(&record, &stranger(), &mixed)),
        libc::EPERM
    );
}

#[test]
fn times_to_now_need_owner_root_or_write_access() {
    let now = utimes(Some(TimeChange::Now), Some(TimeChange::Now));
    assert!(check_setattr(&file(0o000), &owner(), &now).is_ok());
    assert!(check_setattr(&file(0o000), &Caller::root(), &now).is_ok());
    assert!(check_setattr(&file(0o602), &stranger(), &now).is_ok());
    assert_eq!(
        errno(check_setattr(&file(0o644), &stranger(), &now)),
        libc::EACCES
    );
}

#[test]
fn truncate_needs_write_access_unless_through_a_writable_handle() {
    let truncate = SetAttrRequest {
        size: Some(0),
        ..SetAttrRequest::default()
    };
    assert_eq!(
        errno(check_setattr(&file(0o644), &stranger(), &truncate)),
        libc::EACCES
    );
    assert_eq!(
        errno(check_setattr(&file(0o444), &owner(), &truncate)),
        libc::EACCES
    );
    assert!(check_setattr(&file(0o646), &stranger(), &truncate).is_ok());
    assert!(check_setattr(&file(0o000), &Caller::root(), &truncate).is_ok());
    let through_handle = SetAttrRequest {
        through_writable_handle: true,
        ..truncate
    };
    assert!(check_setattr(&file(0o444), &owner(), &through_handle).is_ok());
}

#[test]
fn write_by_non_root_kills_setuid_and_executable_setgid() {
    assert_eq!(kill_suid_on_write(&file(0o4755), &stranger()), Some(0o755));
    assert_eq!(kill_suid_on_write(&file(0o6755), &owner()), Some(0o755));
    assert_eq!(kill_suid_on_write(&file(0o2755), &member()), Some(0o755));
    // Setgid without group execute is a locking mark: it stays for a
    // member of the file's group, and goes for anyone else.
    assert_eq!(kill_suid_on_write(&file(0o2644), &member()), None);
    assert_eq!(kill_suid_on_write(&file(0o6644), &member()), Some(0o2644));
    assert_eq!(kill_suid_on_write(&file(0o2644), &owner()), Some(0o644));
    assert_eq!(kill_suid_on_write(&file(0o6644), &stranger()), Some(0o644));
    assert_eq!(kill_suid_on_write(&file(0o755), &owner()), None);
}

#[test]
fn write_by_root_or_to_a_non_regular_file_kills_nothing() {
    assert_eq!(kill_suid_on_write(&file(0o6755), &Caller::root()), None);
    assert_eq!(kill_suid_on_write(&dir(0o6755), &owner()), None);
}

#[test]
fn a_writer_may_remove_the_file_capability_and_nothing_else_of_security() {
    let writable = file(0o666);
    let capability = FILE_CAPABILITY_XATTR;
    assert!(check_xattr_removal(&writable, None, &stranger(), capability).is_ok());
    assert!(check_xattr_removal(&file(0o644), None, &stranger(), capability).is_err());
    assert!(check_xattr_removal(&writable, None, &stranger(), b"security.selinux").is_err());
    assert!(check_xattr_removal(&dir(0o777), None, &stranger(), capability).is_err());
    assert!(check_xattr_removal(&file(0o600), None, &Caller::root(), capability).is_ok());
}

#[test]
fn security_attributes_are_readable_by_all_and_writable_by_root() {
    let record = file(0o000);
    assert!(check_xattr_access(&record, &stranger(), b"security.selinux", false).is_ok());
    assert_eq!(
        errno(check_xattr_access(
            &record,
            &owner(),
            b"security.selinux",
            true
        )),
        libc::EPERM
    );
    assert!(check_xattr_access(&record, &Caller::root(), b"security.selinux", true).is_ok());
}

#[test]
fn trusted_attributes_are_roots_and_hidden_from_others() {
    let record = file(0o666);
    assert_eq!(
        errno(check_xattr_access(&record, &owner(), b"trusted.t", true)),
        libc::EPERM
    );
    assert_eq!(
        errno(check_xattr_access(&record, &owner(), b"trusted.t", false)),
        libc::ENODATA
    );
    assert!(check_xattr_access(&file(0o000), &Caller::root(), b"trusted.t", true).is_ok());
    assert!(!xattr_listable(&owner(), b"trusted.t"));
    assert!(xattr_listable(&Caller::root(), b"trusted.t"));
    assert!(xattr_listable(&stranger(), b"user.u"));
    assert!(xattr_listable(&stranger(), b"security.s"));
}

#[test]
fn user_attributes_follow_the_mode_bits() {
    let record = file(0o640);
    assert!(check_xattr_access(&record, &owner(), b"user.u", true).is_ok());
    assert!(check_xattr_access(&record, &member(), b"user.u", false).is_ok());
    assert_eq!(
        errno(check_xattr_access(&record, &member(), b"user.u", true)),
        libc::EACCES
    );
    assert_eq!(
        errno(check_xattr_access(&record, &stranger(), b"user.u", false)),
        libc::EACCES
    );
    assert!(check_xattr_access(&file(0o000), &Caller::root(), b"user.u", true).is_ok());
}

#[test]
fn user_attributes_elsewhere_than_files_and_directories_are_refused() {
    let link = inode(FileType::Symlink, 0o777);
    assert_eq!(
        errno(check_xattr_access(&link, &owner(), b"user.u", true)),
        libc::EPERM
    );
    assert_eq!(
        errno(check_xattr_access(&link, &Caller::root(), b"user.u", false)),
        libc::ENODATA
    );
    let fifo = inode(FileType::Fifo, 0o666);
    assert_eq!(
        errno(check_xattr_access(&fifo, &stranger(), b"user.u", true)),
        libc::EPERM
    );
}

#[test]
fn user_attributes_of_a_sticky_directory_are_written_by_its_owner_or_root() {
    let sticky = dir(0o1777);
    assert_eq!(
        errno(check_xattr_access(&sticky, &stranger(), b"user.u", true)),
        libc::EPERM
    );
    assert!(check_xattr_access(&sticky, &stranger(), b"user.u", false).is_ok());
    assert!(check_xattr_access(&sticky, &owner(), b"user.u", true).is_ok());
    assert!(check_xattr_access(&sticky, &Caller::root(), b"user.u", true).is_ok());
    assert!(check_xattr_access(&dir(0o777), &stranger(), b"user.u", true).is_ok());
}

#[test]
fn errors_map_to_their_errno() {
    assert_eq!(PermissionError::Denied("x").errno(), libc::EACCES);
    assert_eq!(PermissionError::NotPermitted("x").errno(), libc::EPERM);
    assert_eq!(PermissionError::Hidden("x").errno(), libc::ENODATA);
}
