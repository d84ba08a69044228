//! The power requests of the control server: what a cut would lose now
//! (`unsynced`), and the cut itself (`power_cut`, crashable mounts only).

use serde_json::{json, Value};
use vigilfs::device::PowerLoss;
use vigilfs::fs::{Filesystem, Unsynced};

use super::faults::not_crashable;
use super::protocol::{ErrorKind, Response};
use crate::power_cut::{CutError, CutReport, PowerSwitch};

/// What a cut would lose (or lost) as JSON:
///
/// ```text
/// files           [{inode, paths, unlinked, size, ranges [{offset, length}],
///                 bytes, lost [{offset, length}], lost_errno}] data not
///                 written back, by file (unlinked: no name left, still
///                 open); lost: data already lost, as the kernel's
///                 write-back of a shared mapping of it was refused, or
///                 writeback was failing when a mount ended (lost_errno:
///                 why; fsync fails until it is rewritten)
/// changes         [{seq, operation, inode, path, new_path}] metadata
///                 changes whose journal entry is not durable, oldest first
/// omitted_changes older pending changes not remembered one by one
/// durable_seq, newest_seq   the journal's
/// ```
pub fn unsynced_json(unsynced: &Unsynced) -> Value {
    let files: Vec<Value> = unsynced
        .data
        .iter()
        .map(|file| {
            let ranges_json = |ranges: &[(u64, u64)]| -> Vec<Value> {
                ranges
                    .iter()
                    .map(|&(start, end)| json!({ "offset": start, "length": end - start }))
                    .collect()
            };
            let bytes: u64 = file.ranges.iter().map(|&(start, end)| end - start).sum();
            json!({
                "inode": file.ino,
                "paths": file.paths,
                "unlinked": file.unlinked,
                "size": file.size,
                "ranges": ranges_json(&file.ranges),
                "bytes": bytes,
                "lost": ranges_json(&file.lost),
                "lost_errno": file.lost_errno,
            })
        })
        .collect();
    let changes: Vec<Value> = unsynced
        .changes
        .iter()
        .map(|change| {
            json!({
                "seq": change.change.seq,
                "operation": change.change.operation,
                "inode": change.change.ino,
                "path": change.path,
                "new_path": change.new_path,
            })
        })
        .collect();
    json!({
        "files": files,
        "changes": changes,
        "omitted_changes": unsynced.omitted_changes,
        "durable_seq": unsynced.durable_seq,
        "newest_seq": unsynced.newest_seq,
    })
}

/// `unsynced`: what a power cut would lose now. On a crashable mount also
/// `device {drops_flushes, flushes_dropped}`: what a lying device took
/// from the journal's idea of durable, which the lists cannot show.
pub fn unsynced(fs: &Filesystem, power: Option<&PowerSwitch>) -> Response {
    let mut report = unsynced_json(&fs.unsynced());
    if let Some(power) = power {
        report["device"] = json!({
            "drops_flushes": power.drops_flushes(),
            "flushes_dropped": power.flushes_dropped(),
        });
    }
    Response::success(report)
}

/// What a cut did, as `power_cut` and `vigilfs crash-test --json` show it:
/// `{cut, took_ms, replayed, torn, seed, device {sectors_unflushed,
/// sectors_kept, sectors_torn, flushes_dropped}, lost {unsynced_json}}`.
pub fn cut_report_json(report: &CutReport, loss: PowerLoss) -> Value {
    let seed = match loss {
        PowerLoss::Torn { seed } => Some(seed),
        PowerLoss::DropUnflushed => None,
    };
    json!({
        "cut": report.number,
        "took_ms": report.took.as_secs_f64() * 1e3,
        "replayed": report.replayed,
        "torn": seed.is_some(),
        "seed": seed,
        "device": {
            "sectors_unflushed": report.device.sectors_unflushed,
            "sectors_kept": report.device.sectors_kept,
            "sectors_torn": report.device.sectors_torn,
            "flushes_dropped": report.device.flushes_dropped,
        },
        "lost": unsynced_json(&report.lost),
    })
}

/// `power_cut`: cuts the power and answers once the mount serves the state
/// after the crash: `{cut, took_ms, replayed, torn, seed, device
/// {sectors_unflushed, sectors_kept, sectors_torn, flushes_dropped}, lost
/// {unsynced_json}}`.
pub fn power_cut(power: Option<&PowerSwitch>, torn: bool, seed: u64) -> Response {
    let Some(power) = power else {
        return not_crashable("a power cut");
    };
    let loss = if torn {
        PowerLoss::Torn { seed }
    } else {
        PowerLoss::DropUnflushed
    };
    match power.cut(loss) {
        Ok(report) => Response::success(cut_report_json(&report, loss)),
        Err(CutError::Unmounting) => Response::failure(
            ErrorKind::Failed,
            CutError::Unmounting.to_string(),
            Some(libc::ESHUTDOWN),
        ),
        Err(error) => Response::failure(ErrorKind::Failed, error.to_string(), Some(libc::EIO)),
    }
}
