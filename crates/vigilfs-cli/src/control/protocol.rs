//! The control protocol: one JSON request line, one JSON response line.
//!
//! Requests (`command` names the operation):
//!
//! ```text
//! {"command":"status"}
//! {"command":"sync"}
//! {"command":"freeze"}
//! {"command":"thaw"}
//! {"command":"shutdown","flush":true}
//! {"command":"inject_add","rules":["fail op=write class=data errno=EIO skip=0"]}
//! {"command":"inject_remove","id":3}
//! {"command":"inject_clear"}
//! {"command":"inject_list"}
//! {"command":"notify_failure","offset":N,"length":N,"origin":"TEXT"}   (origin optional)
//! {"command":"owners","offset":N,"length":N}
//! {"command":"scrub","rate":BYTES_PER_SECOND,"restart":false}          (rate optional)
//! {"command":"metrics"}
//! {"command":"events","since":0,"follow":false,"mode":"distinct"}
//! {"command":"fault_log","after":0}
//! {"command":"drop_flushes","enabled":true}                             (crashable mounts)
//! {"command":"unsynced"}
//! {"command":"power_cut","torn":false,"seed":1}                         (crashable mounts)
//! {"command":"reconfigure","errors":"panic","cache_bytes":N,
//!  "dirty_limit_bytes":N,"writeback_interval_micros":N,"read_only":B,
//!  "atime":"noatime","directory_atime":B}                             (each optional)
//! {"command":"make_writable"}                          (a read-only mount: remount,rw)
//! {"command":"identify"}
//! ```
//!
//! `identify` answers `{"device":"MAJ:MIN"|null,"mountpoint":PATH,"pid":N}`:
//! the device number of the FUSE mount the server serves (null before it
//! is mounted and once it is unmounted: the kernel gives the number to the
//! next mount). Socket names follow mount point paths, which another mount
//! can come to show, so a client checks with it that the server it reached
//! serves the filesystem the mount table shows where it asked.
//!
//! `events` is answered by one response line (`{"stream":true,
//! "ephemeral_from":ID|null}`: from ID on, the ids are this mount's only,
//! the log keeping nothing, so none is a place to resume from) and then a
//! stream: one JSON event per line (the form in [`super::event_json`]), ended by
//! `{"end":"history"|"unmount"|"terminal"|"restarted"}` (the history is
//! read, the mount is gone, its terminal event was sent, or a power cut
//! replaced the engine: follow again from the last id); the server closes
//! after it. A stream that is not read for [`super::stream::STALL_LIMIT`] is cut.
//!
//! Fault rules travel in the engine's one-line text form (see
//! `vigilfs::device::FaultRule`, and `vigilfs::fs::faults::FileRule` for
//! rules aimed at files and operations, which start with `file`), so the
//! wire format is the one `status` prints. `power_cut` answers once the
//! mount serves the state after the crash. Responses:
//!
//! ```text
//! {"ok":true,"result":VALUE}
//! {"ok":false,"error":{"kind":"refused"|"bad_request"|"failed"|"busy","message":"...","errno":5}}
//! ```
//!
//! `busy`: the server has as many connections open as it serves at once
//! and answered this one only to say so; trying again later may work.
//!
//! Unknown fields are ignored (a newer client may send more). `status`,
//! `metrics`, `inject_list` and `identify` are open to everyone; `events` (it shows
//! file names) to root, the user who mounted and the members of the mount's
//! `events_group`; the others only to root and the user who mounted
//! (`refused` otherwise) — `owners`, `unsynced` and `fault_log` too,
//! though they change nothing: they name files in directories the caller
//! may not be allowed to read.
//! `scrub` answers when the scrub ends; a client that goes away stops it
//! (the next scrub resumes there).

use serde::{Deserialize, Serialize};

/// Longest request line the server reads.
pub const MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// The status report (consumes no error).
    Status,
    /// syncfs as a new opener: the filesystem writeback error nobody was
    /// told of yet, if any.
    Sync,
    /// Freeze the filesystem.
    Freeze,
    /// Thaw it.
    Thaw,
    /// Shut it down.
    Shutdown {
        /// Write back and flush first.
        flush: bool,
    },
    /// Add fault rules (text form); the result lists their ids.
    InjectAdd {
        /// One rule per entry (none: only `drop_caches`).
        rules: Vec<String>,
        /// Then drop the clean cached data, the engine's and the kernel's.
        #[serde(default)]
        drop_caches: bool,
    },
    /// Remove one rule.
    InjectRemove {
        /// Its id.
        id: u64,
    },
    /// Remove every rule.
    InjectClear,
    /// List the rules.
    InjectList,
    /// A failed device range to attribute and contain.
    NotifyFailure {
        /// First failed byte of the device.
        offset: u64,
        /// Bytes failed.
        length: u64,
        /// Who reported it (free text).
        #[serde(default)]
        origin: Option<String>,
    },
    /// Who owns a device range.
    Owners {
        /// First byte of the device.
        offset: u64,
        /// Bytes.
        length: u64,
    },
    /// Scrub the filesystem; answered when it ends.
    Scrub {
        /// Most bytes per second.
        #[serde(default)]
        rate: Option<u64>,
        /// Start over rather than resume.
        #[serde(default)]
        restart: bool,
    },
    /// The Prometheus text exposition, once.
    Metrics,
    /// The event stream.
    Events {
        /// Events after this id (0: all the log holds).
        #[serde(default)]
        since: u64,
        /// Go on with live events until the mount's terminal event.
        #[serde(default)]
        follow: bool,
        /// How error events are delivered.
        #[serde(default)]
        mode: EventsMode,
    },
    /// The fault log after a sequence number (a batch; ask again from
    /// `next` for more).
    FaultLog {
        /// Entries after this sequence number (0: all the log holds).
        #[serde(default)]
        after: u64,
    },
    /// Make the device acknowledge flushes without keeping anything (a
    /// lying disk), or stop.
    DropFlushes {
        /// Drop them from now on.
        enabled: bool,
    },
    /// What a power cut would lose now.
    Unsynced,
    /// Cut the power; answered once the mount serves the state after the
    /// crash.
    PowerCut {
        /// Tear the unflushed writes (sectors survive in part) instead of
        /// losing them all.
        #[serde(default)]
        torn: bool,
        /// Seed of a torn loss's choices.
        #[serde(default = "default_seed")]
        seed: u64,
    },
    /// Change what a remount may change (`mount -o remount,errors=...`);
    /// what is not given stays.
    Reconfigure {
        /// `continue`, `remount-ro` or `panic`.
        #[serde(default)]
        errors: Option<String>,
        /// The page cache's budget.
        #[serde(default)]
        cache_bytes: Option<u64>,
        /// The dirty limit.
        #[serde(default)]
        dirty_limit_bytes: Option<u64>,
        /// The background writeback interval.
        #[serde(default)]
        writeback_interval_micros: Option<u64>,
        /// The kernel's read-only flag changed: `true` writes everything
        /// back and makes it durable before the answer.
        #[serde(default)]
        read_only: Option<bool>,
        /// When reads update access times: `relatime`, `strictatime` or
        /// `noatime`.
        #[serde(default)]
        atime: Option<String>,
        /// Whether listings update directories' access times.
        #[serde(default)]
        directory_atime: Option<bool>,
    },
    /// Make a read-only mount writable (`mount -o remount,rw`): the daemon
    /// opens its image for writing and does what a read-write mount does
    /// at mount. Answered once writers may enter; nothing to do for a
    /// mount that may write already.
    MakeWritable,
    /// Which FUSE mount the server serves (see the module comment).
    Identify,
}

fn default_seed() -> u64 {
    1
}

/// How a listener receives error events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventsMode {
    /// Every event as recorded (errors equal to an unread one are already
    /// merged into it).
    #[default]
    Distinct,
    /// Consecutive error events this listener had not read yet are folded
    /// into one (count summed, first error kept, last updated, the files
    /// they name counted), as fanotify's single pending FS_ERROR event.
    Merge,
}

impl Request {
    /// Whether only root and the mount's owner may make the request: it
    /// changes the mount, or it names files (the fault rules' paths and
    /// their log). Status shows others the rules with their paths hidden.
    pub fn needs_owner(&self) -> bool {
        !matches!(
            self,
            Request::Status | Request::Metrics | Request::Events { .. } | Request::Identify
        )
    }

    /// What the request does, as a verb phrase for messages ("only root
    /// may ...").
    pub fn action(&self) -> &'static str {
        match self {
            Request::Status => "read the status",
            Request::Sync => "sync",
            Request::Freeze => "freeze",
            Request::Thaw => "thaw",
            Request::Shutdown { .. } => "shut down",
            Request::Metrics => "read the metrics",
            Request::Events { .. } => "listen to events",
            Request::InjectAdd { .. } | Request::InjectRemove { .. } | Request::InjectClear => {
                "change fault rules"
            }
            Request::InjectList => "list fault rules",
            Request::NotifyFailure { .. } => "report a media failure",
            Request::Owners { .. } => "look up who owns blocks",
            Request::Scrub { .. } => "scrub",
            Request::FaultLog { .. } => "read the fault log",
            Request::DropFlushes { .. } => "drop flushes",
            Request::Unsynced => "list unsynced changes",
            Request::PowerCut { .. } => "cut the power",
            Request::Reconfigure { .. } => "reconfigure",
            Request::MakeWritable => "make the mount writable",
            Request::Identify => "identify the mount",
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The caller may not do this.
    Refused,
    /// The request could not be understood.
    BadRequest,
    /// The filesystem reported an error.
    Failed,
    /// Too many connections are open; not served.
    Busy,
}

/// A failed request's error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What sort of failure.
    pub kind: ErrorKind,
    /// One line for the user.
    pub message: String,
    /// The errno, when the filesystem reported one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The result of a successful request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// The error of a failed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReply>,
}

impl Response {
    /// Success with a result.
    pub fn success(result: serde_json::Value) -> Response {
        Response {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// Failure.
    pub fn failure(kind: ErrorKind, message: impl Into<String>, errno: Option<i32>) -> Response {
        Response {
            ok: false,
            result: None,
            error: Some(ErrorReply {
                kind,
                message: message.into(),
                errno,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let shutdown = Request::Shutdown { flush: false };
        assert_eq!(
            serde_json::to_string(&shutdown).unwrap(),
            r#"{"command":"shutdown","flush":false}"#
        );
        let parsed: Request =
            serde_json::from_str(r#"{"command":"inject_remove","id":7}"#).unwrap();
        assert_eq!(parsed, Request::InjectRemove { id: 7 });
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"command":"status"}"#).unwrap(),
            Request::Status
        );
    }

    #[test]
    fn malformed_requests_do_not_parse() {
        for text in [
            "",
            "{",
            r#"{"command":"format_disk"}"#,
            r#"{"command":"shutdown"}"#,
            r#"{"command":"inject_remove","id":"seven"}"#,
            "[1,2]",
        ] {
            assert!(serde_json::from_str::<Request>(text).is_err(), "{text}");
        }
    }

    #[test]
    fn only_status_and_listing_are_open_to_everyone() {
        assert!(!Request::Status.needs_owner());
        assert!(Request::InjectList.needs_owner(), "rules name files");
        assert!(Request::Sync.needs_owner());
        assert!(Request::InjectClear.needs_owner());
        assert!(Request::Shutdown { flush: true }.needs_owner());
        assert!(Request::Owners {
            offset: 0,
            length: 1
        }
        .needs_owner());
        assert!(Request::Scrub {
            rate: None,
            restart: false
        }
        .needs_owner());
    }

    #[test]
    fn media_requests_have_a_stable_wire_form() {
        let parsed: Request =
            serde_json::from_str(r#"{"command":"notify_failure","offset":4096,"length":512}"#)
                .unwrap();
        assert_eq!(
            parsed,
            Request::NotifyFailure {
                offset: 4096,
                length: 512,
                origin: None
            }
        );
        assert_eq!(
            serde_json::to_string(&Request::Scrub {
                rate: Some(1 << 20),
                restart: true
            })
            .unwrap(),
            r#"{"command":"scrub","rate":1048576,"restart":true}"#
        );
        assert!(
            serde_json::from_str::<Request>(r#"{"command":"owners","offset":-1,"length":1}"#)
                .is_err()
        );
    }

    #[test]
    fn crash_lab_requests_have_a_stable_wire_form() {
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"command":"power_cut"}"#).unwrap(),
            Request::PowerCut {
                torn: false,
                seed: 1
            }
        );
        assert_eq!(
            serde_json::to_string(&Request::FaultLog { after: 9 }).unwrap(),
            r#"{"command":"fault_log","after":9}"#
        );
        assert!(serde_json::from_str::<Request>(r#"{"command":"drop_flushes"}"#).is_err());
        for request in [
            Request::Unsynced,
            Request::FaultLog { after: 0 },
            Request::PowerCut {
                torn: true,
                seed: 3,
            },
        ] {
            assert!(request.needs_owner(), "{request:?} is for the owner");
        }
    }

    #[test]
    fn responses_round_trip() {
        let failure = Response::failure(ErrorKind::Refused, "no", None);
        let text = serde_json::to_string(&failure).unwrap();
        assert_eq!(
            text,
            r#"{"ok":false,"error":{"kind":"refused","message":"no"}}"#
        );
        assert_eq!(serde_json::from_str::<Response>(&text).unwrap(), failure);
    }
}
