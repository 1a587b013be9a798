//! The raw log of a topic: its record batches and transaction control
//! markers (COMMIT/ABORT control batches), fetched read_uncommitted over a
//! plain blocking connection, and a read_committed view that applies the
//! markers itself, as Kafka defines read_committed.
//!
//! The tests read output with the Kafka client's own
//! `isolation.level=read_committed` (`common::read_topic`). This reader is
//! kept for what that client cannot show: how many transactions the fault
//! tests committed and aborted, and transactions left undecided in the log
//! (`read_log_stats`), and a check that the client's view equals the one
//! the markers give (`tests/raw_log.rs`). It also makes the suite's output
//! checks meaningful on tansu, whose Fetch responses list no aborted
//! transactions.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, BrokerId, FetchRequest, MetadataRequest, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;

/// Fetch versions this reader speaks: v4 brings isolation levels; from v13
/// on, topics are named by id instead of name.
const FETCH_VERSIONS: (i16, i16) = (4, 12);
/// Metadata versions this reader speaks (v1 and later have nullable racks and
/// the controller id; this reader needs only partition ids).
const METADATA_VERSIONS: (i16, i16) = (1, 12);
/// How much one fetch may bring back per partition.
const PARTITION_MAX_BYTES: i32 = 16 << 20;
/// Socket timeout for one request/response.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Control record types (the int16 after the version in a control key).
const CONTROL_ABORT: i16 = 0;
const CONTROL_COMMIT: i16 = 1;

/// One record as a read_committed consumer would see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Headers in order. The batch decoder keeps one value per header name,
    /// so a repeated name shows up once, with its last value.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// One record exactly as it is in the log, control records included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord {
    pub partition: i32,
    pub offset: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The record's batch has the transactional flag.
    pub transactional: bool,
    /// The record's batch has the control flag: this is a transaction marker
    /// (see [`RawRecord::control_type`]), not data.
    pub control: bool,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// What a control record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlType {
    /// The producer's open transaction is aborted.
    Abort,
    /// The producer's open transaction is committed.
    Commit,
    /// Another control type (e.g. KRaft's leader change), which ends no
    /// transaction.
    Other(i16),
}

impl RawRecord {
    /// The marker type of a control record (key: int16 version, int16
    /// type); `None` for data records.
    pub fn control_type(&self) -> Option<ControlType> {
        if !self.control {
            return None;
        }
        let key = self.key.as_deref().expect("control record has a key");
        assert!(key.len() >= 4, "control key too short: {key:?}");
        Some(match i16::from_be_bytes([key[2], key[3]]) {
            CONTROL_ABORT => ControlType::Abort,
            CONTROL_COMMIT => ControlType::Commit,
            other => ControlType::Other(other),
        })
    }

    fn committed(self) -> CommittedRecord {
        CommittedRecord {
            partition: self.partition,
            offset: self.offset,
            key: self.key,
            value: self.value,
            headers: self.headers,
        }
    }
}

/// What applying the control markers of a log did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Data records kept: non-transactional ones and those of committed
    /// transactions.
    pub committed: usize,
    /// Transactional records dropped because an ABORT marker ended their
    /// transaction.
    pub aborted: usize,
    /// Transactional records dropped because no marker ended their
    /// transaction before the end of the read.
    pub undecided: usize,
    /// COMMIT markers seen.
    pub commit_markers: usize,
    /// ABORT markers seen.
    pub abort_markers: usize,
    /// Each partition's high watermark as the last fetch reported it.
    pub high_watermarks: HashMap<i32, i64>,
}

/// Every record of `topic` (all partitions) from offset 0 to the
/// partition's high watermark, with records of aborted transactions removed
/// according to the control markers in the log itself (COMMIT keeps a
/// producer's pending transactional records, ABORT drops them; records still
/// pending at the end of the read are dropped as not committed;
/// non-transactional records are kept). Control records themselves are not
/// returned. Sorted by partition, then offset.
pub fn read_committed_raw(bootstrap: &str, topic: &str) -> Vec<CommittedRecord> {
    read_committed_with_stats(bootstrap, topic).0
}

/// [`read_committed_raw`] and what it dropped.
pub fn read_committed_with_stats(bootstrap: &str, topic: &str) -> (Vec<CommittedRecord>, LogStats) {
    let log = read_raw(bootstrap, topic);
    let (records, mut stats) = apply_markers(log.records);
    stats.high_watermarks = log.high_watermarks;
    (records, stats)
}

/// [`read_committed_raw`]'s count of what it kept and dropped.
pub fn read_log_stats(bootstrap: &str, topic: &str) -> LogStats {
    read_committed_with_stats(bootstrap, topic).1
}

/// A topic's log as fetched, read_uncommitted.
#[derive(Clone, Debug, Default)]
pub struct RawLog {
    /// Every record, control records included, by partition, then offset.
    pub records: Vec<RawRecord>,
    /// Each partition's high watermark as the last fetch reported it.
    pub high_watermarks: HashMap<i32, i64>,
    /// The Fetch version used.
    pub fetch_version: i16,
    /// The Metadata version used.
    pub metadata_version: i16,
}

/// Every record of `topic` (all partitions) as it is in the log, control
/// records and records of aborted transactions included: fetched
/// read_uncommitted from offset 0 until a fetch brings no further batch.
pub fn read_raw(bootstrap: &str, topic: &str) -> RawLog {
    let mut conn = Connection::open(bootstrap);
    let versions = conn.call(&ApiVersionsRequest::default(), 0);
    assert_eq!(versions.error_code, 0, "ApiVersions failed");
    let pick = |key: ApiKey, (min, max): (i16, i16)| {
        let api = versions
            .api_keys
            .iter()
            .find(|a| a.api_key == key as i16)
            .unwrap_or_else(|| panic!("broker does not support {key:?}"));
        let version = api.max_version.min(max);
        assert!(
            version >= min && version >= api.min_version,
            "broker supports {key:?} v{}..v{}, this reader v{min}..v{max}",
            api.min_version,
            api.max_version
        );
        version
    };
    let fetch_version = pick(ApiKey::Fetch, FETCH_VERSIONS);
    let metadata_version = pick(ApiKey::Metadata, METADATA_VERSIONS);

    let mut partitions = partitions(&mut conn, topic, metadata_version);
    partitions.sort_unstable();
    let mut log = RawLog {
        fetch_version,
        metadata_version,
        ..RawLog::default()
    };
    for partition in partitions {
        let (records, high_watermark) = read_partition(&mut conn, topic, partition, fetch_version);
        log.records.extend(records);
        log.high_watermarks.insert(partition, high_watermark);
    }
    log
}

/// Applies a log's control markers: keeps non-transactional records and
/// those of committed transactions, in offset order.
pub fn apply_markers(log: Vec<RawRecord>) -> (Vec<CommittedRecord>, LogStats) {
    let mut stats = LogStats::default();
    let mut kept: Vec<RawRecord> = Vec::new();
    // Open transactions' records, by partition and producer id.
    let mut pending: HashMap<(i32, i64), Vec<RawRecord>> = HashMap::new();
    for record in log {
        match record.control_type() {
            Some(ControlType::Commit) => {
                stats.commit_markers += 1;
                if let Some(records) = pending.remove(&(record.partition, record.producer_id)) {
                    kept.extend(records);
                }
            }
            Some(ControlType::Abort) => {
                stats.abort_markers += 1;
                if let Some(records) = pending.remove(&(record.partition, record.producer_id)) {
                    stats.aborted += records.len();
                }
            }
            Some(ControlType::Other(_)) => {}
            None if record.transactional => pending
                .entry((record.partition, record.producer_id))
                .or_default()
                .push(record),
            None => kept.push(record),
        }
    }
    stats.undecided = pending.values().map(Vec::len).sum();
    stats.committed = kept.len();
    kept.sort_by_key(|r| (r.partition, r.offset));
    (kept.into_iter().map(RawRecord::committed).collect(), stats)
}

/// The partition ids of `topic`.
fn partitions(conn: &mut Connection, topic: &str, version: i16) -> Vec<i32> {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_string(topic.to_owned())),
        ))]))
        .with_allow_auto_topic_creation(false);
    let response = conn.call(&request, version);
    let found = response
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
        .unwrap_or_else(|| panic!("metadata has no topic {topic}"));
    assert_eq!(
        found.error_code, 0,
        "metadata for {topic}: error code {}",
        found.error_code
    );
    found.partitions.iter().map(|p| p.partition_index).collect()
}

/// Every record of one partition, and the high watermark the last fetch
/// reported.
fn read_partition(
    conn: &mut Connection,
    topic: &str,
    partition: i32,
    version: i16,
) -> (Vec<RawRecord>, i64) {
    let mut records = Vec::new();
    let mut next = 0_i64;
    loop {
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(PARTITION_MAX_BYTES)
            .with_isolation_level(0)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(next)
                    .with_partition_max_bytes(PARTITION_MAX_BYTES)])]);
        let response = conn.call(&request, version);
        assert_eq!(
            response.error_code, 0,
            "fetch {topic}/{partition}@{next}: error code {}",
            response.error_code
        );
        let data = response
            .responses
            .iter()
            .flat_map(|t| &t.partitions)
            .find(|p| p.partition_index == partition)
            .unwrap_or_else(|| panic!("fetch response lacks {topic}/{partition}"));
        assert_eq!(
            data.error_code, 0,
            "fetch {topic}/{partition}@{next}: error code {}",
            data.error_code
        );
        let high_watermark = data.high_watermark;
        let bytes = data.records.clone().unwrap_or_default();
        let before = next;
        for (range, last_offset) in batches(&bytes) {
            if last_offset < next {
                continue; // a batch that the fetch offset lies past
            }
            let mut buf = &bytes[range];
            let set = RecordBatchDecoder::decode(&mut buf)
                .unwrap_or_else(|e| panic!("decoding a batch of {topic}/{partition}: {e}"));
            records.extend(
                set.records
                    .into_iter()
                    .filter(|r| r.offset >= next)
                    .map(|r| RawRecord {
                        partition,
                        offset: r.offset,
                        producer_id: r.producer_id,
                        producer_epoch: r.producer_epoch,
                        transactional: r.transactional,
                        control: r.control,
                        key: r.key.map(|b| b.to_vec()),
                        value: r.value.map(|b| b.to_vec()),
                        headers: r
                            .headers
                            .into_iter()
                            .map(|(k, v)| (k.as_str().to_owned(), v.map(|b| b.to_vec())))
                            .collect(),
                    }),
            );
            next = last_offset + 1;
        }
        if next == before {
            // No batch beyond what was read: the end of the log.
            return (records, high_watermark);
        }
    }
}

/// The complete record batches in a fetch's `records`: each one's byte range
/// and last offset. A trailing partial batch (cut by the size limit) is left
/// out; the next fetch starts at it.
fn batches(bytes: &[u8]) -> Vec<(std::ops::Range<usize>, i64)> {
    // baseOffset int64, batchLength int32, then (counted by batchLength)
    // partitionLeaderEpoch int32, magic int8, crc int32, attributes int16,
    // lastOffsetDelta int32, ...
    const HEADER: usize = 8 + 4;
    const LAST_OFFSET_DELTA: usize = HEADER + 4 + 1 + 4 + 2;
    let mut out = Vec::new();
    let mut at = 0;
    while bytes.len() >= at + LAST_OFFSET_DELTA + 4 {
        let base_offset = i64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let length = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().expect("4 bytes"));
        let length = usize::try_from(length).expect("non-negative batch length");
        let end = at + HEADER + length;
        if end > bytes.len() {
            break;
        }
        let delta = i32::from_be_bytes(
            bytes[at + LAST_OFFSET_DELTA..at + LAST_OFFSET_DELTA + 4]
                .try_into()
                .expect("4 bytes"),
        );
        out.push((at..end, base_offset + i64::from(delta)));
        at = end;
    }
    out
}

/// A blocking connection to one broker.
struct Connection {
    stream: TcpStream,
    correlation_id: i32,
}

impl Connection {
    fn open(bootstrap: &str) -> Connection {
        let stream = TcpStream::connect(bootstrap)
            .unwrap_or_else(|e| panic!("connecting to {bootstrap}: {e}"));
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .expect("write timeout");
        Connection {
            stream,
            correlation_id: 0,
        }
    }

    /// Sends `request` as `version` and reads its response.
    fn call<R: Request>(&mut self, request: &R, version: i16) -> R::Response {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("driftwatch-raw-log")));
        let mut body = Vec::new();
        header
            .encode(&mut body, R::header_version(version))
            .expect("encode request header");
        request.encode(&mut body, version).expect("encode request");
        let length = i32::try_from(body.len()).expect("request size");
        self.stream
            .write_all(&length.to_be_bytes())
            .and_then(|()| self.stream.write_all(&body))
            .expect("send request");

        let mut length = [0_u8; 4];
        self.stream
            .read_exact(&mut length)
            .expect("read response size");
        let length = usize::try_from(i32::from_be_bytes(length)).expect("response size");
        let mut body = vec![0_u8; length];
        self.stream.read_exact(&mut body).expect("read response");
        let mut buf = body.as_slice();
        let header = ResponseHeader::decode(&mut buf, R::Response::header_version(version))
            .expect("decode response header");
        assert_eq!(
            header.correlation_id, self.correlation_id,
            "response to another request"
        );
        R::Response::decode(&mut buf, version).expect("decode response")
    }
}
