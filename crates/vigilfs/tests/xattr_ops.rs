//! Extended attributes: each operation's success and error cases, the
//! namespace and size rules, ctime, a remount, many attributes on one
//! inode, `delete_all_xattrs`, and a random sequence of operations against
//! an in-memory model.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use vigilfs::btree::TreeId;
use vigilfs::device::{BlockDevice, MemoryDevice, SectorSize};
use vigilfs::format::Superblock;
use vigilfs::fsck::fsck;
use vigilfs::inode::{
    delete_all_xattrs, InodeRecord, Namespace, Timestamp, XattrError, XattrFlags, Xattrs, ROOT_INO,
};
use vigilfs::metadata::Metadata;
use vigilfs::mkfs::{make_filesystem, MkfsOptions};

const ROOT: u64 = ROOT_INO;
const UPSERT: XattrFlags = XattrFlags {
    create: false,
    replace: false,
};
const CREATE: XattrFlags = XattrFlags {
    create: true,
    replace: false,
};
const REPLACE: XattrFlags = XattrFlags {
    create: false,
    replace: true,
};

fn fresh() -> (Arc<dyn BlockDevice>, Superblock, Arc<Metadata>) {
    let device: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(32 << 20, SectorSize::Bytes512));
    let superblock = make_filesystem(device.clone(), &MkfsOptions::default()).expect("mkfs");
    let metadata = Arc::new(Metadata::open_default(device.clone(), &superblock).expect("open"));
    (device, superblock, metadata)
}

/// A fresh filesystem with one regular file; its inode number.
fn with_file() -> (Arc<dyn BlockDevice>, Superblock, Arc<Metadata>, u64) {
    let (device, superblock, metadata) = fresh();
    let (file, _) = Namespace::new(metadata.clone())
        .create(ROOT, b"file", 0o644, 1000, 100)
        .unwrap();
    (device, superblock, metadata, file)
}

/// Writes everything out and asserts fsck finds nothing wrong.
fn assert_fsck_clean(device: &Arc<dyn BlockDevice>, metadata: &Metadata) {
    metadata.trees.sync().expect("sync");
    metadata.journal.flush().expect("flush");
    let report = fsck(device.clone(), &mut |_| {}).expect("fsck");
    assert!(report.is_clean(), "fsck: {:#?}", report.problems);
}

/// Writes everything out and opens the metadata again, as a remount does.
fn remounted(
    device: &Arc<dyn BlockDevice>,
    superblock: &Superblock,
    metadata: Arc<Metadata>,
) -> Arc<Metadata> {
    metadata.trees.sync().unwrap();
    metadata.journal.flush().unwrap();
    drop(metadata);
    Arc::new(Metadata::open_default(device.clone(), superblock).unwrap())
}

fn errno<T: std::fmt::Debug>(result: Result<T, XattrError>) -> i32 {
    result.expect_err("expected an error").errno()
}

fn names(list: &[&[u8]]) -> Vec<Vec<u8>> {
    list.iter().map(|name| name.to_vec()).collect()
}

/// A timestamp as an ordered pair.
fn key(time: Timestamp) -> (i64, u32) {
    (time.seconds, time.nanoseconds)
}

fn committed_xattr_keys(metadata: &Metadata) -> usize {
    metadata
        .trees
        .scan(TreeId::Xattrs, &[], None, usize::MAX)
        .unwrap()
        .len()
}

#[test]
fn set_get_list_remove_roundtrip() {
    let (device, _, metadata, file) = with_file();
    let xattrs = Xattrs::new(metadata.clone());
    assert!(xattrs.list(file).unwrap().is_empty());
    xattrs.set(file, b"user.b", b"two", UPSERT).unwrap();
    xattrs.set(file, b"user.a", b"one", UPSERT).unwrap();
    xattrs.set(file, b"user.empty", b"", UPSERT).unwrap();
    assert_eq!(xattrs.get(file, b"user.a").unwrap(), b"one");
    assert_eq!(xattrs.get(file, b"user.b").unwrap(), b"two");
    assert_eq!(xattrs.get(file, b"user.empty").unwrap(), b"");
    assert_eq!(
        xattrs.list(file).unwrap(),
        names(&[b"user.a", b"user.b", b"user.empty"])
    );
    xattrs.set(file, b"user.a", b"uno", UPSERT).unwrap();
    assert_eq!(xattrs.get(file, b"user.a").unwrap(), b"uno");
    xattrs.remove(file, b"user.a").unwrap();
    assert_eq!(errno(xattrs.get(file, b"user.a")), libc::ENODATA);
    assert_eq!(
        xattrs.list(file).unwrap(),
        names(&[b"user.b", b"user.empty"])
    );
    assert_fsck_clean(&device, &metadata);
}

#[test]
fn attributes_of_one_inode_are_invisible_to_another() {
    let (_, _, metadata, file) = with_file();
    let (other, _) = Namespace::new(metadata.clone())
        .mkdir(ROOT, b"dir", 0o755, 0, 0)
        .unwrap();
    let xattrs = Xattrs::new(metadata);
    xattrs.set(file, b"user.x", b"file", UPSERT).unwrap();
    xattrs.set(other, b"user.x", b"dir", UPSERT).unwrap();
    assert_eq!(xattrs.get(file, b"user.x").unwrap(), b"file");
    assert_eq!(xattrs.get(other, b"user.x").unwrap(), b"dir");
    assert!(xattrs.list(ROOT).unwrap().is_empty());
}

#[test]
fn create_flag_on_an_existing_attribute_is_eexist_and_keeps_the_value() {
    let (_, _, metadata, file) = with_file();
    let xattrs = Xattrs::new(metadata);
    xattrs.set(file, b"user.k", b"first", CREATE).unwrap();
    assert_eq!(
        errno(xattrs.set(file, b"user.k", b"second", CREATE)),
        libc::EEXIST
    );
    assert_eq!(xattrs.get(file, b"user.k").unwrap(), b"first");
}

#[test]
fn replace_flag_on_a_missing_attribute_is_enodata_and_creates_nothing() {
    let (_, _, metadata, file) = with_file();
    let xattrs = Xattrs::new(metadata);
    assert_eq!(
        errno(xattrs.set(file, b"user.k", b"v", REPLACE)),
        libc::ENODATA
    );
    assert!(xattrs.list(file).unwrap().is_empty());
    xattrs.set(file, b"user.k", b"v", UPSERT).unwrap();
    xattrs.set(file, b"user.k", b"w", REPLACE).unwrap();
    assert_eq!(xattrs.get(file, b"user.k").unwrap(), b"w");
}

#[test]
fn create_and_replace_together_is_einval() {
    let (_, _, metadata, file) = with_file();
    let xattrs = Xattrs::new(metadata);
    let both = XattrFlags {
        create: true,
        replace: true,
    };
    assert_eq!(errno(xattrs.set(file, b"user.k", b"v", both)), libc::EINVAL);
    assert!(xattrs.list(file).unwrap().is_empty());
}

#[test]
fn get_and_remove_of_a_missing_attribute_are_enodata() {
    let (_, _, metadata, file) = with_file();
    let xattrs = Xattrs::new(metadata);
    assert_eq!(errno(xattrs.get(file, b"user.none")), libc::ENODATA);
    assert_eq!(errno(xattrs.remove(file, b"user.none")), libc::ENODATA);
}

#[test]
fn a_missing_inode_is_enoent() {
    let (_, _, metadata, file) = with_file();
    let xattrs = Xattrs::new(metadata);
    let missing = file + 100;
    assert_eq!(errno(xattrs.get(missing, b"user.a")), libc::ENOENT);
    assert_eq!(
        errno(xattrs.set(missing, b"user.a", b"v", UPSERT)),
        libc::ENOENT
    );
    assert_eq!(errno(xattrs.list(missing)), libc::ENOENT);
    assert_eq!(errno(xattrs.remove(missing, b"user.a")), libc::ENOENT);
}

#[test]
fn user_trusted_and_security_namespaces_work() {
    let (_, _, metadata, file) = with_file();
    let xattrs = Xattrs::new(metadata);
    for name in [&b"user.u"[..], b"trusted.t", b"security.selinux"] {
        xattrs.set(file, name, name, CREATE).unwrap();
        assert_eq!(xattrs.get(file, name).unwrap(), name);
    }
    assert_eq!(
        xattrs.list(file).unwrap(),
        names(&[b"security.selinux", b"trusted.t", b"user.u"])
    );
}

#[test]
fn unknown_namespaces_and_system_names_are_eopnotsupp() {
    let (_, _, metadata, file) = with_file();
    let xattrs = Xattrs::new(metadata);
    for name in [&b"foo.bar"[..], b"user", b"User.x", b"system.other"] {
        assert_eq!(
            errno(xattrs.set(file, name, b"v", UPSERT)),
            libc::EOPNOTSUPP,
            "{}",
            String::from_utf8_lossy(name)
        );
        assert_eq!(errno(xattrs.get(file, name)), libc::EOPNOTSUPP);
        assert_eq!(errno(xattrs.remove(file, name)), libc::EOPNOTSUPP);
    }
    // The POSIX ACL names are supported, with values that must be ACLs.
    for name in [&b"system.posix_acl_access"[..], b"system.posix_acl_default"] {
        assert_eq!(errno(xattrs.set(file, name, b"v", UPSERT)), libc::EINVAL);
        assert_eq!(errno(xattrs.get(file, name)), libc::ENODATA);
    }
    assert!(xattrs.list(file).unwrap().is_empty());
}

#[test]
fn an_empty_suffix_is_einval_and_an_empty_name_erange() {
    let (_, _, metadata, file) = with_file();
    let xattrs = Xattrs::new(metadata);
    for name in [&b"user."[..], b"trusted.", b"security."] {
        assert_eq!(errno(xattrs.set(file, name, b"v", UPSERT)), libc::EINVAL);
    }
    assert_eq!(errno(xattrs.set(file, b"", b"v", UPSERT)), libc::ERANGE);
    assert_eq!(
        errno(xattrs.set(file, b"user.a\0b", b"v", UPSERT)),
        libc::EINVAL
    );
}

/// Every attribute set stays listable: a new name that would make the
/// list of names (each with its NUL) longer than the 65,536 bytes
/// `listxattr` returns is `ENOSPC`, while the attributes already named can
/// still be replaced and removed (review 54: 6,000 attributes of an
/// unprivileged user, then listxattr failed with E2BIG and `cp -a`
/// dropped them all).
#[test]
fn a_new_name_past_what_listxattr_returns_is_enospc() {
    let (_device, _superblock, metadata, file) = with_file();
    let xattrs = Xattrs::new(metadata);
    // "user.k" + 8 digits and a NUL: 15 bytes each.
    let name = |index: usize| format!("user.k{index:08}").into_bytes();
    let fitting = 65536 / 15;
    for index in 0..fitting {
        xattrs.set(file, &name(index), b"1", UPSERT).unwrap();
    }
    let listed: usize = xattrs
        .list(file)
        .unwrap()
        .iter()
        .map(|name| name.len() + 1)
        .sum();
    assert_eq!(listed, fitting * 15);
    assert_eq!(
        errno(xattrs.set(file, &name(fitting), b"1", UPSERT)),
        libc::ENOSPC
    );
    // An access ACL the mode says all of is a chmod, stored nowhere: it
    // takes no place in the list (review 55: `cp -a` failed on ENOSPC).
    // Linux's value: version 2, then (tag, perm, id) for the owner, the
    // owning group and others.
    let mut mode_only = 2u32.to_le_bytes().to_vec();
    for (tag, perm) in [(1u16, 6u16), (4, 4), (32, 0)] {
        mode_only.extend_from_slice(&tag.to_le_bytes());
        mode_only.extend_from_slice(&perm.to_le_bytes());
        mode_only.extend_from_slice(&u32::MAX.to_le_bytes());
    }
    xattrs
        .set(file, b"system.posix_acl_access", &mode_only, UPSERT)
        .unwrap();
    xattrs.set(file, &name(0), b"replaced", UPSERT).unwrap();
    xattrs.remove(file, &name(1)).unwrap();
    xattrs.set(file, &name(fitting), b"1", CREATE).unwrap();
    assert_eq!(xattrs.list(file).unwrap().len(), fitting);
}

#[test]
fn user_attributes_on_a_symlink_are_eperm_to_write_and_enodata_to_read() {
    let (_, _, metadata, _) = with_file();
    let namespace = Namespace::new(metadata.clone());
    let (link, _) = namespace.symlink(ROOT, b"link", b"file", 0, 0).unwrap();
    let (fifo, _) = namespace.mknod(ROOT, b"fifo", 0o010644, 0, 0, 0).unwrap();
    let xattrs = Xattrs::new(metadata);
    for ino in [link, fifo] {
        let before = namespace.getattr(ino).unwrap();
        assert_eq!(errno(xattrs.set(ino, b"user.a", b"v", UPSERT)), libc::EPERM);
        assert_eq!(errno(xattrs.remove(ino, b"user.a")), libc::EPERM);
        assert_eq!(errno(xattrs.get(ino, b"user.a")), libc::ENODATA);
        assert_eq!(namespace.getattr(ino).unwrap(), before);
    }
    // Other namespaces are allowed on them.
    xattrs.set(link, b"trusted.a", b"v", UPSERT).unwrap();
    assert_eq!(xattrs.get(link, b"trusted.a").unwrap(), b"v");
    // So are user.* on directories.
    xattrs.set(ROOT, b"user.dir", b"d", UPSERT).unwrap();
    assert_eq!(xattrs.get(ROOT, b"user.dir").unwrap(), b"d");
}

#[test]
fn names_longer_than_linux_max_are_erange() {
    let (_, _, metadata, file) = with_file();
    let xattrs = Xattrs::new(metadata);
    assert_eq!(xattrs.max_name_len(), 255);
    let mut longest = b"user.".to_vec();
    longest.resize(255, b'n');
    xattrs.set(file, &longest, b"v", UPSERT).unwrap();
    assert_eq!(xattrs.get(file, &longest).unwrap(), b"v");
    let mut too_long = longest.clone();
    too_long.push(b'n');
    assert_eq!(
        errno(xattrs.set(file, &too_long, b"v", UPSERT)),
        libc::ERANGE
    );
    assert_eq!(errno(xattrs.get(file, &too_long)), libc::ERANGE);
    assert_eq!(errno(xattrs.remove(file, &too_long)), libc::ERANGE);
    assert_eq!(xattrs.list(file).unwrap(), vec![longest]);
}

/// A user name of `length` bytes ending in `last`.
fn long_name(length: usize, last: u8) -> Vec<u8> {
    let mut name = b"user.".to_vec();
    name.resize(length - 1, b'n');
    name.push(last);
    name
}

/// Review 31: names over 120 bytes were ERANGE, though Linux takes 255.
/// Names past what a key holds (119 to 255 bytes, some sharing all but
/// their last byte) take values inline and in pieces, list once in byte
/// order among short names, replace, remove, survive a remount, and go
/// with their inode; fsck is clean.
#[test]
fn names_of_119_to_255_bytes_hold_any_value_and_survive_a_remount() {
    let (device, superblock, metadata, file) = with_file();
    let pattern = |length: usize, seed: u8| -> Vec<u8> {
        (0..length)
            .map(|i| (i % 251) as u8 ^ seed)
            .collect::<Vec<u8>>()
    };
    let lengths = [118, 119, 120, 121, 200, 254, 255];
    let mut expected = Vec::new();
    {
        let xattrs = Xattrs::new(metadata.clone());
        for (index, &length) in lengths.iter().enumerate() {
            for last in [b'a', b'b'] {
                let name = long_name(length, last);
                let size = [0, 10, 900, 5000, 65536][(index + usize::from(last)) % 5];
                xattrs
                    .set(file, &name, &pattern(size, last), CREATE)
                    .unwrap();
                assert_eq!(errno(xattrs.set(file, &name, b"x", CREATE)), libc::EEXIST);
                expected.push((name, pattern(size, last)));
            }
        }
        xattrs.set(file, b"user.a", b"short", UPSERT).unwrap();
        expected.push((b"user.a".to_vec(), b"short".to_vec()));
        // Replaced by small and by large, removed.
        let name = long_name(200, b'a');
        xattrs.set(file, &name, b"small", REPLACE).unwrap();
        assert_eq!(xattrs.get(file, &name).unwrap(), b"small");
        xattrs
            .set(file, &name, &pattern(65536, 9), REPLACE)
            .unwrap();
        expected.retain(|(stored, _)| *stored != name);
        expected.push((name, pattern(65536, 9)));
        let gone = long_name(121, b'b');
        xattrs.remove(file, &gone).unwrap();
        assert_eq!(errno(xattrs.get(file, &gone)), libc::ENODATA);
        assert_eq!(errno(xattrs.remove(file, &gone)), libc::ENODATA);
        assert_eq!(errno(xattrs.set(file, &gone, b"x", REPLACE)), libc::ENODATA);
        expected.retain(|(stored, _)| *stored != gone);
        expected.sort();
        let listed: Vec<Vec<u8>> = expected.iter().map(|(name, _)| name.clone()).collect();
        assert_eq!(xattrs.list(file).unwrap(), listed);
        // Another inode sees none of them.
        assert!(xattrs.list(ROOT).unwrap().is_empty());
        assert_eq!(
            errno(xattrs.get(ROOT, &long_name(200, b'a'))),
            libc::ENODATA
        );
    }
    assert_fsck_clean(&device, &metadata);
    let metadata = remounted(&device, &superblock, metadata);
    let xattrs = Xattrs::new(metadata.clone());
    let listed: Vec<Vec<u8>> = expected.iter().map(|(name, _)| name.clone()).collect();
    assert_eq!(xattrs.list(file).unwrap(), listed);
    for (name, value) in &expected {
        assert_eq!(&xattrs.get(file, name).unwrap(), value, "{}", name.len());
    }
    let mut transaction = metadata.trees.transaction();
    delete_all_xattrs(&mut transaction, file).unwrap();
    transaction.commit().unwrap();
    assert_eq!(committed_xattr_keys(&metadata), 0);
    assert_fsck_clean(&device, &metadata);
}

/// An older vigilfs kept names of up to 120 bytes under their own bytes
/// (inline values only): such an attribute still reads, lists once, and
/// moves to its digest record when set again; removal finds it too.
#[test]
fn a_name_an_older_vigilfs_kept_under_its_own_bytes_still_works() {
    let (device, _, metadata, file) = with_file();
    let old_record = |name: &[u8], value: &[u8]| {
        let mut key = file.to_be_bytes().to_vec();
        key.extend_from_slice(name);
        let mut record = vec![1];
        record.extend_from_slice(value);
        let mut transaction = metadata.trees.transaction();
        transaction.put(TreeId::Xattrs, &key, &record).unwrap();
        transaction.commit().unwrap();
    };
    let moved = long_name(120, b'm');
    let removed = long_name(119, b'r');
    old_record(&moved, b"old");
    old_record(&removed, b"also old");
    let xattrs = Xattrs::new(metadata.clone());
    assert_eq!(xattrs.get(file, &moved).unwrap(), b"old");
    assert_eq!(
        xattrs.list(file).unwrap(),
        vec![moved.clone(), removed.clone()]
    );
    assert_eq!(errno(xattrs.set(file, &moved, b"x", CREATE)), libc::EEXIST);
    xattrs.set(file, &moved, &vec![3; 5000], REPLACE).unwrap();
    assert_eq!(xattrs.get(file, &moved).unwrap(), vec![3; 5000]);
    assert_eq!(
        xattrs.list(file).unwrap(),
        vec![moved.clone(), removed.clone()]
    );
    xattrs.remove(file, &removed).unwrap();
    assert_eq!(errno(xattrs.get(file, &removed)), libc::ENODATA);
    assert_eq!(xattrs.list(file).unwrap(), vec![moved]);
    assert_fsck_clean(&device, &metadata);
}

#[test]
fn values_larger_than_the_limit_are_e2big() {
    let (device, _, metadata, file) = with_file();
    let limits = metadata.trees.limits();
    let xattrs = Xattrs::new(metadata.clone());
    assert_eq!(xattrs.max_value_len(), 65536);
    assert_eq!(xattrs.max_inline_len(), (limits.max_value - 1).min(65536));
    let largest = vec![0xa5; xattrs.max_value_len()];
    xattrs.set(file, b"user.big", &largest, UPSERT).unwrap();
    assert_eq!(xattrs.get(file, b"user.big").unwrap(), largest);
    let too_large = vec![0x5a; xattrs.max_value_len() + 1];
    assert_eq!(
        errno(xattrs.set(file, b"user.big", &too_large, UPSERT)),
        libc::E2BIG
    );
    assert_eq!(
        errno(xattrs.set(file, b"user.big", &vec![0; 65537], UPSERT)),
        libc::E2BIG
    );
    assert_eq!(xattrs.get(file, b"user.big").unwrap(), largest);
    assert_fsck_clean(&device, &metadata);
}

/// generic/020, 486: values past one b-tree value, up to 64 KiB, are
/// kept in pieces: they read back whole, replace and are replaced by small
/// ones, list once, go with remove, survive a remount, and fsck is clean.
#[test]
fn values_up_to_64_kib_are_kept_in_pieces() {
    let (device, superblock, metadata, file) = with_file();
    let pattern = |length: usize| -> Vec<u8> { (0..length).map(|i| (i % 251) as u8).collect() };
    let inline = {
        let xattrs = Xattrs::new(metadata.clone());
        let inline = xattrs.max_inline_len();
        for length in [inline, inline + 1, 3 * inline + 7, 65536] {
            xattrs
                .set(file, b"user.big", &pattern(length), UPSERT)
                .unwrap();
            assert_eq!(
                xattrs.get(file, b"user.big").unwrap(),
                pattern(length),
                "{length}"
            );
        }
        xattrs.set(file, b"user.a", b"before", UPSERT).unwrap();
        xattrs
            .set(file, b"user.big2", &pattern(5000), UPSERT)
            .unwrap();
        assert_eq!(
            xattrs.list(file).unwrap(),
            vec![
                b"user.a".to_vec(),
                b"user.big".to_vec(),
                b"user.big2".to_vec()
            ]
        );
        // Large replaced by small and back; remove takes the pieces.
        xattrs.set(file, b"user.big2", b"small", UPSERT).unwrap();
        assert_eq!(xattrs.get(file, b"user.big2").unwrap(), b"small");
        xattrs
            .set(file, b"user.big2", &pattern(3000), UPSERT)
            .unwrap();
        xattrs.remove(file, b"user.big2").unwrap();
        assert_eq!(errno(xattrs.get(file, b"user.big2")), libc::ENODATA);
        inline
    };
    assert_fsck_clean(&device, &metadata);
    let metadata = remounted(&device, &superblock, metadata);
    let xattrs = Xattrs::new(metadata.clone());
    assert_eq!(xattrs.get(file, b"user.big").unwrap(), pattern(65536));
    assert_eq!(xattrs.get(file, b"user.a").unwrap(), b"before");
    assert_eq!(xattrs.list(file).unwrap().len(), 2);
    assert!(inline < 65536);
    assert_fsck_clean(&device, &metadata);
}

#[test]
fn values_survive_a_remount() {
    let (device, superblock, metadata, file) = with_file();
    let large = vec![7u8; 900];
    {
        let xattrs = Xattrs::new(metadata.clone());
        xattrs.set(file, b"user.small", b"s", UPSERT).unwrap();
        xattrs.set(file, b"security.large", &large, UPSERT).unwrap();
        xattrs.set(file, b"trusted.gone", b"g", UPSERT).unwrap();
        xattrs.remove(file, b"trusted.gone").unwrap();
    }
    let ctime = Namespace::new(metadata.clone())
        .getattr(file)
        .unwrap()
        .ctime;
    let metadata = remounted(&device, &superblock, metadata);
    let xattrs = Xattrs::new(metadata.clone());
    assert_eq!(
        xattrs.list(file).unwrap(),
        names(&[b"security.large", b"user.small"])
    );
    assert_eq!(xattrs.get(file, b"user.small").unwrap(), b"s");
    assert_eq!(xattrs.get(file, b"security.large").unwrap(), large);
    assert_eq!(errno(xattrs.get(file, b"trusted.gone")), libc::ENODATA);
    assert_eq!(
        Namespace::new(metadata.clone())
            .getattr(file)
            .unwrap()
            .ctime,
        ctime
    );
    assert_fsck_clean(&device, &metadata);
}

#[test]
fn set_and_remove_change_ctime_and_failures_do_not() {
    let (_, _, metadata, file) = with_file();
    let namespace = Namespace::new(metadata.clone());
    let xattrs = Xattrs::new(metadata);
    let ctime = |ino| namespace.getattr(ino).unwrap().ctime;
    let pause = || std::thread::sleep(Duration::from_millis(2));

    let created = namespace.getattr(file).unwrap();
    pause();
    xattrs.set(file, b"user.a", b"1", UPSERT).unwrap();
    let after_set = namespace.getattr(file).unwrap();
    assert!(key(after_set.ctime) > key(created.ctime));
    // Only the ctime changed.
    assert_eq!(
        InodeRecord {
            ctime: created.ctime,
            ..after_set
        },
        created
    );
    pause();
    assert_eq!(
        errno(xattrs.set(file, b"user.a", b"2", CREATE)),
        libc::EEXIST
    );
    assert_eq!(errno(xattrs.remove(file, b"user.b")), libc::ENODATA);
    assert_eq!(ctime(file), after_set.ctime);
    xattrs.get(file, b"user.a").unwrap();
    xattrs.list(file).unwrap();
    assert_eq!(ctime(file), after_set.ctime);
    xattrs.remove(file, b"user.a").unwrap();
    assert!(key(ctime(file)) > key(after_set.ctime));
}

#[test]
fn five_hundred_attributes_on_one_inode_all_list() {
    let (device, _, metadata, file) = with_file();
    let xattrs = Xattrs::new(metadata.clone());
    let mut expected: Vec<Vec<u8>> = (0..500)
        .map(|index| format!("user.attribute-{index:04}").into_bytes())
        .collect();
    for (index, name) in expected.iter().enumerate() {
        xattrs
            .set(file, name, &vec![index as u8; index % 200], CREATE)
            .unwrap();
    }
    expected.sort();
    assert_eq!(xattrs.list(file).unwrap(), expected);
    assert_eq!(
        xattrs.get(file, b"user.attribute-0399").unwrap(),
        vec![(399 % 256) as u8; 399 % 200]
    );
    assert_fsck_clean(&device, &metadata);
}

#[test]
fn delete_all_in_a_transaction_removes_every_attribute_of_that_inode_only() {
    let (device, superblock, metadata, file) = with_file();
    let (neighbour, _) = Namespace::new(metadata.clone())
        .create(ROOT, b"neighbour", 0o644, 0, 0)
        .unwrap();
    assert_eq!(neighbour, file + 1);
    let xattrs = Xattrs::new(metadata.clone());
    for index in 0..300 {
        let name = format!("trusted.{index}").into_bytes();
        xattrs.set(file, &name, &[1; 64], CREATE).unwrap();
    }
    xattrs.set(neighbour, b"user.keep", b"k", CREATE).unwrap();
    xattrs.set(ROOT, b"user.keep", b"r", CREATE).unwrap();
    metadata.trees.sync().unwrap();

    let mut transaction = metadata.trees.transaction();
    delete_all_xattrs(&mut transaction, file).unwrap();
    // The transaction sees its own deletion; the committed state is intact.
    assert!(transaction
        .scan(
            TreeId::Xattrs,
            &file.to_be_bytes(),
            Some(&neighbour.to_be_bytes()),
            10
        )
        .unwrap()
        .is_empty());
    assert_eq!(xattrs.list(file).unwrap().len(), 300);
    transaction.commit().unwrap();

    assert!(xattrs.list(file).unwrap().is_empty());
    assert_eq!(xattrs.list(neighbour).unwrap(), names(&[b"user.keep"]));
    assert_eq!(xattrs.list(ROOT).unwrap(), names(&[b"user.keep"]));
    assert_eq!(committed_xattr_keys(&metadata), 2);
    assert_fsck_clean(&device, &metadata);
    drop(xattrs);
    drop(metadata);

    let metadata = Arc::new(Metadata::open_default(device.clone(), &superblock).unwrap());
    let xattrs = Xattrs::new(metadata.clone());
    assert!(xattrs.list(file).unwrap().is_empty());
    assert_eq!(xattrs.get(neighbour, b"user.keep").unwrap(), b"k");
    assert_eq!(committed_xattr_keys(&metadata), 2);
}

#[test]
fn a_stored_value_with_a_bad_version_or_no_version_byte_is_eio() {
    let (_, _, metadata, file) = with_file();
    let xattrs = Xattrs::new(metadata.clone());
    xattrs.set(file, b"user.good", b"g", CREATE).unwrap();
    let key = |name: &[u8]| [&file.to_be_bytes()[..], name].concat();
    let mut transaction = metadata.trees.transaction();
    transaction
        .put(TreeId::Xattrs, &key(b"user.future"), &[2, b'x'])
        .unwrap();
    transaction
        .put(TreeId::Xattrs, &key(b"user.empty"), &[])
        .unwrap();
    transaction.commit().unwrap();
    assert_eq!(errno(xattrs.get(file, b"user.future")), libc::EIO);
    assert_eq!(errno(xattrs.get(file, b"user.empty")), libc::EIO);
    assert_eq!(errno(xattrs.list(file)), libc::EIO);
    assert_eq!(xattrs.get(file, b"user.good").unwrap(), b"g");
    // Overwriting or removing a damaged value works: set and remove do not
    // read it.
    xattrs.set(file, b"user.future", b"now", UPSERT).unwrap();
    xattrs.remove(file, b"user.empty").unwrap();
    assert_eq!(
        xattrs.list(file).unwrap(),
        names(&[b"user.future", b"user.good"])
    );
}

/// A record whose name no set accepts (damage, as fsck says) was listed,
/// and then a program could neither get, copy nor remove it (review 38):
/// listing it is EIO, as other damaged records are.
#[test]
fn a_stored_name_no_set_accepts_makes_the_listing_eio() {
    for name in [&b"other.x"[..], b"system.foo", b"user."] {
        let (_, _, metadata, file) = with_file();
        let xattrs = Xattrs::new(metadata.clone());
        xattrs.set(file, b"user.good", b"g", CREATE).unwrap();
        let mut transaction = metadata.trees.transaction();
        transaction
            .put(
                TreeId::Xattrs,
                &[&file.to_be_bytes()[..], name].concat(),
                &[1, b'v'],
            )
            .unwrap();
        transaction.commit().unwrap();
        assert_eq!(errno(xattrs.list(file)), libc::EIO, "{name:?}");
        assert_eq!(xattrs.get(file, b"user.good").unwrap(), b"g");
    }
}

#[test]
fn delete_all_of_an_inode_without_attributes_changes_nothing() {
    let (_, _, metadata, file) = with_file();
    let xattrs = Xattrs::new(metadata.clone());
    xattrs.set(ROOT, b"user.keep", b"r", CREATE).unwrap();
    let mut transaction = metadata.trees.transaction();
    delete_all_xattrs(&mut transaction, file).unwrap();
    delete_all_xattrs(&mut transaction, u64::MAX).unwrap();
    transaction.commit().unwrap();
    assert_eq!(xattrs.list(ROOT).unwrap(), names(&[b"user.keep"]));
}

#[derive(Debug, Clone)]
enum Op {
    Set {
        on_dir: bool,
        name: usize,
        value: Vec<u8>,
        create: bool,
        replace: bool,
    },
    Remove {
        on_dir: bool,
        name: usize,
    },
    Get {
        on_dir: bool,
        name: usize,
    },
}

const NAMES: [&[u8]; 10] = [
    b"user.a",
    b"user.b",
    b"user.ab",
    b"trusted.a",
    b"security.x",
    b"user.\xff",
    // Kept under their digests: 119, 200 and 255 bytes, the two of 255
    // alike but for their last byte.
    b"user.nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnna",
    b"user.nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnb",
    b"user.nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnc",
    b"user.nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnd",
];

fn op() -> impl Strategy<Value = Op> {
    let name = 0..NAMES.len();
    prop_oneof![
        3 => (
            any::<bool>(),
            name.clone(),
            prop::collection::vec(any::<u8>(), 0..40),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(on_dir, name, value, create, replace)| Op::Set {
                on_dir,
                name,
                value,
                create,
                replace
            }),
        1 => (any::<bool>(), name.clone()).prop_map(|(on_dir, name)| Op::Remove { on_dir, name }),
        1 => (any::<bool>(), name).prop_map(|(on_dir, name)| Op::Get { on_dir, name }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_agree_with_a_model(ops in prop::collection::vec(op(), 1..60)) {
        let (device, _, metadata, file) = with_file();
        let (dir, _) = Namespace::new(metadata.clone()).mkdir(ROOT, b"d", 0o755, 0, 0).unwrap();
        let xattrs = Xattrs::new(metadata.clone());
        let mut model: BTreeMap<(u64, Vec<u8>), Vec<u8>> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Set { on_dir, name, value, create, replace } => {
                    let ino = if on_dir { dir } else { file };
                    let key = (ino, NAMES[name].to_vec());
                    let exists = model.contains_key(&key);
                    let result = xattrs.set(ino, NAMES[name], &value, XattrFlags { create, replace });
                    let expected = if create && replace {
                        Err(libc::EINVAL)
                    } else if create && exists {
                        Err(libc::EEXIST)
                    } else if replace && !exists {
                        Err(libc::ENODATA)
                    } else {
                        Ok(())
                    };
                    prop_assert_eq!(result.map_err(|error| error.errno()), expected);
                    if expected.is_ok() {
                        model.insert(key, value);
                    }
                }
                Op::Remove { on_dir, name } => {
                    let ino = if on_dir { dir } else { file };
                    let expected = match model.remove(&(ino, NAMES[name].to_vec())) {
                        Some(_) => Ok(()),
                        None => Err(libc::ENODATA),
                    };
                    prop_assert_eq!(xattrs.remove(ino, NAMES[name]).map_err(|error| error.errno()), expected);
                }
                Op::Get { on_dir, name } => {
                    let ino = if on_dir { dir } else { file };
                    let expected = model
                        .get(&(ino, NAMES[name].to_vec()))
                        .cloned()
                        .ok_or(libc::ENODATA);
                    prop_assert_eq!(xattrs.get(ino, NAMES[name]).map_err(|error| error.errno()), expected);
                }
            }
        }
        for ino in [file, dir] {
            let expected: Vec<Vec<u8>> = model
                .keys()
                .filter(|(owner, _)| *owner == ino)
                .map(|(_, name)| name.clone())
                .collect();
            prop_assert_eq!(xattrs.list(ino).unwrap(), expected);
            for name in NAMES {
                let expected = model.get(&(ino, name.to_vec())).cloned().ok_or(libc::ENODATA);
                prop_assert_eq!(xattrs.get(ino, name).map_err(|error| error.errno()), expected);
            }
        }
        prop_assert_eq!(committed_xattr_keys(&metadata), model.len());
        assert_fsck_clean(&device, &metadata);
    }
}

/// Review 35: a long name is read from its record's content, which a
/// large value puts in pieces; listing read them without the record lock,
/// and a set or remove committing between the reads made a healthy
/// attribute look damaged (EIO, and errors= made the mount read-only).
#[test]
fn listing_while_long_named_values_are_set_and_removed_never_fails() {
    let (_, _, metadata, file) = with_file();
    let xattrs = Arc::new(Xattrs::new(metadata));
    let names = [long_name(125, b'a'), long_name(200, b'b')];
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let setter = {
        let (xattrs, done, names) = (Arc::clone(&xattrs), Arc::clone(&done), names.clone());
        std::thread::spawn(move || {
            for round in 0..600usize {
                let name = &names[round % 2];
                if round % 3 == 2 {
                    let _ = xattrs.remove(file, name);
                } else {
                    let value = vec![round as u8; 2000 + 700 * (round % 4)];
                    xattrs.set(file, name, &value, UPSERT).unwrap();
                }
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        })
    };
    let mut listed = 0;
    while !done.load(std::sync::atomic::Ordering::Acquire) {
        let found = xattrs.list(file).expect("a consistent list");
        assert!(found.iter().all(|name| names.contains(name)), "{found:?}");
        listed += 1;
    }
    setter.join().unwrap();
    assert!(listed > 0);
}
