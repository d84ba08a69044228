//! Carrying out one request a connection has read: who may ask for it,
//! then the engine call and the response.
//!
//! A change is made only for root and the user who mounted (a sync for
//! anyone when others may use the mount), and only while its client still
//! waits: a change nobody hears of is not made. The filesystem is held
//! just for the call, and a panic in it becomes an error response.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};
use vigilfs::device::ByteRange;
use vigilfs::failure::{FailureError, Origin};
use vigilfs::format::ErrorsPolicy;
use vigilfs::fs::{AtimeUpdates, Filesystem, FsError, LifeState, ScrubRequest, SettingsChange};
use vigilfs::inode::FileError;

use super::Context;
use crate::control::media_report::{failure_report_json, owner_json, scrub_summary_json};
use crate::control::protocol::{ErrorKind, Request, Response};
use crate::control::report::{status_json, RulePaths};
use crate::control::{describe_errno, faults, power};
use crate::mountinfo::device_name;
use crate::power_cut::PowerSwitch;
use crate::writable_image::WritableImage;

pub(super) fn respond(
    line: &[u8],
    uid: Option<u32>,
    context: &Context,
    stream: &UnixStream,
) -> Response {
    let request: Request = match serde_json::from_slice(line) {
        Ok(request) => request,
        Err(error) => {
            return Response::failure(
                ErrorKind::BadRequest,
                format!("malformed request: {error}"),
                None,
            )
        }
    };
    let allowed = |uid: u32| uid == 0 || uid == context.owner_uid;
    let privileged = uid.is_some_and(allowed);
    let open_to_all = matches!(request, Request::Sync) && context.others_may_sync;
    if request.needs_owner() && !privileged && !open_to_all {
        let who = match uid {
            Some(uid) => format!("uid {uid}"),
            None => "a client whose uid is unknown".to_string(),
        };
        return Response::failure(
            ErrorKind::Refused,
            format!(
                "permission denied: only root and uid {} (who mounted {}) may {}; you are {who}",
                context.owner_uid,
                context.mountpoint.display(),
                request.action()
            ),
            Some(libc::EPERM),
        );
    }
    if request.needs_owner() && !client_waiting(stream) {
        crate::daemon_log::log(&format!(
            "a request to {} whose client had left was not carried out",
            request.action()
        ));
        return Response::failure(
            ErrorKind::Failed,
            "the client left before the request was carried out: nothing was done",
            Some(libc::ECONNABORTED),
        );
    }
    // The filesystem is held only while the request executes.
    let fs = match context.engine.current() {
        Some(fs) if !context.stopping.load(Ordering::Acquire) => fs,
        _ => {
            return Response::failure(
                ErrorKind::Failed,
                "the filesystem is being unmounted",
                Some(libc::ESHUTDOWN),
            )
        }
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        execute(request, &fs, context, stream, Client { uid, privileged })
    }));
    outcome.unwrap_or_else(|_| {
        Response::failure(
            ErrorKind::Failed,
            "internal error while serving the request",
            None,
        )
    })
}

/// One line for an engine error: "writeback error: Input/output error
/// (EIO)".
pub fn fs_error_message(error: &FsError) -> String {
    match error {
        FsError::File(FileError::Writeback(errno)) => {
            format!("writeback error: {}", describe_errno(errno.get()))
        }
        other => format!("{other}: {}", describe_errno(other.errno())),
    }
}

fn engine_result(result: Result<(), FsError>, fs: &Filesystem) -> Response {
    match result {
        Ok(()) => Response::success(json!({ "state": fs.status().state.name() })),
        Err(error) => Response::failure(
            ErrorKind::Failed,
            fs_error_message(&error),
            Some(error.errno()),
        ),
    }
}

/// Whether the client at the other end of `stream` is still there: it
/// has not closed the connection (a client that only shut down its
/// sending side, having sent its request, still waits for the answer). A
/// long request it no longer waits for stops; a change it no longer waits
/// for is not made (it may have given up on a stopped mount process, and
/// nobody would know of the change).
fn client_waiting(stream: &UnixStream) -> bool {
    let mut poll = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: one pollfd for the connection's open socket, not waiting.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    // A Unix stream socket reports POLLHUP once the peer closed it.
    !(ready > 0 && poll.revents & (libc::POLLHUP | libc::POLLERR) != 0)
}

/// The device bytes `offset..offset + length`, refused (EINVAL) when the
/// sum overflows; the engine refuses what lies outside the device.
fn device_range(offset: u64, length: u64) -> Result<ByteRange, Response> {
    match offset.checked_add(length) {
        Some(end) => Ok(ByteRange::new(offset, end)),
        None => Err(Response::failure(
            ErrorKind::BadRequest,
            format!("offset {offset} + length {length} overflows"),
            Some(libc::EINVAL),
        )),
    }
}

/// A failure of owners or notify-failure: a range the device does not
/// hold is a bad request (exit status 2), not a media failure.
fn range_failed(error: &FsError) -> Response {
    match error {
        FsError::Failure(
            range @ (FailureError::OutOfDevice { .. } | FailureError::TooLong { .. }),
        ) => Response::failure(ErrorKind::BadRequest, range.to_string(), Some(libc::EINVAL)),
        _ => failed(error),
    }
}

fn failed(error: &FsError) -> Response {
    Response::failure(
        ErrorKind::Failed,
        fs_error_message(error),
        Some(error.errno()),
    )
}

/// Who sent a request.
#[derive(Clone, Copy)]
struct Client {
    /// Its uid, when known.
    uid: Option<u32>,
    /// Root or the mount's owner.
    privileged: bool,
}

/// Serves `request` from `client`.
fn execute(
    request: Request,
    fs: &Filesystem,
    context: &Context,
    stream: &UnixStream,
    client: Client,
) -> Response {
    let privileged = client.privileged;
    let plan = &context.plan;
    let power = context.power.as_deref();
    match request {
        Request::NotifyFailure {
            offset,
            length,
            origin,
        } => {
            let range = match device_range(offset, length) {
                Ok(range) => range,
                Err(response) => return response,
            };
            let origin = Origin::operator(origin.as_deref().unwrap_or("vigilfs notify-failure"));
            match fs.notify_failure(range, origin) {
                Ok(report) => Response::success(failure_report_json(&report)),
                Err(error) => range_failed(&error),
            }
        }
        Request::Owners { offset, length } => {
            let range = match device_range(offset, length) {
                Ok(range) => range,
                Err(response) => return response,
            };
            match fs.owners(range, true) {
                Ok(owners) => Response::success(json!({
                    "device_offset": range.start,
                    "device_length": range.len(),
                    "owners": owners.iter().map(owner_json).collect::<Vec<_>>(),
                })),
                Err(error) => range_failed(&error),
            }
        }
        Request::Scrub { rate, restart } => {
            let request = ScrubRequest { rate, restart };
            let stopping = &context.stopping;
            let mut still_wanted = |_: &vigilfs::scrub::Progress| {
                !stopping.load(Ordering::Acquire) && client_waiting(stream)
            };
            match fs.scrub(request, &mut still_wanted) {
                Ok(summary) => Response::success(scrub_summary_json(&summary)),
                Err(error) => failed(&error),
            }
        }
        Request::Identify => Response::success(json!({
            "device": context
                .device
                .get()
                .and_then(|session| session.serving_device())
                .map(device_name),
            "mountpoint": context.mountpoint.display().to_string(),
            "pid": std::process::id(),
        })),
        Request::Status => {
            let paths = if privileged {
                RulePaths::Shown
            } else {
                RulePaths::Hidden
            };
            let mut status = status_json(fs, plan, &context.extra, paths);
            status["crash_lab"] = crash_lab_json(power);
            Response::success(status)
        }
        // Another user hears the error too, but cannot take it from root's
        // or the owner's next sync (review 32).
        Request::Sync if privileged => engine_result(fs.syncfs_once(), fs),
        Request::Sync => engine_result(fs.syncfs_for_user(client.uid.unwrap_or(u32::MAX)), fs),
        Request::Freeze => {
            let frozen = fs.freeze();
            // A freeze nobody hears of would hold every writer until
            // someone thought of a thaw: undone if its client left while
            // it waited for writeback.
            if frozen.is_ok() && !client_waiting(stream) {
                let _ = fs.thaw();
                crate::daemon_log::log(
                    "a freeze whose client left before it was done was undone (thawed)",
                );
            }
            engine_result(frozen, fs)
        }
        Request::Thaw => engine_result(fs.thaw(), fs),
        Request::Shutdown { flush } => {
            // A second shutdown does nothing, flushes nothing: a script
            // must not read success from `--flush` (review 32).
            if let LifeState::ShutDown(why) = fs.status().state {
                let already = if why.starts_with("shut down") {
                    format!("already {why}")
                } else {
                    format!("already shut down ({why})")
                };
                return Response::failure(
                    ErrorKind::Failed,
                    format!("{already}: nothing was done, nothing flushed"),
                    Some(libc::EINVAL),
                );
            }
            let flushed = fs.shutdown(flush);
            // Why it is shut down: what the flush could do, or an earlier
            // shutdown's reason.
            let reason = match fs.status().state {
                LifeState::ShutDown(why) => Some(why),
                _ => None,
            };
            match flushed {
                Ok(()) => {
                    Response::success(json!({ "state": "shut-down", "state_reason": reason }))
                }
                // Shut down, but data was lost: not a success to a script.
                Err(error) => Response::failure(
                    ErrorKind::Failed,
                    reason.unwrap_or_else(|| error.to_string()),
                    Some(error.errno()),
                ),
            }
        }
        Request::Metrics => Response::success(json!({
            "text": crate::metrics::render(fs, plan),
        })),
        Request::Events { .. } => Response::failure(
            ErrorKind::BadRequest,
            "events are streamed, not answered",
            None,
        ),
        Request::InjectAdd { rules, drop_caches } => faults::add(fs, plan, &rules, drop_caches),
        Request::InjectRemove { id } => faults::remove(fs, plan, id),
        Request::InjectClear => faults::clear(fs, plan, power),
        Request::InjectList => faults::list(fs, plan, power),
        Request::FaultLog { after } => faults::log(plan, after),
        Request::DropFlushes { enabled } => faults::drop_flushes(fs, plan, power, enabled),
        Request::Unsynced => power::unsynced(fs, power),
        Request::PowerCut { torn, seed } => power::power_cut(power, torn, seed),
        Request::MakeWritable => make_writable(fs, context.image.as_deref()),
        Request::Reconfigure {
            errors,
            cache_bytes,
            dirty_limit_bytes,
            writeback_interval_micros,
            read_only,
            atime,
            directory_atime,
        } => {
            let change = match settings_change(
                errors.as_deref(),
                cache_bytes,
                dirty_limit_bytes,
                writeback_interval_micros,
                read_only,
                atime.as_deref(),
                directory_atime,
            ) {
                Ok(change) => change,
                Err(response) => return response,
            };
            // A crashable mount's later boots keep the change too.
            let changed = match power {
                Some(power) => power.reconfigure(&change),
                None => fs.reconfigure(&change),
            };
            match changed {
                Ok(()) => Response::success(json!({ "changed": change.to_string() })),
                Err(error) => Response::failure(
                    // A refused value, or writing back for a read-only
                    // remount failed.
                    if matches!(error, FsError::Invalid(_)) {
                        ErrorKind::BadRequest
                    } else {
                        ErrorKind::Failed
                    },
                    fs_error_message(&error),
                    Some(error.errno()),
                ),
            }
        }
    }
}

/// Makes a read-only mount writable (`remount,rw`).
fn make_writable(fs: &Filesystem, image: Option<&WritableImage>) -> Response {
    let made = match image {
        Some(image) => image.make_writable(fs),
        // A crashable mount: never read-only by its options, so only
        // asked while it may write (or after an error, refused by the
        // engine as for any mount).
        None => fs
            .make_writable()
            .map_err(|error| (fs_error_message(&error), error.errno())),
    };
    match made {
        Ok(()) => Response::success(json!({ "state": fs.status().state.name() })),
        Err((message, errno)) => Response::failure(ErrorKind::Failed, message, Some(errno)),
    }
}

/// The engine's change from a `reconfigure` request's fields.
#[allow(clippy::too_many_arguments)] // one per field of the request
fn settings_change(
    errors: Option<&str>,
    cache_bytes: Option<u64>,
    dirty_limit_bytes: Option<u64>,
    writeback_interval_micros: Option<u64>,
    read_only: Option<bool>,
    atime: Option<&str>,
    directory_atime: Option<bool>,
) -> Result<SettingsChange, Response> {
    let bad =
        |message: String| Response::failure(ErrorKind::BadRequest, message, Some(libc::EINVAL));
    let errors = errors
        .map(str::parse::<ErrorsPolicy>)
        .transpose()
        .map_err(bad)?;
    let atime = atime
        .map(str::parse::<AtimeUpdates>)
        .transpose()
        .map_err(bad)?;
    let writeback_interval = writeback_interval_micros.map(Duration::from_micros);
    Ok(SettingsChange {
        errors,
        cache_bytes,
        dirty_limit_bytes,
        writeback_interval,
        read_only,
        atime,
        directory_atime,
    })
}

/// The crash lab's part of a status report.
fn crash_lab_json(power: Option<&PowerSwitch>) -> Value {
    json!({
        "crashable": power.is_some(),
        "drop_flushes": power.is_some_and(PowerSwitch::drops_flushes),
        "unflushed_bytes": power.map(PowerSwitch::unflushed_bytes),
        "power_cuts": power.map(PowerSwitch::cuts),
        "failed_boot": power.and_then(PowerSwitch::failed_boot),
    })
}
