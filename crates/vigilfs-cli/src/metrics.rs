//! Prometheus metrics of a mount: what `-o metrics=ADDR:PORT` serves at
//! `/metrics` and `vigilfs metrics MOUNTPOINT` prints once (for
//! node_exporter's textfile collector).
//!
//! The text exposition (format 0.0.4) is written by the `prometheus-client`
//! crate from a snapshot taken at each scrape (the engine keeps the
//! numbers; nothing here counts). Names follow Prometheus conventions: the
//! `vigilfs_` prefix, base units (bytes, seconds), `_total` on counters
//! (added by the encoder). The list:
//!
//! ```text
//! vigilfs_errors_total{kind}             errors recorded, by what they hit (persistent across
//!                                        mounts): a lost b-tree node is `metadata`, a lost
//!                                        journal block `journal`, other media failures `media`
//! vigilfs_events_total                   events recorded this mount
//! vigilfs_events_lost_total              errors counted only in LOST events this mount
//! vigilfs_event_log_write_failures_total failed writes of the event log this mount
//! vigilfs_event_newest_id                newest event id
//! vigilfs_state{state}                   1 for the state the filesystem is in: running,
//!                                        frozen, read_only, shut_down; 0 for the others
//! vigilfs_size_bytes, vigilfs_free_bytes data region size and free space
//! vigilfs_available_bytes                what new data may still take (df's available:
//!                                        free space less the metadata reserve, dirty
//!                                        data's promised blocks and dirty b-tree nodes)
//! vigilfs_bad_blocks                     blocks marked bad
//! vigilfs_dirty_bytes                    dirty data not yet written back
//! vigilfs_journal_free_bytes             free journal space
//! vigilfs_journal_sequence               the journal's next sequence number
//! vigilfs_journal_failed                 1 once the journal failed: every metadata change
//!                                        fails until the next mount (under errors=continue
//!                                        the state stays running)
//! vigilfs_fault_rules                    fault rules active
//! vigilfs_fsync_duration_seconds         fsync latency histogram (this mount)
//! vigilfs_writeback_bytes_total          bytes written back durably (this mount)
//! vigilfs_writeback_errors_total         writeback errors (persistent, = errors{kind="writeback"})
//! vigilfs_media_healed_blocks_total      blocks a media failure hit whose data was saved (this mount)
//! vigilfs_media_lost_blocks_total        blocks a media failure hit whose data was lost (this mount)
//! vigilfs_media_notices_dropped_total    failure notices dropped: the queue was full (this mount)
//! vigilfs_lost_data_runs                 file ranges whose data is lost until rewritten (now)
//! vigilfs_lost_mapped_bytes              bytes of shared mappings whose write-back was refused,
//!                                        lost until written again (now, this mount)
//! vigilfs_scrub_running                  1 while a scrub runs
//! vigilfs_scrub_last_end_timestamp_seconds when the last scrub ended (absent before the first)
//! vigilfs_scrub_last_complete            1 if the last scrub reached the end (absent before the first)
//! vigilfs_scrub_last_findings            failures the last scrub found (absent before the first)
//! ```
//!
//! The media and scrub families are what an alert wants: data lost, a
//! notice dropped, a scrub that has not ended for too long.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use vigilfs::device::FaultPlan;
use vigilfs::format::ErrorKind;
use vigilfs::fs::{latency, Filesystem, LifeState};

/// The `Content-Type` of what [`render`] makes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Everything one scrape shows, read from the engine at once.
#[derive(Debug)]
struct Snapshot {
    errors_by_kind: Vec<(&'static str, u64)>,
    events: u64,
    events_lost: u64,
    log_failures: u64,
    newest_id: u64,
    state: &'static str,
    size_bytes: u64,
    free_bytes: u64,
    available_bytes: u64,
    bad_blocks: u64,
    dirty_bytes: u64,
    journal_free_bytes: u64,
    journal_sequence: u64,
    journal_failed: bool,
    fault_rules: u64,
    fsync: latency::LatencySnapshot,
    writeback_bytes: u64,
    writeback_errors: u64,
    healed_blocks: u64,
    lost_blocks: u64,
    notices_dropped: u64,
    lost_data_runs: u64,
    lost_mapped_bytes: u64,
    scrub_running: bool,
    /// The last scrub that ended: when (seconds since the epoch), whether
    /// it reached the end, and what it found.
    last_scrub: Option<(u64, bool, u64)>,
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> std::fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        {
            let mut errors = encoder.encode_descriptor(
                "vigilfs_errors",
                "Errors the filesystem recorded, by what they hit (a lost b-tree node is metadata; kept in the image across mounts)",
                None,
                MetricType::Counter,
            )?;
            for (kind, count) in &self.errors_by_kind {
                errors
                    .encode_family(&[("kind", *kind)])?
                    .encode_counter::<NoLabelSet, _, u64>(count, None)?;
            }
        }
        counter(
            &mut encoder,
            "vigilfs_events",
            "Events recorded this mount",
            self.events,
        )?;
        counter(
            &mut encoder,
            "vigilfs_events_lost",
            "Errors counted only in LOST events this mount (no id or room for their own; \
             not the ids skipped after an unclean stop, whose errors are unknown)",
            self.events_lost,
        )?;
        counter(
            &mut encoder,
            "vigilfs_event_log_write_failures",
            "Failed writes of the event log region this mount",
            self.log_failures,
        )?;
        gauge(
            &mut encoder,
            "vigilfs_event_newest_id",
            "The newest event id",
            signed(self.newest_id),
        )?;
        {
            let mut state = encoder.encode_descriptor(
                "vigilfs_state",
                "1 for the state the filesystem is in, 0 for the others",
                None,
                MetricType::Gauge,
            )?;
            for name in ["running", "frozen", "read_only", "shut_down"] {
                state
                    .encode_family(&[("state", name)])?
                    .encode_gauge(&i64::from(self.state == name))?;
            }
        }
        gauge(
            &mut encoder,
            "vigilfs_size_bytes",
            "Size of the data region",
            signed(self.size_bytes),
        )?;
        gauge(
            &mut encoder,
            "vigilfs_free_bytes",
            "Free space in the data region, with blocks freed and awaiting the journal \
             commit that records it (what new data may take: vigilfs_available_bytes)",
            signed(self.free_bytes),
        )?;
        gauge(
            &mut encoder,
            "vigilfs_available_bytes",
            "What new data may still take, as df reports available",
            signed(self.available_bytes),
        )?;
        gauge(
            &mut encoder,
            "vigilfs_bad_blocks",
            "Blocks marked bad (never allocated)",
            signed(self.bad_blocks),
        )?;
        gauge(
            &mut encoder,
            "vigilfs_dirty_bytes",
            "Dirty data not yet written back",
            signed(self.dirty_bytes),
        )?;
        gauge(
            &mut encoder,
            "vigilfs_journal_free_bytes",
            "Free journal space",
            signed(self.journal_free_bytes),
        )?;
        gauge(
            &mut encoder,
            "vigilfs_journal_sequence",
            "The journal's next sequence number",
            signed(self.journal_sequence),
        )?;
        gauge(
            &mut encoder,
            "vigilfs_journal_failed",
            "1 once the journal failed: every metadata change fails until the next mount",
            i64::from(self.journal_failed),
        )?;
        gauge(
            &mut encoder,
            "vigilfs_fault_rules",
            "Fault injection rules active",
            signed(self.fault_rules),
        )?;
        {
            // Each bucket's own count: the encoder sums them into the
            // cumulative `le` series itself (summed here too, every
            // bucket counted the ones below it again, and `+Inf` was many
            // times `_count`). The last counter is those above every bound.
            let overflow = self
                .fsync
                .counts
                .get(latency::BOUNDS.len())
                .copied()
                .unwrap_or(0);
            let buckets: Vec<(f64, u64)> = latency::BOUNDS
                .iter()
                .copied()
                .zip(self.fsync.counts.iter().copied())
                .chain(std::iter::once((f64::INFINITY, overflow)))
                .collect();
            encoder
                .encode_descriptor(
                    "vigilfs_fsync_duration_seconds",
                    "How long fsync took, this mount",
                    None,
                    MetricType::Histogram,
                )?
                .encode_histogram::<NoLabelSet>(
                    self.fsync.sum_seconds,
                    self.fsync.count(),
                    &buckets,
                    None,
                )?;
        }
        counter(
            &mut encoder,
            "vigilfs_writeback_bytes",
            "Bytes written back durably this mount",
            self.writeback_bytes,
        )?;
        counter(
            &mut encoder,
            "vigilfs_writeback_errors",
            "Writeback errors (kept in the image across mounts)",
            self.writeback_errors,
        )?;
        self.encode_media(&mut encoder)
    }
}

impl Snapshot {
    fn encode_media(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        counter(
            encoder,
            "vigilfs_media_healed_blocks",
            "Blocks a media failure hit whose data was saved to new blocks, this mount",
            self.healed_blocks,
        )?;
        counter(
            encoder,
            "vigilfs_media_lost_blocks",
            "Blocks a media failure hit whose data was lost, this mount",
            self.lost_blocks,
        )?;
        counter(
            encoder,
            "vigilfs_media_notices_dropped",
            "Media failure notices dropped because the queue was full, this mount",
            self.notices_dropped,
        )?;
        gauge(
            encoder,
            "vigilfs_lost_data_runs",
            "File ranges whose data is lost (reads fail with EIO) until rewritten",
            signed(self.lost_data_runs),
        )?;
        gauge(
            encoder,
            "vigilfs_lost_mapped_bytes",
            "Bytes written but lost before reaching the device (a refused write-back of a \
             shared mapping, or writeback failing at an unmount): reads fail until written \
             again",
            signed(self.lost_mapped_bytes),
        )?;
        gauge(
            encoder,
            "vigilfs_scrub_running",
            "1 while a scrub runs",
            i64::from(self.scrub_running),
        )?;
        if let Some((ended, complete, findings)) = self.last_scrub {
            gauge(
                encoder,
                "vigilfs_scrub_last_end_timestamp_seconds",
                "When the last scrub ended, in seconds since the epoch",
                signed(ended),
            )?;
            gauge(
                encoder,
                "vigilfs_scrub_last_complete",
                "1 if the last scrub read everything, 0 if it was stopped",
                i64::from(complete),
            )?;
            gauge(
                encoder,
                "vigilfs_scrub_last_findings",
                "Failures the last scrub found",
                signed(findings),
            )?;
        }
        Ok(())
    }
}

/// The metrics of `fs` (and its fault plan) as Prometheus text.
pub fn render(fs: &Filesystem, plan: &FaultPlan) -> String {
    let status = fs.status();
    let block_size = u64::from(fs.statfs().map_or(4096, |statfs| statfs.block_size));
    let record = &status.error_record;
    let state = match status.state {
        LifeState::Running => "running",
        LifeState::Frozen => "frozen",
        LifeState::ReadOnly(_) => "read_only",
        LifeState::ShutDown(_) => "shut_down",
    };
    let snapshot = Snapshot {
        errors_by_kind: ErrorKind::ALL
            .iter()
            .map(|kind| (kind.name(), record.counter(*kind).count))
            .collect(),
        events: status.events.records,
        events_lost: status.events.lost_errors,
        log_failures: status.events.write_failures,
        newest_id: status.events.newest_id,
        state,
        size_bytes: status.total_blocks * block_size,
        free_bytes: (status.space.free_blocks + status.space.pending_blocks) * block_size,
        available_bytes: status.space.data_available * block_size,
        bad_blocks: status.space.bad_blocks,
        dirty_bytes: status.dirty_bytes,
        journal_free_bytes: status.journal.free_blocks * block_size,
        journal_sequence: status.journal.next_seq,
        journal_failed: status.journal.failed,
        fault_rules: (plan.rules().len() + fs.file_rules().len()) as u64,
        fsync: status.fsync_latency.clone(),
        writeback_bytes: status.writeback_bytes,
        writeback_errors: record.counter(ErrorKind::Writeback).count,
        healed_blocks: status.media.healed_blocks,
        lost_blocks: status.media.lost_blocks,
        notices_dropped: status.media.notices.overflowed,
        lost_data_runs: status.media.poisoned_runs,
        lost_mapped_bytes: status.lost_mapped_bytes,
        scrub_running: status.media.scrub.running.is_some(),
        last_scrub: status
            .media
            .scrub
            .last
            .as_ref()
            .map(|(summary, ended)| (*ended, summary.complete, summary.findings)),
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
    text
}
