//! Fault injection: [`FaultDevice`] wraps any device and fails requests as its [`FaultPlan`]
//! says, like the device-mapper targets fstests uses (dm-error, dm-flakey, dm-dust, dm-thin).
//!
//! The plan is shared (`Arc`) and can be changed while I/O runs, so a control plane can add and
//! remove rules on a live mount. Invariants:
//!
//! - malformed requests (misaligned, out of bounds) are rejected before any rule sees them, so
//!   rule counters count only requests a real disk could have received;
//! - a request a rule fails never reaches the inner device: an injected write error leaves the
//!   medium unchanged, which is the harshest case for the layers above (nothing was written,
//!   yet an earlier successful write to the same place may still sit unflushed);
//! - a media failure is reported to the plan's callback before the read returns its error.

mod block_set;
mod delay;
mod log;
mod plan;
mod rule;

use std::sync::Arc;

pub use delay::DelayGate;
pub use log::{FaultLogEntry, FaultLogEvent, FAULT_LOG_CAPACITY};
use plan::Verdict;
pub use plan::{FaultPlan, FileFaults, FileVerdict, RuleStatus};
use rule::bounded_delay;
pub use rule::{
    FaultEffect, FaultRule, FaultRuleError, FaultScope, Operations, Probability, RuleId,
    MAX_DELAY_MICROS,
};

use super::{
    check_request, BlockDevice, ByteRange, DeviceError, IoClass, IoOperation, MediaFailureCallback,
    SectorSize,
};

/// A device that fails requests according to a shared [`FaultPlan`].
#[derive(Debug)]
pub struct FaultDevice<D> {
    inner: D,
    plan: Arc<FaultPlan>,
}

impl<D: BlockDevice> FaultDevice<D> {
    /// Wraps `inner`, consulting `plan` before every request.
    pub fn new(inner: D, plan: Arc<FaultPlan>) -> FaultDevice<D> {
        FaultDevice { inner, plan }
    }

    /// The plan this device follows.
    pub fn plan(&self) -> &Arc<FaultPlan> {
        &self.plan
    }

    /// The wrapped device.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// Unwraps the device.
    pub fn into_inner(self) -> D {
        self.inner
    }
}

impl<D: BlockDevice> BlockDevice for FaultDevice<D> {
    fn read_at(&self, offset: u64, buffer: &mut [u8], class: IoClass) -> Result<(), DeviceError> {
        let operation = IoOperation::Read;
        check_request(
            operation,
            class,
            offset,
            buffer.len(),
            self.length(),
            self.sector_size(),
        )?;
        let range = ByteRange::at(offset, buffer.len() as u64);
        let verdict = self.plan.check(operation, class, range)?;
        self.plan.delays().hold(held_for(&verdict));
        self.inner.read_at(offset, buffer, class)?;
        if let Some((draw, covered)) = verdict.corrupt {
            // Silent corruption: one bit, in the part of what was read that
            // the rule covers (the whole read when it names no range).
            let first = covered.start - offset;
            let bit = draw % (covered.len() * 8);
            let byte = (first + bit / 8) as usize;
            buffer[byte] ^= 1 << (bit % 8);
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, buffer: &[u8], class: IoClass) -> Result<(), DeviceError> {
        let operation = IoOperation::Write;
        check_request(
            operation,
            class,
            offset,
            buffer.len(),
            self.length(),
            self.sector_size(),
        )?;
        let range = ByteRange::at(offset, buffer.len() as u64);
        let verdict = self.plan.check(operation, class, range)?;
        self.plan.delays().hold(held_for(&verdict));
        self.inner.write_at(offset, buffer, class)?;
        self.plan.write_completed(range);
        Ok(())
    }

    fn flush(&self, class: IoClass) -> Result<(), DeviceError> {
        let verdict = self
            .plan
            .check(IoOperation::Flush, class, ByteRange::new(0, 0))?;
        self.plan.delays().hold(held_for(&verdict));
        self.inner.flush(class)
    }

    fn length(&self) -> u64 {
        self.inner.length()
    }

    fn sector_size(&self) -> SectorSize {
        self.inner.sector_size()
    }

    /// Registers the callback with the plan (simulated media failures) and with the inner
    /// device (media failures it finds itself).
    fn set_media_failure_callback(&self, callback: MediaFailureCallback) {
        self.inner.set_media_failure_callback(Arc::clone(&callback));
        self.plan.set_media_failure_callback(callback);
    }
}

/// How long `verdict` holds its request (a slow disk): its rules' delays
/// together, at most what one rule may add.
fn held_for(verdict: &Verdict) -> std::time::Duration {
    bounded_delay(verdict.delay)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::device::{DeviceErrorKind, Errno, MediaFailure, MemoryDevice};

    const LENGTH: u64 = 1 << 20;

    fn faulty_memory(sector_size: SectorSize) -> FaultDevice<MemoryDevice> {
        FaultDevice::new(
            MemoryDevice::new(LENGTH, sector_size),
            Arc::new(FaultPlan::new()),
        )
    }

    fn write(device: &impl BlockDevice, offset: u64, length: usize, class: IoClass) -> bool {
        device.write_at(offset, &vec![0x5a; length], class).is_ok()
    }

    fn read(device: &impl BlockDevice, offset: u64, length: usize, class: IoClass) -> bool {
        device.read_at(offset, &mut vec![0; length], class).is_ok()
    }

    /// A corrupt rule over part of a device flips bits only there, even in
    /// a read that covers much more (it flipped one anywhere in the read).
    #[test]
    fn corruption_stays_inside_the_rule_range() {
        let device = faulty_memory(SectorSize::Bytes512);
        let every = Probability::from_parts_per_million(1_000_000).unwrap();
        let only = ByteRange::at(40 << 10, 4096);
        device
            .plan()
            .add_rule(FaultRule::corrupt(5, every).in_range(only))
            .unwrap();
        for _ in 0..200 {
            let mut bytes = vec![0u8; 256 << 10];
            device.read_at(0, &mut bytes, IoClass::Data).unwrap();
            let flipped: Vec<usize> = (0..bytes.len()).filter(|&at| bytes[at] != 0).collect();
            assert_eq!(flipped.len(), 1);
            let at = flipped[0] as u64;
            assert!(only.start <= at && at < only.end, "byte {at} flipped");
        }
    }

    #[test]
    fn fail_rule_fails_only_its_range_class_and_operations() {
        let device = faulty_memory(SectorSize::Bytes512);
        let rule = FaultRule::fail(Errno(libc::ETIMEDOUT))
            .on(Operations::WRITE)
            .for_class(IoClass::Data)
            .in_range(ByteRange::new(8192, 12288));
        let id = device.plan().add_rule(rule).unwrap();

        let error = device.write_at(8192, &[1; 512], IoClass::Data).unwrap_err();
        assert_eq!(error.errno(), Errno(libc::ETIMEDOUT));
        assert_eq!(error.injected_by, Some(id));
        // Straddling the range start still overlaps it.
        assert!(!write(&device, 7680, 1024, IoClass::Data));
        assert!(write(&device, 8192, 512, IoClass::Metadata));
        assert!(write(&device, 12288, 512, IoClass::Data));
        assert!(read(&device, 8192, 512, IoClass::Data));
        device.flush(IoClass::Data).unwrap();

        let status = device.plan().rule(id).unwrap();
        assert_eq!(status.injected, 2);
        assert_eq!(status.matched, 2);
    }

    #[test]
    fn failed_write_leaves_the_medium_unchanged() {
        let device = faulty_memory(SectorSize::Bytes512);
        device
            .plan()
            .add_rule(FaultRule::fail(Errno::EIO).on(Operations::WRITE))
            .unwrap();
        assert!(!write(&device, 0, 4096, IoClass::Data));
        assert!(device.inner().to_image().iter().all(|&byte| byte == 0));
    }

    #[test]
    fn fail_rule_skips_then_fails_a_limited_number_of_times() {
        let device = faulty_memory(SectorSize::Bytes512);
        device
            .plan()
            .add_rule(
                FaultRule::fail(Errno::EIO)
                    .for_class(IoClass::Journal)
                    .after(2, Some(3)),
            )
            .unwrap();
        let outcomes: Vec<bool> = (0..7)
            .map(|_| write(&device, 0, 512, IoClass::Journal))
            .collect();
        assert_eq!(
            outcomes,
            [true, true, false, false, false, true, true],
            "third to fifth journal writes fail"
        );
    }

    #[test]
    fn flush_rule_fails_flushes_of_its_class_only() {
        let device = faulty_memory(SectorSize::Bytes512);
        device
            .plan()
            .add_rule(
                FaultRule::fail(Errno::EIO)
                    .on(Operations::FLUSH)
                    .for_class(IoClass::Journal),
            )
            .unwrap();
        let error = device.flush(IoClass::Journal).unwrap_err();
        assert_eq!(error.operation, IoOperation::Flush);
        device.flush(IoClass::Data).unwrap();
        assert!(write(&device, 0, 512, IoClass::Journal));
        assert_eq!(device.inner().flush_count(), 1);
    }

    #[test]
    fn flaky_rule_is_deterministic_for_a_seed() {
        let pattern = |seed: u64| -> Vec<bool> {
            let device = faulty_memory(SectorSize::Bytes512);
            let probability = Probability::from_parts_per_million(300_000).unwrap();
            device
                .plan()
                .add_rule(FaultRule::flaky(Errno::EIO, seed, probability))
                .unwrap();
            (0..200)
                .map(|index| write(&device, index * 512, 512, IoClass::Data))
                .collect()
        };
        let first = pattern(11);
        assert_eq!(first, pattern(11));
        assert_ne!(first, pattern(12));
        let failures = first.iter().filter(|ok| !**ok).count();
        assert!((30..90).contains(&failures), "{failures} of 200 failed");
    }

    #[test]
    fn bad_blocks_fail_reads_with_the_failed_range_and_notify_the_callback() {
        let device = faulty_memory(SectorSize::Bytes512);
        let heard: Arc<Mutex<Vec<MediaFailure>>> = Arc::default();
        let sink = Arc::clone(&heard);
        device.set_media_failure_callback(Arc::new(move |failure| {
            sink.lock().unwrap().push(failure);
        }));
        let id = device
            .plan()
            .add_rule(FaultRule::bad_blocks(ByteRange::new(8192, 12288), 4096))
            .unwrap();

        assert!(read(&device, 0, 8192, IoClass::Data));
        let error = device
            .read_at(4096, &mut [0; 16384], IoClass::Metadata)
            .unwrap_err();
        let failed = ByteRange::new(8192, 12288);
        assert_eq!(error.kind, DeviceErrorKind::Media { failed });
        assert_eq!(error.errno(), Errno::EIO);
        // A sector inside the bad block fails with just that sector as the failed range.
        let error = device
            .read_at(9216, &mut [0; 512], IoClass::Data)
            .unwrap_err();
        assert_eq!(
            error.kind,
            DeviceErrorKind::Media {
                failed: ByteRange::new(9216, 9728)
            }
        );
        let heard = heard.lock().unwrap();
        assert_eq!(heard.len(), 2);
        assert_eq!(
            heard[0],
            MediaFailure {
                range: failed,
                class: IoClass::Metadata,
                rule: Some(id)
            }
        );
    }

    #[test]
    fn write_covering_a_bad_block_clears_it_but_a_partial_write_does_not() {
        let device = faulty_memory(SectorSize::Bytes512);
        let id = device
            .plan()
            .add_rule(FaultRule::bad_blocks(ByteRange::new(0, 8192), 4096))
            .unwrap();
        assert!(write(&device, 0, 512, IoClass::Data));
        assert!(!read(&device, 0, 512, IoClass::Data));
        assert!(write(&device, 0, 4096, IoClass::Data));
        assert!(read(&device, 0, 4096, IoClass::Data));
        assert!(!read(&device, 4096, 4096, IoClass::Data));
        assert_eq!(
            device.plan().rule(id).unwrap().bad_blocks_remaining,
            Some(1)
        );
    }

    #[test]
    fn thin_volume_runs_out_of_space_after_its_provisioned_blocks() {
        let device = faulty_memory(SectorSize::Bytes4096);
        let id = device
            .plan()
            .add_rule(FaultRule::thin_provisioned(4, 4096))
            .unwrap();
        for block in 0..4 {
            assert!(write(&device, block * 4096, 4096, IoClass::Data));
        }
        // Rewriting a provisioned block still works; a fifth distinct block does not.
        assert!(write(&device, 0, 4096, IoClass::Data));
        let error = device
            .write_at(4 * 4096, &[0; 4096], IoClass::Data)
            .unwrap_err();
        assert_eq!(error.kind, DeviceErrorKind::NoSpace);
        assert_eq!(error.errno(), Errno::ENOSPC);
        // A write reaching one new block fails whole, without provisioning anything.
        assert!(!write(&device, 3 * 4096, 8192, IoClass::Data));
        let status = device.plan().rule(id).unwrap();
        assert_eq!(status.provisioned_blocks_used, Some(4));
        assert_eq!(status.injected, 2);
        assert!(read(&device, 10 * 4096, 4096, IoClass::Data));
    }

    #[test]
    fn write_failed_by_an_earlier_rule_provisions_nothing() {
        let device = faulty_memory(SectorSize::Bytes4096);
        device
            .plan()
            .add_rule(FaultRule::fail(Errno::EIO).in_range(ByteRange::new(0, 4096)))
            .unwrap();
        let thin = device
            .plan()
            .add_rule(FaultRule::thin_provisioned(1, 4096))
            .unwrap();
        assert!(!write(&device, 0, 4096, IoClass::Data));
        assert!(write(&device, 4096, 4096, IoClass::Data));
        assert_eq!(
            device.plan().rule(thin).unwrap().provisioned_blocks_used,
            Some(1)
        );
    }

    #[test]
    fn rules_can_be_listed_removed_and_cleared_while_shared() {
        let plan = Arc::new(FaultPlan::new());
        let device = FaultDevice::new(
            MemoryDevice::new(LENGTH, SectorSize::Bytes512),
            Arc::clone(&plan),
        );
        let first = plan.add_rule(FaultRule::fail(Errno::EIO)).unwrap();
        let second = plan
            .add_rule("thin provisioned-blocks=10".parse().unwrap())
            .unwrap();
        assert_ne!(first, second);
        let listing: Vec<String> = plan.rules().iter().map(ToString::to_string).collect();
        assert_eq!(
            listing,
            [
                "1: fail op=read,write errno=EIO skip=0 # matched=0 injected=0",
                "2: thin provisioned-blocks=10 block-size=4096 # matched=0 injected=0 \
                 provisioned-blocks-used=0"
            ]
        );
        assert!(!write(&device, 0, 512, IoClass::Data));
        let removed = plan.remove_rule(first).unwrap();
        assert_eq!(removed.injected, 1);
        assert!(plan.remove_rule(first).is_none());
        assert!(write(&device, 0, 512, IoClass::Data));

        let from_thread = {
            let plan = Arc::clone(&plan);
            std::thread::spawn(move || plan.add_rule(FaultRule::fail(Errno::EIO)).unwrap())
                .join()
                .unwrap()
        };
        assert!(from_thread > second);
        assert!(!write(&device, 0, 512, IoClass::Data));
        plan.clear();
        assert!(plan.rules().is_empty());
        assert!(write(&device, 0, 512, IoClass::Data));
    }

    #[test]
    fn invalid_rules_are_refused_by_the_plan() {
        let plan = FaultPlan::new();
        let bad_blocks_without_range = FaultRule {
            scope: FaultScope {
                range: None,
                class: None,
                operations: Operations::READ,
            },
            effect: FaultEffect::BadBlocks { block_size: 4096 },
        };
        assert!(plan.add_rule(bad_blocks_without_range).is_err());
        assert!(plan.add_rule(FaultRule::thin_provisioned(1, 3000)).is_err());
        assert!(plan.rules().is_empty());
    }

    #[test]
    fn malformed_requests_are_rejected_before_rules_count_them() {
        let device = faulty_memory(SectorSize::Bytes512);
        let id = device.plan().add_rule(FaultRule::fail(Errno::EIO)).unwrap();
        let error = device
            .read_at(100, &mut [0; 512], IoClass::Data)
            .unwrap_err();
        assert!(matches!(error.kind, DeviceErrorKind::Misaligned { .. }));
        assert_eq!(device.plan().rule(id).unwrap().matched, 0);
    }

    #[test]
    fn delays_of_several_rules_on_one_request_add_up_to_at_most_one_rules_limit() {
        let plan = FaultPlan::new();
        for _ in 0..2 {
            plan.add_rule(FaultRule::delay(40_000_000, 0, 1).on(Operations::FLUSH))
                .unwrap();
        }
        let verdict = plan
            .check(IoOperation::Flush, IoClass::Journal, ByteRange::new(0, 0))
            .unwrap();
        assert_eq!(verdict.delay, std::time::Duration::from_secs(80));
        assert_eq!(held_for(&verdict), std::time::Duration::from_secs(60));
    }
}
