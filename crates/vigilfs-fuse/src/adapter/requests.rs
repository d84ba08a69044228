//! The kernel's requests, one handler each: `impl fuser::Filesystem for
//! Adapter`.
//!
//! Each handler but `init` decodes its request, calls the engine inside
//! `guard` (or `gated`, when the call may wait at the write gate) and
//! replies through the helpers of the parent module, which keep its
//! invariants: one reply per request, and the engine's errno for every
//! error.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    BsdFileFlags, Errno, FileHandle, FopenFlags, Generation, INodeNo, InitFlags, IoctlFlags,
    KernelConfig, LockOwner, OpenFlags as FuseOpenFlags, RenameFlags as FuseRenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl,
    ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use vigilfs::fs::{Filesystem, OpenFlags, SetAttributes};
use vigilfs::inode::{inode_flags, FallocateMode};

#[cfg(feature = "test-hooks")]
use super::TEST_PANIC_NAME;
use super::{
    caller, creator, direct_io_misaligned, errno, generation, guarded, name, reply_empty,
    reply_xattr_bytes, wanted_capabilities, write_and_reply, Adapter, FMODE_EXEC,
    FS_IOC32_GETFLAGS, FS_IOC32_SETFLAGS, FS_IOC_FSGETXATTR, FS_IOC_FSSETXATTR, FS_IOC_GETFLAGS,
    FS_IOC_SETFLAGS, FS_IOC_SHUTDOWN, MAX_WRITE_BYTES, MAX_WRITE_BYTES_WITHOUT_MAX_PAGES,
    READDIR_BATCH, READDIR_PLUS_BATCH,
};
use crate::convert;
#[allow(clippy::too_many_arguments)] // The signatures are fuser's.
impl fuser::Filesystem for Adapter {
    fn init(&mut self, _request: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let offered = config.capabilities();
        let max_write = if offered.contains(InitFlags::FUSE_MAX_PAGES) {
            MAX_WRITE_BYTES
        } else {
            MAX_WRITE_BYTES_WITHOUT_MAX_PAGES
        };
        if let Err(nearest) = config.set_max_write(max_write) {
            // Above fuser's buffer: take the largest it allows.
            let _ = config.set_max_write(nearest);
        }
        // Only what the kernel offers is asked for, so this cannot fail.
        let _ = config.add_capabilities(wanted_capabilities() & offered);
        Ok(())
    }

    fn lookup(&self, request: &Request, parent: INodeNo, entry: &OsStr, reply: ReplyEntry) {
        self.guard("lookup", || {
            #[cfg(feature = "test-hooks")]
            if entry == TEST_PANIC_NAME {
                panic!("test hook: a lookup of {TEST_PANIC_NAME} panics");
            }
            let result = self
                .filesystem
                .lookup(parent.0, name(entry), &caller(request));
            self.replies.entry(reply, result);
        });
    }

    fn forget(&self, _request: &Request, ino: INodeNo, lookups: u64) {
        self.guard("forget", || self.filesystem.forget(ino.0, lookups));
    }

    fn getattr(
        &self,
        _request: &Request,
        ino: INodeNo,
        _handle: Option<FileHandle>,
        reply: ReplyAttr,
    ) {
        self.guard("getattr", || {
            self.replies.attr(reply, self.filesystem.getattr(ino.0));
        });
    }

    fn setattr(
        &self,
        request: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        handle: Option<FileHandle>,
        _creation_time: Option<SystemTime>,
        _change_time: Option<SystemTime>,
        _backup_time: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // The ctime is the engine's to set (always now on a change); the
        // other times and flags are macOS-only.
        let changes = SetAttributes {
            mode: mode.map(|mode| mode & 0o7777),
            uid,
            gid,
            size,
            atime: atime.map(convert::set_time),
            mtime: mtime.map(convert::set_time),
        };
        let caller = caller(request);
        let replies = self.replies;
        self.gated("setattr", move |filesystem| {
            let result =
                filesystem.setattr(ino.0, &changes, handle.map(|handle| handle.0), &caller);
            replies.attr(reply, result);
        });
    }

    fn readlink(&self, _request: &Request, ino: INodeNo, reply: ReplyData) {
        self.guard("readlink", || match self.filesystem.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(error) => reply.error(errno(&error)),
        });
    }

    fn mknod(
        &self,
        request: &Request,
        parent: INodeNo,
        entry: &OsStr,
        mode: u32,
        umask: u32,
        device: u32,
        reply: ReplyEntry,
    ) {
        let (entry, caller, replies) =
            (name(entry).to_vec(), creator(request, umask), self.replies);
        self.gated("mknod", move |filesystem| {
            let result = filesystem.mknod(parent.0, &entry, mode, u64::from(device), &caller);
            replies.entry(reply, result);
        });
    }

    fn mkdir(
        &self,
        request: &Request,
        parent: INodeNo,
        entry: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let (entry, caller, replies) =
            (name(entry).to_vec(), creator(request, umask), self.replies);
        self.gated("mkdir", move |filesystem| {
            replies.entry(reply, filesystem.mkdir(parent.0, &entry, mode, &caller));
        });
    }

    fn unlink(&self, request: &Request, parent: INodeNo, entry: &OsStr, reply: ReplyEmpty) {
        let (entry, caller) = (name(entry).to_vec(), caller(request));
        self.gated("unlink", move |filesystem| {
            reply_empty(reply, filesystem.unlink(parent.0, &entry, &caller));
        });
    }

    fn rmdir(&self, request: &Request, parent: INodeNo, entry: &OsStr, reply: ReplyEmpty) {
        let (entry, caller) = (name(entry).to_vec(), caller(request));
        self.gated("rmdir", move |filesystem| {
            reply_empty(reply, filesystem.rmdir(parent.0, &entry, &caller));
        });
    }

    fn symlink(
        &self,
        request: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (link_name, target) = (
            name(link_name).to_vec(),
            target.as_os_str().as_bytes().to_vec(),
        );
        let (caller, replies) = (caller(request), self.replies);
        self.gated("symlink", move |filesystem| {
            let result = filesystem.symlink(parent.0, &link_name, &target, &caller);
            replies.entry(reply, result);
        });
    }

    fn rename(
        &self,
        request: &Request,
        parent: INodeNo,
        entry: &OsStr,
        new_parent: INodeNo,
        new_name: &OsStr,
        flags: FuseRenameFlags,
        reply: ReplyEmpty,
    ) {
        let Some(flags) = convert::rename_flags(flags.bits()) else {
            reply.error(Errno::EINVAL);
            return;
        };
        let (entry, new_name) = (name(entry).to_vec(), name(new_name).to_vec());
        let caller = caller(request);
        self.gated("rename", move |filesystem| {
            let result =
                filesystem.rename(parent.0, &entry, new_parent.0, &new_name, flags, &caller);
            reply_empty(reply, result);
        });
    }

    fn link(
        &self,
        request: &Request,
        ino: INodeNo,
        new_parent: INodeNo,
        new_name: &OsStr,
        reply: ReplyEntry,
    ) {
        let (new_name, caller, replies) = (name(new_name).to_vec(), caller(request), self.replies);
        self.gated("link", move |filesystem| {
            replies.entry(
                reply,
                filesystem.link(ino.0, new_parent.0, &new_name, &caller),
            );
        });
    }

    fn open(&self, request: &Request, ino: INodeNo, flags: FuseOpenFlags, reply: ReplyOpen) {
        // FOPEN_KEEP_CACHE unless configured off (MountConfig::keep_cache)
        // or an access time is due (`Replies::open_flags_of`): nothing
        // changes a file behind this mount's kernel.
        // execve's open carries the kernel's `__FMODE_EXEC`: it needs
        // execute permission, not read.
        let execute = flags.0 & FMODE_EXEC != 0;
        let (flags, caller, replies) =
            (OpenFlags::from_libc(flags.0), caller(request), self.replies);
        let open = move |filesystem: &Filesystem| {
            let opened = if execute && !flags.write {
                filesystem.open_to_execute(ino.0, &caller)
            } else {
                filesystem.open(ino.0, flags, &caller)
            };
            match opened {
                Ok(handle) => {
                    reply.opened(FileHandle(handle), replies.open_flags_of(filesystem, ino.0));
                }
                Err(error) => reply.error(errno(&error)),
            }
        };
        // Opening for writing (or truncating) enters the write gate.
        if flags.write || flags.truncate {
            self.gated("open", open);
        } else {
            self.guard("open", || open(&self.filesystem));
        }
    }

    fn read(
        &self,
        _request: &Request,
        _ino: INodeNo,
        handle: FileHandle,
        offset: u64,
        size: u32,
        flags: FuseOpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.guard("read", || {
            let Ok(length) = usize::try_from(size) else {
                reply.error(Errno::EINVAL);
                return;
            };
            if direct_io_misaligned(flags, offset, u64::from(size)) {
                reply.error(Errno::EINVAL);
                return;
            }
            match self.filesystem.read(handle.0, offset, length) {
                Ok(bytes) => reply.data(&bytes),
                Err(error) => reply.error(errno(&error)),
            }
        });
    }

    fn write(
        &self,
        request: &Request,
        _ino: INodeNo,
        handle: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: FuseOpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // The kernel's own write-back of cached pages (a shared mapping)
        // may end mid-sector at the end of the file: not the caller's I/O.
        if !write_flags.contains(WriteFlags::FUSE_WRITE_CACHE)
            && direct_io_misaligned(flags, offset, data.len() as u64)
        {
            reply.error(Errno::EINVAL);
            return;
        }
        let caller = caller(request);
        // The descriptor's mode now (fcntl can change it after open).
        let direct = flags.0 & libc::O_DIRECT != 0;
        // As `gated`, but the data is copied only when handed off.
        match self.lanes.inline_slot(self.filesystem.is_frozen()) {
            Some(_slot) => self.guard("write", || {
                let write = (handle.0, offset, write_flags, direct);
                write_and_reply(&self.filesystem, write, data, &caller, reply);
            }),
            None => {
                let (filesystem, data) = (Arc::clone(&self.filesystem), data.to_vec());
                self.lanes.hand_off(Box::new(move || {
                    guarded(&filesystem, "write", || {
                        let write = (handle.0, offset, write_flags, direct);
                        write_and_reply(&filesystem, write, &data, &caller, reply);
                    });
                }));
            }
        }
    }

    fn flush(
        &self,
        _request: &Request,
        _ino: INodeNo,
        handle: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.gated("flush", move |filesystem| {
            reply_empty(reply, filesystem.flush(handle.0));
        });
    }

    fn release(
        &self,
        _request: &Request,
        _ino: INodeNo,
        handle: FileHandle,
        _flags: FuseOpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.gated("release", move |filesystem| {
            reply_empty(reply, filesystem.release(handle.0));
        });
    }

    fn fsync(
        &self,
        _request: &Request,
        _ino: INodeNo,
        handle: FileHandle,
        data_only: bool,
        reply: ReplyEmpty,
    ) {
        self.gated("fsync", move |filesystem| {
            reply_empty(reply, filesystem.fsync(handle.0, data_only));
        });
    }

    fn opendir(&self, request: &Request, ino: INodeNo, _flags: FuseOpenFlags, reply: ReplyOpen) {
        self.guard("opendir", || {
            match self.filesystem.opendir(ino.0, &caller(request)) {
                Ok(handle) => reply.opened(FileHandle(handle), FopenFlags::empty()),
                Err(error) => reply.error(errno(&error)),
            }
        });
    }

    fn readdir(
        &self,
        _request: &Request,
        _ino: INodeNo,
        handle: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.guard("readdir", || {
            match self.filesystem.readdir(handle.0, offset, READDIR_BATCH) {
                Ok(items) => {
                    for item in items {
                        let full = reply.add(
                            INodeNo(item.ino),
                            item.offset,
                            convert::file_type(item.file_type),
                            OsStr::from_bytes(&item.name),
                        );
                        if full {
                            break;
                        }
                    }
                    reply.ok();
                }
                Err(error) => reply.error(errno(&error)),
            }
        });
    }

    fn readdirplus(
        &self,
        _request: &Request,
        _ino: INodeNo,
        handle: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        // One TTL for entry and attributes in a readdirplus entry (fuser
        // sends the same for both): the shorter of the two.
        let ttl = self.replies.entry_ttl.min(self.replies.attr_ttl);
        self.guard("readdirplus", || {
            match self
                .filesystem
                .readdir_plus(handle.0, offset, READDIR_PLUS_BATCH)
            {
                Ok(items) => {
                    let mut full = false;
                    for (item, attr) in items {
                        let counted = item.name != b"." && item.name != b"..";
                        if !full {
                            // An inode that cannot be read is listed by
                            // name with stand-in attributes valid for no
                            // time: the kernel asks again (and fails with
                            // the error) before using them.
                            let (attr, ttl, generation) = match &attr {
                                Some(attr) => (convert::file_attr(attr), ttl, generation(attr)),
                                None => (
                                    convert::unreadable_attr(item.ino, item.file_type),
                                    Duration::ZERO,
                                    Generation(0),
                                ),
                            };
                            full = reply.add(
                                INodeNo(item.ino),
                                item.offset,
                                OsStr::from_bytes(&item.name),
                                &ttl,
                                &attr,
                                generation,
                            );
                        }
                        if full && counted {
                            // Not sent: the kernel will not forget it.
                            self.filesystem.forget(item.ino, 1);
                        }
                    }
                    reply.ok();
                }
                Err(error) => reply.error(errno(&error)),
            }
        });
    }

    fn releasedir(
        &self,
        _request: &Request,
        _ino: INodeNo,
        handle: FileHandle,
        _flags: FuseOpenFlags,
        reply: ReplyEmpty,
    ) {
        self.guard("releasedir", || {
            reply_empty(reply, self.filesystem.releasedir(handle.0));
        });
    }

    fn fsyncdir(
        &self,
        _request: &Request,
        _ino: INodeNo,
        handle: FileHandle,
        _data_only: bool,
        reply: ReplyEmpty,
    ) {
        self.gated("fsyncdir", move |filesystem| {
            reply_empty(reply, filesystem.fsyncdir(handle.0));
        });
    }

    fn statfs(&self, _request: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.guard("statfs", || match self.filesystem.statfs() {
            Ok(statfs) => reply.statfs(
                statfs.blocks,
                statfs.free_blocks,
                statfs.available_blocks,
                statfs.files.saturating_add(statfs.free_files),
                statfs.free_files,
                statfs.block_size,
                statfs.name_max,
                statfs.block_size,
            ),
            Err(error) => reply.error(errno(&error)),
        });
    }

    fn setxattr(
        &self,
        request: &Request,
        ino: INodeNo,
        attribute: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        // `position` is macOS's resource-fork offset; Linux sends 0.
        let Some(flags) = convert::xattr_flags(flags).filter(|_| position == 0) else {
            reply.error(Errno::EINVAL);
            return;
        };
        let (attribute, value, caller) =
            (name(attribute).to_vec(), value.to_vec(), caller(request));
        self.gated("setxattr", move |filesystem| {
            reply_empty(
                reply,
                filesystem.setxattr(ino.0, &attribute, &value, flags, &caller),
            );
        });
    }

    fn getxattr(
        &self,
        request: &Request,
        ino: INodeNo,
        attribute: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        self.guard("getxattr", || {
            match self
                .filesystem
                .getxattr(ino.0, name(attribute), &caller(request))
            {
                Ok(value) => reply_xattr_bytes(reply, size, &value),
                Err(error) => reply.error(errno(&error)),
            }
        });
    }

    fn listxattr(&self, request: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.guard("listxattr", || {
            match self.filesystem.listxattr(ino.0, &caller(request)) {
                Ok(names) => {
                    // The list is the names, each followed by a NUL.
                    let mut bytes = Vec::new();
                    for attribute in names {
                        bytes.extend_from_slice(&attribute);
                        bytes.push(0);
                    }
                    reply_xattr_bytes(reply, size, &bytes);
                }
                Err(error) => reply.error(errno(&error)),
            }
        });
    }

    fn removexattr(&self, request: &Request, ino: INodeNo, attribute: &OsStr, reply: ReplyEmpty) {
        let (attribute, caller) = (name(attribute).to_vec(), caller(request));
        self.gated("removexattr", move |filesystem| {
            reply_empty(reply, filesystem.removexattr(ino.0, &attribute, &caller));
        });
    }

    fn create(
        &self,
        request: &Request,
        parent: INodeNo,
        entry: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (entry, caller, replies) =
            (name(entry).to_vec(), creator(request, umask), self.replies);
        self.gated("create", move |filesystem| {
            match filesystem.create(parent.0, &entry, mode, OpenFlags::from_libc(flags), &caller) {
                Ok((attr, handle)) => reply.created(
                    &replies.entry_ttl,
                    &convert::file_attr(&attr),
                    generation(&attr),
                    FileHandle(handle),
                    replies.open_flags(filesystem),
                ),
                Err(error) => reply.error(errno(&error)),
            }
        });
    }

    fn fallocate(
        &self,
        request: &Request,
        _ino: INodeNo,
        handle: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // The bits as the syscall passed them; the engine refuses those it
        // does not support. (A negative mode has bit 31 set, a bit no mode
        // defines: refused the same way.)
        let bits = u32::from_ne_bytes(mode.to_ne_bytes());
        let caller = caller(request);
        self.gated("fallocate", move |filesystem| {
            let mode = FallocateMode::from_bits(bits);
            let result = filesystem.fallocate(handle.0, offset, length, mode, &caller);
            reply_empty(reply, result);
        });
    }

    /// `FS_IOC_SHUTDOWN` on any file or directory of the mount shuts the
    /// filesystem down, as `vigilfs shutdown` does; root only (Linux asks
    /// for `CAP_SYS_ADMIN`). Its flags (flush everything, the log only,
    /// or nothing) never reach a FUSE server: the ioctl is declared as
    /// reading from the kernel (`_IOR`), so the kernel sends no input for
    /// it. vigilfs always flushes first, which each flag allows: the
    /// weaker ones only permit losing what was not yet flushed. Any other
    /// ioctl is `ENOTTY`.
    fn ioctl(
        &self,
        request: &Request,
        ino: INodeNo,
        _handle: FileHandle,
        _flags: IoctlFlags,
        command: u32,
        in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        match command {
            FS_IOC_GETFLAGS | FS_IOC32_GETFLAGS | FS_IOC_FSGETXATTR => {
                self.guard("getflags", || match self.filesystem.get_flags(ino.0) {
                    Ok(flags) => reply.ioctl(0, &convert::flags_reply(command, flags)),
                    Err(error) => reply.error(errno(&error)),
                });
                return;
            }
            FS_IOC_SETFLAGS | FS_IOC32_SETFLAGS | FS_IOC_FSSETXATTR => {
                let Some(flags) = convert::flags_request(command, in_data) else {
                    reply.error(Errno::EOPNOTSUPP);
                    return;
                };
                let caller = caller(request);
                let from_xflags = command == FS_IOC_FSSETXATTR;
                self.gated("setflags", move |filesystem| {
                    let flags = if from_xflags {
                        match filesystem.get_flags(ino.0) {
                            Ok(current) => inode_flags::with_xflag_flags(current, flags),
                            Err(error) => return reply.error(errno(&error)),
                        }
                    } else {
                        flags
                    };
                    match filesystem.set_flags(ino.0, flags, &caller) {
                        Ok(()) => reply.ioctl(0, &[]),
                        Err(error) => reply.error(errno(&error)),
                    }
                });
                return;
            }
            FS_IOC_SHUTDOWN => {}
            _ => {
                reply.error(Errno::ENOTTY);
                return;
            }
        }
        if request.uid() != 0 {
            reply.error(Errno::EPERM);
            return;
        }
        // Flushing may wait at the write gate (a frozen filesystem).
        self.gated("shutdown", move |filesystem| {
            // As XFS's: the shutdown happened; what its flush could not
            // write is in the events (and `vigilfs shutdown` exits 1).
            let _ = filesystem.shutdown(true);
            reply.ioctl(0, &[]);
        });
    }

    fn lseek(
        &self,
        _request: &Request,
        ino: INodeNo,
        handle: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        self.guard("lseek", || {
            let Some(whence) = convert::seek(whence) else {
                reply.error(Errno::EINVAL);
                return;
            };
            // A negative offset is past no data: ENXIO, as ext4 and xfs reply.
            let Ok(offset) = u64::try_from(offset) else {
                reply.error(Errno::ENXIO);
                return;
            };
            // Pages written through a shared mapping reach the engine only
            // at their writeback, and the kernel's lseek does not write
            // them back first: while another description may write the
            // file, a hole the engine knows may hold data the kernel has,
            // and `cp` or `tar --sparse` would copy zeros. So the whole
            // file is data then, as Linux answers for a filesystem without
            // SEEK_HOLE: never wrong, only less sparse. (The description
            // asking is left out: a program seeking in the file it writes,
            // as fstests' seek_sanity does, sees its holes; one that asks
            // through the very description it mapped is not covered.)
            let found = match self
                .filesystem
                .written_through_another_description(handle.0)
            {
                Ok(true) => match self.filesystem.getattr(ino.0) {
                    Ok(attr) => convert::seek_in_all_data(offset, attr.record.size, whence)
                        .ok_or(Errno::ENXIO),
                    Err(error) => Err(errno(&error)),
                },
                Ok(false) => self
                    .filesystem
                    .seek_data_hole(handle.0, offset, whence)
                    .map_err(|error| errno(&error)),
                Err(error) => Err(errno(&error)),
            };
            match found {
                Ok(found) => match i64::try_from(found) {
                    Ok(found) => reply.offset(found),
                    Err(_) => reply.error(Errno::EOVERFLOW),
                },
                Err(errno) => reply.error(errno),
            }
        });
    }
}
