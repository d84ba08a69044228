//! Power-cut simulation: a memory device with a volatile write cache.
//!
//! [`CrashDevice`] keeps two images: what reads see (every completed write) and what is
//! durable (every write completed before the last successful flush), plus the list of
//! unflushed writes in issue order. A power cut freezes that state and refuses all further
//! I/O; [`CrashDevice::crash`] then builds the image a reboot would find, where unflushed
//! writes are dropped, kept, or torn at sector granularity, as real disks do.
//!
//! Invariants:
//!
//! - applying the unflushed writes, in order, to the durable image gives the visible image;
//! - a sector is the unit of atomicity: a torn crash keeps or drops whole sectors, never parts;
//! - flushes are numbered from 1 in the order they are issued, and the cut configured with
//!   [`CrashDevice::cut_power_at_flush`] happens *instead of* that flush, so "cut at every
//!   flush point" is a loop over 1..=N using [`CrashDevice::flushes_issued`] from a clean run.

use std::sync::{Mutex, MutexGuard, PoisonError};

use super::seeded_random::SeededRandom;
use super::{
    check_request, truncate_to_sectors, zeroed_image, BlockDevice, ByteRange, DeviceError,
    DeviceErrorKind, IoClass, IoOperation, MemoryDevice, SectorSize,
};

/// What happens to writes that were not flushed when the power went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashMode {
    /// All of them are lost: the image is exactly the durable state.
    DropUnflushed,
    /// All of them made it (the cache drained just before the cut).
    KeepUnflushed,
    /// Each unflushed sector write independently made it or not, and those that made it may
    /// have landed in any order (which matters when two of them hit the same sector). The seed
    /// makes the outcome reproducible.
    Torn {
        /// Seed for the keep/drop choices and the order.
        seed: u64,
    },
}

#[derive(Debug)]
struct UnflushedWrite {
    offset: u64,
    bytes: Vec<u8>,
}

#[derive(Debug)]
struct CrashState {
    visible: Vec<u8>,
    durable: Vec<u8>,
    unflushed: Vec<UnflushedWrite>,
    flushes_issued: u64,
    cut_at_flush: Option<u64>,
    powered: bool,
}

/// A memory device whose unflushed writes can be lost or torn by a simulated power cut.
#[derive(Debug)]
pub struct CrashDevice {
    state: Mutex<CrashState>,
    length: u64,
    sector_size: SectorSize,
}

impl CrashDevice {
    /// A zeroed device of `length` bytes (rounded down to whole sectors), all of it durable.
    pub fn new(length: u64, sector_size: SectorSize) -> CrashDevice {
        CrashDevice::from_image(zeroed_image(length, sector_size), sector_size)
    }

    /// A device whose durable content is `image` (truncated to whole sectors).
    pub fn from_image(mut image: Vec<u8>, sector_size: SectorSize) -> CrashDevice {
        truncate_to_sectors(&mut image, sector_size);
        CrashDevice {
            length: image.len() as u64,
            state: Mutex::new(CrashState {
                durable: image.clone(),
                visible: image,
                unflushed: Vec::new(),
                flushes_issued: 0,
                cut_at_flush: None,
                powered: true,
            }),
            sector_size,
        }
    }

    fn lock(&self) -> MutexGuard<'_, CrashState> {
        // Every update below completes before any call that could panic, so a poisoned state
        // is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many flushes have been issued so far, including one that a power cut replaced.
    pub fn flushes_issued(&self) -> u64 {
        self.lock().flushes_issued
    }

    /// Arranges for the power to fail when flush number `flush_number` (counting from 1 since
    /// the device was created) is issued: that flush fails with
    /// [`DeviceErrorKind::PowerCut`] and does not make anything durable. `None` disarms.
    pub fn cut_power_at_flush(&self, flush_number: Option<u64>) {
        self.lock().cut_at_flush = flush_number;
    }

    /// Cuts the power now: every later request fails with [`DeviceErrorKind::PowerCut`].
    pub fn cut_power(&self) {
        self.lock().powered = false;
    }

    /// Whether the device still has power.
    pub fn is_powered(&self) -> bool {
        self.lock().powered
    }

    /// How many writes are waiting for a flush.
    pub fn unflushed_writes(&self) -> usize {
        self.lock().unflushed.len()
    }

    /// Cuts the power (if it is still on) and returns the image a reboot would find under
    /// `mode`, as a new device. Can be called again with other modes: the state at the cut is
    /// kept, so one cut point can be checked under every mode.
    pub fn crash(&self, mode: CrashMode) -> MemoryDevice {
        let mut state = self.lock();
        state.powered = false;
        let image = match mode {
            CrashMode::DropUnflushed => state.durable.clone(),
            CrashMode::KeepUnflushed => state.visible.clone(),
            CrashMode::Torn { seed } => torn_image(&state, self.sector_size, seed),
        };
        drop(state);
        MemoryDevice::from_image(image, self.sector_size)
    }

    fn powered_or_error(
        state: &CrashState,
        operation: IoOperation,
        class: IoClass,
        range: ByteRange,
    ) -> Result<(), DeviceError> {
        if state.powered {
            Ok(())
        } else {
            Err(DeviceError::new(
                DeviceErrorKind::PowerCut,
                operation,
                class,
                range,
            ))
        }
    }
}

/// The durable image plus a seeded random subset of the unflushed sector writes, applied in a
/// seeded random order.
fn torn_image(state: &CrashState, sector_size: SectorSize, seed: u64) -> Vec<u8> {
    let sector = sector_size.bytes() as usize;
    let mut random = SeededRandom::new(seed);
    let mut sectors: Vec<(usize, &[u8])> = state
        .unflushed
        .iter()
        .flat_map(|write| {
            let base = write.offset as usize;
            write
                .bytes
                .chunks(sector)
                .enumerate()
                .map(move |(index, chunk)| (base + index * sector, chunk))
        })
        .collect();
    random.shuffle(&mut sectors);
    let mut image = state.durable.clone();
    for (offset, chunk) in sectors {
        if random.chance(500_000) {
            image[offset..offset + chunk.len()].copy_from_slice(chunk);
        }
    }
    image
}

impl BlockDevice for CrashDevice {
    fn read_at(&self, offset: u64, buffer: &mut [u8], class: IoClass) -> Result<(), DeviceError> {
        let operation = IoOperation::Read;
        check_request(
            operation,
            class,
            offset,
            buffer.len(),
            self.length,
            self.sector_size,
        )?;
        let state = self.lock();
        let range = ByteRange::at(offset, buffer.len() as u64);
        Self::powered_or_error(&state, operation, class, range)?;
        // check_request bounded offset + length by the image length, which fits in usize.
        let start = offset as usize;
        buffer.copy_from_slice(&state.visible[start..start + buffer.len()]);
        Ok(())
    }

    fn write_at(&self, offset: u64, buffer: &[u8], class: IoClass) -> Result<(), DeviceError> {
        let operation = IoOperation::Write;
        check_request(
            operation,
            class,
            offset,
            buffer.len(),
            self.length,
            self.sector_size,
        )?;
        let mut state = self.lock();
        let range = ByteRange::at(offset, buffer.len() as u64);
        Self::powered_or_error(&state, operation, class, range)?;
        let start = offset as usize;
        state.visible[start..start + buffer.len()].copy_from_slice(buffer);
        state.unflushed.push(UnflushedWrite {
            offset,
            bytes: buffer.to_vec(),
        });
        Ok(())
    }

    fn flush(&self, class: IoClass) -> Result<(), DeviceError> {
        let operation = IoOperation::Flush;
        let mut state = self.lock();
        let range = ByteRange::new(0, 0);
        Self::powered_or_error(&state, operation, class, range)?;
        state.flushes_issued += 1;
        if state.cut_at_flush == Some(state.flushes_issued) {
            state.powered = false;
            return Self::powered_or_error(&state, operation, class, range);
        }
        let state = &mut *state;
        for write in state.unflushed.drain(..) {
            let start = write.offset as usize;
            state.durable[start..start + write.bytes.len()].copy_from_slice(&write.bytes);
        }
        Ok(())
    }

    fn length(&self) -> u64 {
        self.length
    }

    fn sector_size(&self) -> SectorSize {
        self.sector_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECTOR: usize = 512;

    fn image_sectors(device: &MemoryDevice, count: usize) -> Vec<u8> {
        let mut buffer = vec![0; count * SECTOR];
        device.read_at(0, &mut buffer, IoClass::Data).unwrap();
        buffer.chunks(SECTOR).map(|sector| sector[0]).collect()
    }

    #[test]
    fn drop_unflushed_keeps_exactly_the_flushed_writes() {
        let device = CrashDevice::new(8 * SECTOR as u64, SectorSize::Bytes512);
        device.write_at(0, &[1; SECTOR], IoClass::Data).unwrap();
        device.flush(IoClass::Data).unwrap();
        device.write_at(512, &[2; SECTOR], IoClass::Data).unwrap();
        device.write_at(0, &[3; SECTOR], IoClass::Data).unwrap();
        let mut visible = [0; SECTOR];
        device.read_at(0, &mut visible, IoClass::Data).unwrap();
        assert_eq!(visible[0], 3, "reads see unflushed writes");

        let image = device.crash(CrashMode::DropUnflushed);
        assert_eq!(image_sectors(&image, 3), [1, 0, 0]);
        let image = device.crash(CrashMode::KeepUnflushed);
        assert_eq!(image_sectors(&image, 3), [3, 2, 0]);
    }

    #[test]
    fn crashed_device_refuses_all_io() {
        let device = CrashDevice::new(4096, SectorSize::Bytes512);
        let _ = device.crash(CrashMode::DropUnflushed);
        assert!(!device.is_powered());
        let error = device.read_at(0, &mut [0; 512], IoClass::Data).unwrap_err();
        assert_eq!(error.kind, DeviceErrorKind::PowerCut);
        assert!(device.write_at(0, &[0; 512], IoClass::Data).is_err());
        assert!(device.flush(IoClass::Data).is_err());
    }

    #[test]
    fn torn_crash_keeps_or_drops_whole_sectors_reproducibly() {
        let device = CrashDevice::new(64 * SECTOR as u64, SectorSize::Bytes512);
        let mut pattern = vec![0; 64 * SECTOR];
        for (index, sector) in pattern.chunks_mut(SECTOR).enumerate() {
            sector.fill(index as u8 + 1);
        }
        device.write_at(0, &pattern, IoClass::Data).unwrap();

        let first = device.crash(CrashMode::Torn { seed: 5 }).to_image();
        let again = device.crash(CrashMode::Torn { seed: 5 }).to_image();
        let other = device.crash(CrashMode::Torn { seed: 6 }).to_image();
        assert_eq!(first, again);
        assert_ne!(first, other);
        let mut kept = 0;
        for (index, sector) in first.chunks(SECTOR).enumerate() {
            let value = sector[0];
            assert!(value == 0 || value == index as u8 + 1);
            assert!(
                sector.iter().all(|&byte| byte == value),
                "sector {index} torn inside"
            );
            kept += usize::from(value != 0);
        }
        assert!(kept > 10 && kept < 54, "{kept} of 64 sectors kept");
    }

    #[test]
    fn torn_crash_may_reorder_writes_to_the_same_sector() {
        let device = CrashDevice::new(4096, SectorSize::Bytes512);
        device.write_at(0, &[1; SECTOR], IoClass::Data).unwrap();
        device.write_at(0, &[2; SECTOR], IoClass::Data).unwrap();
        let outcomes: std::collections::BTreeSet<u8> = (0..64)
            .map(|seed| device.crash(CrashMode::Torn { seed }).to_image()[0])
            .collect();
        // Neither, either, or the first write landing last: every value is possible.
        assert_eq!(outcomes, [0, 1, 2].into_iter().collect());
    }

    #[test]
    fn power_cut_at_the_nth_flush_loses_what_that_flush_would_have_saved() {
        let run = |cut: Option<u64>| {
            let device = CrashDevice::new(4096, SectorSize::Bytes512);
            device.cut_power_at_flush(cut);
            let mut flushed_ok = 0;
            for step in 0..4u8 {
                let written =
                    device.write_at(u64::from(step) * 512, &[step + 1; SECTOR], IoClass::Journal);
                if written.is_err() || device.flush(IoClass::Journal).is_err() {
                    break;
                }
                flushed_ok += 1;
            }
            (device, flushed_ok)
        };
        let (clean, _) = run(None);
        assert_eq!(clean.flushes_issued(), 4);

        for cut in 1..=clean.flushes_issued() {
            let (device, flushed_ok) = run(Some(cut));
            assert_eq!(flushed_ok, cut - 1);
            assert_eq!(device.flushes_issued(), cut);
            let durable = device.crash(CrashMode::DropUnflushed);
            let mut expected = vec![0u8; 8];
            for (step, value) in expected.iter_mut().enumerate().take((cut - 1) as usize) {
                *value = step as u8 + 1;
            }
            assert_eq!(image_sectors(&durable, 8), expected, "cut at flush {cut}");
            let drained = device.crash(CrashMode::KeepUnflushed);
            expected[(cut - 1) as usize] = cut as u8;
            assert_eq!(image_sectors(&drained, 8), expected, "cut at flush {cut}");
        }
    }
}
