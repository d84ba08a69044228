//! A volatile write cache over a real device, so a live mount can lose power
//! on command: the crash lab's device.
//!
//! [`VolatileCache`] holds every write since the last flush in memory, per
//! sector with each version written, and passes reads through it. A flush
//! writes the newest version of each sector to the device below and flushes
//! that: only then is anything durable. [`VolatileCache::cut_power`] makes
//! every request fail, as a dead disk; [`VolatileCache::restore_power`] then
//! decides what the cache held when the power went, as a reboot would find
//! it — all lost, all kept, or torn (each sector independently lost or one
//! of the versions written to it, seeded) — writes that to the device below
//! and serves again, empty.
//!
//! Two more behaviours of real disks, on demand: a lying disk that
//! acknowledges flushes without making anything durable
//! ([`VolatileCache::set_drop_flushes`]), and a cache that writes back on its
//! own when it holds [`CACHE_LIMIT_BYTES`] (writes that reached the medium
//! without a flush may survive a power cut on any disk; this bounds memory).
//!
//! A machine that loses power reboots: what its old incarnation had in
//! flight never arrives. [`VolatileCache::boot`] hands out the device as
//! one boot sees it ([`BootedDevice`]); every cut ends that boot, so a
//! request of an abandoned mount that was still on its way (held by a
//! delay rule, say) fails instead of landing in the next boot's cache.
//!
//! A write is acknowledged only once the device below has room for it
//! ([`BlockDevice::reserve_backing`]: the host filesystem under an image
//! file), so a full host fails the write that needs the room, as it would
//! without the cache, never the flush that writes it back.
//!
//! Invariants: a read sees the newest write to each sector; the device below
//! holds exactly what is durable, plus what the cache wrote back on its own;
//! nothing reaches the device below while the power is off, nor from a boot
//! that a cut ended.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::seeded_random::SeededRandom;
use super::{
    check_request, BlockDevice, ByteRange, DeviceError, DeviceErrorKind, IoClass, IoOperation,
    MediaFailureCallback, SectorSize,
};

/// What the cache holds at most before it writes back on its own.
pub const CACHE_LIMIT_BYTES: u64 = 256 << 20;

/// What happens to the cached writes when the power comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerLoss {
    /// Every write since the last flush is lost.
    DropUnflushed,
    /// Each sector written since the last flush independently kept one of
    /// the versions written to it, or none; the seed decides.
    Torn {
        /// Seed for the choices.
        seed: u64,
    },
}

/// What a power loss did to the cache's contents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PowerLossReport {
    /// Sectors written since the last flush.
    pub sectors_unflushed: u64,
    /// Of those, sectors whose newest version survived.
    pub sectors_kept: u64,
    /// Sectors that kept an older version than their newest.
    pub sectors_torn: u64,
    /// Flushes acknowledged since the cache last emptied that kept nothing
    /// (a lying disk, [`VolatileCache::set_drop_flushes`]): what the
    /// filesystem was told is durable and the cut lost too.
    pub flushes_dropped: u64,
}

#[derive(Debug, Default)]
struct CacheState {
    /// Sector number → every version written since the last flush, oldest
    /// first.
    sectors: BTreeMap<u64, Vec<Arc<[u8]>>>,
    /// Bytes of all the versions held.
    bytes: u64,
    powered_off: bool,
    /// Counts the cuts: a [`BootedDevice`] of an earlier boot is refused.
    boot: u64,
    drop_flushes: bool,
    /// Flushes acknowledged.
    flushes: u64,
    /// Of those, acknowledged without keeping anything since the cache
    /// last emptied.
    flushes_dropped: u64,
}

/// A device with a volatile write cache in front of it. See the module
/// comment.
pub struct VolatileCache {
    inner: Arc<dyn BlockDevice>,
    state: Mutex<CacheState>,
}

impl std::fmt::Debug for VolatileCache {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        formatter
            .debug_struct("VolatileCache")
            .field("cached_bytes", &state.bytes)
            .field("powered_off", &state.powered_off)
            .finish_non_exhaustive()
    }
}

impl VolatileCache {
    /// A cache in front of `inner`, empty and powered.
    pub fn new(inner: Arc<dyn BlockDevice>) -> VolatileCache {
        VolatileCache {
            inner,
            state: Mutex::new(CacheState::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, CacheState> {
        // Every update is complete before anything that could panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes written since the last flush (every version).
    pub fn cached_bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Flushes acknowledged so far.
    pub fn flushes(&self) -> u64 {
        self.lock().flushes
    }

    /// Whether flushes are acknowledged without making anything durable (a
    /// lying disk).
    pub fn set_drop_flushes(&self, drop: bool) {
        self.lock().drop_flushes = drop;
    }

    /// Whether flushes are acknowledged without making anything durable.
    pub fn drops_flushes(&self) -> bool {
        self.lock().drop_flushes
    }

    /// Flushes acknowledged without making anything durable since the
    /// cache last held nothing the medium lacks (a flush that kept, or a
    /// power cut).
    pub fn flushes_dropped(&self) -> u64 {
        self.lock().flushes_dropped
    }

    /// Whether the power is on.
    pub fn is_powered(&self) -> bool {
        !self.lock().powered_off
    }

    /// Cuts the power: every request fails from now on (for ever, through
    /// the [`BootedDevice`]s handed out so far), nothing more reaches the
    /// device below, the cache keeps what it held.
    pub fn cut_power(&self) {
        let mut state = self.lock();
        if !state.powered_off {
            state.powered_off = true;
            state.boot += 1;
        }
    }

    /// The device as the current boot sees it: it serves until the next
    /// cut, then fails every request even once the power is back.
    pub fn boot(self: &Arc<Self>) -> BootedDevice {
        BootedDevice {
            boot: self.lock().boot,
            cache: Arc::clone(self),
        }
    }

    /// Brings the power back: what the cache held is lost or torn as `loss`
    /// says, what survives is written to the device below and flushed, and
    /// the cache serves again, empty. Cuts the power first if it was on.
    pub fn restore_power(&self, loss: PowerLoss) -> Result<PowerLossReport, DeviceError> {
        let mut state = self.lock();
        if !state.powered_off {
            state.powered_off = true;
            state.boot += 1;
        }
        let sectors = std::mem::take(&mut state.sectors);
        state.bytes = 0;
        let mut report = PowerLossReport {
            sectors_unflushed: sectors.len() as u64,
            flushes_dropped: std::mem::take(&mut state.flushes_dropped),
            ..PowerLossReport::default()
        };
        if let PowerLoss::Torn { seed } = loss {
            let mut random = SeededRandom::new(seed);
            let mut survivors = BTreeMap::new();
            for (sector, versions) in sectors {
                // None, or one of the versions, equally likely.
                let choice = random.below(versions.len() as u64 + 1) as usize;
                if choice == 0 {
                    continue;
                }
                if choice == versions.len() {
                    report.sectors_kept += 1;
                } else {
                    report.sectors_torn += 1;
                }
                survivors.insert(sector, Arc::clone(&versions[choice - 1]));
            }
            self.write_through(&survivors)?;
            self.inner.flush(IoClass::Data)?;
        }
        state.powered_off = false;
        Ok(report)
    }

    /// Writes `sectors` to the device below, contiguous ones in one request.
    fn write_through(&self, sectors: &BTreeMap<u64, Arc<[u8]>>) -> Result<(), DeviceError> {
        let sector_bytes = self.inner.sector_size().bytes();
        let mut run: Vec<u8> = Vec::new();
        let mut run_start = 0;
        let mut next = None;
        for (&sector, bytes) in sectors {
            if next != Some(sector) && !run.is_empty() {
                self.inner
                    .write_at(run_start * sector_bytes, &run, IoClass::Data)?;
                run.clear();
            }
            if run.is_empty() {
                run_start = sector;
            }
            run.extend_from_slice(bytes);
            next = Some(sector + 1);
        }
        if !run.is_empty() {
            self.inner
                .write_at(run_start * sector_bytes, &run, IoClass::Data)?;
        }
        Ok(())
    }

    /// Writes the newest version of every cached sector to the device
    /// below, empties the cache. With `flush`, the device below is flushed
    /// too (a real flush); without, the writes merely reached the medium (a
    /// cache writing back on its own).
    fn drain(
        &self,
        state: &mut CacheState,
        flush: bool,
        class: IoClass,
    ) -> Result<(), DeviceError> {
        let newest: BTreeMap<u64, Arc<[u8]>> = state
            .sectors
            .iter()
            .filter_map(|(&sector, versions)| {
                versions.last().map(|bytes| (sector, Arc::clone(bytes)))
            })
            .collect();
        self.write_through(&newest)?;
        if flush {
            self.inner.flush(class)?;
        }
        state.sectors.clear();
        state.bytes = 0;
        state.flushes_dropped = 0;
        Ok(())
    }

    /// Refuses a request while the power is off, or from a boot a cut
    /// ended (`boot`: `None` for a request made on the cache itself).
    fn powered(
        state: &CacheState,
        boot: Option<u64>,
        operation: IoOperation,
        class: IoClass,
        range: ByteRange,
    ) -> Result<(), DeviceError> {
        if state.powered_off || boot.is_some_and(|boot| boot != state.boot) {
            Err(DeviceError::new(
                DeviceErrorKind::PowerCut,
                operation,
                class,
                range,
            ))
        } else {
            Ok(())
        }
    }
}

impl VolatileCache {
    fn read(
        &self,
        boot: Option<u64>,
        offset: u64,
        buffer: &mut [u8],
        class: IoClass,
    ) -> Result<(), DeviceError> {
        let operation = IoOperation::Read;
        check_request(
            operation,
            class,
            offset,
            buffer.len(),
            self.length(),
            self.sector_size(),
        )?;
        let state = self.lock();
        Self::powered(
            &state,
            boot,
            operation,
            class,
            ByteRange::at(offset, buffer.len() as u64),
        )?;
        self.inner.read_at(offset, buffer, class)?;
        let sector_bytes = self.sector_size().bytes();
        let first = offset / sector_bytes;
        let end = first + buffer.len() as u64 / sector_bytes;
        for (&sector, versions) in state.sectors.range(first..end) {
            if let Some(newest) = versions.last() {
                let at = ((sector - first) * sector_bytes) as usize;
                buffer[at..at + newest.len()].copy_from_slice(newest);
            }
        }
        Ok(())
    }

    fn write(
        &self,
        boot: Option<u64>,
        offset: u64,
        buffer: &[u8],
        class: IoClass,
    ) -> Result<(), DeviceError> {
        let operation = IoOperation::Write;
        check_request(
            operation,
            class,
            offset,
            buffer.len(),
            self.length(),
            self.sector_size(),
        )?;
        let mut state = self.lock();
        Self::powered(
            &state,
            boot,
            operation,
            class,
            ByteRange::at(offset, buffer.len() as u64),
        )?;
        // Room below first: a full host fails this write (ENOSPC, as
        // without the cache), not the flush that would write it back.
        self.inner
            .reserve_backing(offset, buffer.len() as u64, class)?;
        if state.bytes + buffer.len() as u64 > CACHE_LIMIT_BYTES {
            self.drain(&mut state, false, class)?;
        }
        let sector_bytes = self.sector_size().bytes() as usize;
        let first = offset / sector_bytes as u64;
        for (index, bytes) in buffer.chunks(sector_bytes).enumerate() {
            state
                .sectors
                .entry(first + index as u64)
                .or_default()
                .push(Arc::from(bytes));
        }
        state.bytes += buffer.len() as u64;
        Ok(())
    }

    fn flush_cache(&self, boot: Option<u64>, class: IoClass) -> Result<(), DeviceError> {
        let mut state = self.lock();
        Self::powered(
            &state,
            boot,
            IoOperation::Flush,
            class,
            ByteRange::new(0, 0),
        )?;
        state.flushes += 1;
        if state.drop_flushes {
            state.flushes_dropped += 1;
            return Ok(());
        }
        self.drain(&mut state, true, class)
    }
}

impl BlockDevice for VolatileCache {
    fn read_at(&self, offset: u64, buffer: &mut [u8], class: IoClass) -> Result<(), DeviceError> {
        self.read(None, offset, buffer, class)
    }

    fn write_at(&self, offset: u64, buffer: &[u8], class: IoClass) -> Result<(), DeviceError> {
        self.write(None, offset, buffer, class)
    }

    fn flush(&self, class: IoClass) -> Result<(), DeviceError> {
        self.flush_cache(None, class)
    }

    fn length(&self) -> u64 {
        self.inner.length()
    }

    fn sector_size(&self) -> SectorSize {
        self.inner.sector_size()
    }

    fn set_media_failure_callback(&self, callback: MediaFailureCallback) {
        self.inner.set_media_failure_callback(callback);
    }
}

/// The cache as one boot sees it ([`VolatileCache::boot`]): refused from
/// the next cut on.
#[derive(Debug)]
pub struct BootedDevice {
    cache: Arc<VolatileCache>,
    boot: u64,
}

impl BlockDevice for BootedDevice {
    fn read_at(&self, offset: u64, buffer: &mut [u8], class: IoClass) -> Result<(), DeviceError> {
        self.cache.read(Some(self.boot), offset, buffer, class)
    }

    fn write_at(&self, offset: u64, buffer: &[u8], class: IoClass) -> Result<(), DeviceError> {
        self.cache.write(Some(self.boot), offset, buffer, class)
    }

    fn flush(&self, class: IoClass) -> Result<(), DeviceError> {
        self.cache.flush_cache(Some(self.boot), class)
    }

    fn length(&self) -> u64 {
        self.cache.length()
    }

    fn sector_size(&self) -> SectorSize {
        self.cache.sector_size()
    }

    fn set_media_failure_callback(&self, callback: MediaFailureCallback) {
        self.cache.set_media_failure_callback(callback);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{Errno, MemoryDevice};

    const SECTOR: usize = 512;

    fn device() -> (Arc<MemoryDevice>, VolatileCache) {
        let memory = Arc::new(MemoryDevice::new(64 * SECTOR as u64, SectorSize::Bytes512));
        let cache = VolatileCache::new(memory.clone());
        (memory, cache)
    }

    fn first_bytes(memory: &MemoryDevice, sectors: usize) -> Vec<u8> {
        memory
            .to_image()
            .chunks(SECTOR)
            .take(sectors)
            .map(|sector| sector[0])
            .collect()
    }

    #[test]
    fn reads_see_cached_writes_and_only_a_flush_reaches_the_device() {
        let (memory, cache) = device();
        cache.write_at(0, &[1; 2 * SECTOR], IoClass::Data).unwrap();
        cache.write_at(512, &[2; SECTOR], IoClass::Data).unwrap();
        let mut buffer = [0; 3 * SECTOR];
        cache.read_at(0, &mut buffer, IoClass::Data).unwrap();
        assert_eq!([buffer[0], buffer[SECTOR], buffer[2 * SECTOR]], [1, 2, 0]);
        assert_eq!(first_bytes(&memory, 2), [0, 0], "nothing durable yet");
        cache.flush(IoClass::Journal).unwrap();
        assert_eq!(first_bytes(&memory, 2), [1, 2]);
        assert_eq!(cache.cached_bytes(), 0);
    }

    #[test]
    fn a_power_cut_loses_the_unflushed_writes_and_fails_every_request_until_restored() {
        let (memory, cache) = device();
        cache.write_at(0, &[1; SECTOR], IoClass::Data).unwrap();
        cache.flush(IoClass::Data).unwrap();
        cache.write_at(0, &[2; SECTOR], IoClass::Data).unwrap();
        cache.cut_power();
        let refused = cache.read_at(0, &mut [0; SECTOR], IoClass::Data);
        assert_eq!(refused.unwrap_err().kind, DeviceErrorKind::PowerCut);
        assert!(cache.write_at(0, &[3; SECTOR], IoClass::Data).is_err());
        assert!(cache.flush(IoClass::Data).is_err());
        let report = cache.restore_power(PowerLoss::DropUnflushed).unwrap();
        assert_eq!(report.sectors_unflushed, 1);
        assert_eq!(first_bytes(&memory, 1), [1]);
        let mut buffer = [0; SECTOR];
        cache.read_at(0, &mut buffer, IoClass::Data).unwrap();
        assert_eq!(buffer[0], 1, "the cache serves again, empty");
    }

    #[test]
    fn a_torn_loss_keeps_whole_sectors_of_any_version_reproducibly() {
        let run = |seed| {
            let (memory, cache) = device();
            for version in 1..=3u8 {
                for sector in 0..32u64 {
                    cache
                        .write_at(sector * 512, &[version; SECTOR], IoClass::Data)
                        .unwrap();
                }
            }
            let report = cache.restore_power(PowerLoss::Torn { seed }).unwrap();
            (memory.to_image(), report)
        };
        let (image, report) = run(7);
        assert_eq!(run(7).0, image);
        assert_ne!(run(8).0, image);
        assert_eq!(report.sectors_unflushed, 32);
        let mut seen = std::collections::BTreeSet::new();
        for sector in image.chunks(SECTOR).take(32) {
            assert!(
                sector.iter().all(|&byte| byte == sector[0]),
                "torn inside a sector"
            );
            seen.insert(sector[0]);
        }
        assert_eq!(seen, [0, 1, 2, 3].into_iter().collect());
    }

    #[test]
    fn a_lying_disk_acknowledges_flushes_that_a_power_cut_then_undoes() {
        let (memory, cache) = device();
        cache.set_drop_flushes(true);
        cache.write_at(0, &[9; SECTOR], IoClass::Data).unwrap();
        cache.flush(IoClass::Data).unwrap();
        assert_eq!(cache.flushes(), 1);
        let report = cache.restore_power(PowerLoss::DropUnflushed).unwrap();
        assert_eq!(first_bytes(&memory, 1), [0]);
        // The cut says so: what the flush covered was lost too.
        assert_eq!(report.flushes_dropped, 1);
        // An honest flush after the lie keeps everything again.
        cache.set_drop_flushes(false);
        cache.write_at(0, &[9; SECTOR], IoClass::Data).unwrap();
        cache.set_drop_flushes(true);
        cache.flush(IoClass::Data).unwrap();
        cache.set_drop_flushes(false);
        cache.flush(IoClass::Data).unwrap();
        let report = cache.restore_power(PowerLoss::DropUnflushed).unwrap();
        assert_eq!(report.flushes_dropped, 0);
        assert_eq!(first_bytes(&memory, 1), [9]);
    }

    #[test]
    fn a_request_of_an_ended_boot_never_lands_after_the_power_returns() {
        let memory = Arc::new(MemoryDevice::new(64 * SECTOR as u64, SectorSize::Bytes512));
        let cache = Arc::new(VolatileCache::new(memory));
        let first = cache.boot();
        first.write_at(0, &[1; SECTOR], IoClass::Data).unwrap();
        cache.cut_power();
        cache.restore_power(PowerLoss::DropUnflushed).unwrap();
        // A write of the abandoned mount, late: refused, the power is back.
        let late = first.write_at(0, &[2; SECTOR], IoClass::Data);
        assert_eq!(late.unwrap_err().kind, DeviceErrorKind::PowerCut);
        assert!(first.flush(IoClass::Data).is_err());
        let second = cache.boot();
        let mut buffer = [0; SECTOR];
        second.read_at(0, &mut buffer, IoClass::Data).unwrap();
        assert_eq!(buffer[0], 0, "neither the lost write nor the late one");
        second.write_at(0, &[3; SECTOR], IoClass::Data).unwrap();
        // Restoring without an explicit cut ends the boot too.
        cache.restore_power(PowerLoss::DropUnflushed).unwrap();
        assert!(second.read_at(0, &mut buffer, IoClass::Data).is_err());
        assert!(cache.boot().read_at(0, &mut buffer, IoClass::Data).is_ok());
    }

    /// A memory device whose host has no room past `room` bytes.
    #[derive(Debug)]
    struct FullHost {
        memory: MemoryDevice,
        room: u64,
    }

    impl BlockDevice for FullHost {
        fn read_at(
            &self,
            offset: u64,
            buffer: &mut [u8],
            class: IoClass,
        ) -> Result<(), DeviceError> {
            self.memory.read_at(offset, buffer, class)
        }
        fn write_at(&self, offset: u64, buffer: &[u8], class: IoClass) -> Result<(), DeviceError> {
            self.reserve_backing(offset, buffer.len() as u64, class)?;
            self.memory.write_at(offset, buffer, class)
        }
        fn flush(&self, class: IoClass) -> Result<(), DeviceError> {
            self.memory.flush(class)
        }
        fn length(&self) -> u64 {
            self.memory.length()
        }
        fn sector_size(&self) -> SectorSize {
            self.memory.sector_size()
        }
        fn reserve_backing(
            &self,
            offset: u64,
            length: u64,
            class: IoClass,
        ) -> Result<(), DeviceError> {
            if offset + length <= self.room {
                return Ok(());
            }
            Err(DeviceError::new(
                DeviceErrorKind::NoSpace,
                IoOperation::Write,
                class,
                ByteRange::at(offset, length),
            ))
        }
    }

    /// A full host fails the write that needs room, with ENOSPC, and
    /// nothing of it is cached: the next flush, which the journal's
    /// commits need, still succeeds (it failed, and so the journal, on a
    /// crashable mount of an image whose host filled up: review 27).
    #[test]
    fn a_write_the_host_has_no_room_for_fails_itself_not_the_next_flush() {
        let host = FullHost {
            memory: MemoryDevice::new(64 * SECTOR as u64, SectorSize::Bytes512),
            room: 8 * SECTOR as u64,
        };
        let cache = VolatileCache::new(Arc::new(host));
        cache.write_at(0, &[1; SECTOR], IoClass::Journal).unwrap();
        let refused = cache
            .write_at(16 * SECTOR as u64, &[2; SECTOR], IoClass::Data)
            .unwrap_err();
        assert_eq!(refused.errno(), Errno::ENOSPC);
        cache.flush(IoClass::Journal).unwrap();
        let mut buffer = [9; SECTOR];
        cache
            .read_at(16 * SECTOR as u64, &mut buffer, IoClass::Data)
            .unwrap();
        assert_eq!(buffer, [0; SECTOR]);
    }
}
