//! `dmxp recv`: receive messages, printed as a table, raw, or JSON lines with metadata.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use anyhow::Result;
use base64::Engine as _;
use clap::Args;
use serde::Serialize;

use dmxp::{Consumer, Message};
use dmxp_inspect::runtime_name;

use crate::interrupt::{self, Interrupt};
use crate::source::SegmentArgs;
use crate::{parse, Outcome};

#[derive(Args, Debug)]
pub struct RecvArgs {
    #[command(flatten)]
    pub segment: SegmentArgs,
    /// Channel id (0..256).
    #[arg(long, value_name = "ID", value_parser = parse::channel_id)]
    pub channel: u32,
    /// Receive exactly N messages, waiting for each (fails if the wait times out first).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Keep receiving as messages arrive, until Ctrl-C (or --count, or --timeout-ms idle).
    #[arg(long)]
    pub follow: bool,
    /// Longest wait for the next message. Default: 0 (no wait) when draining, no limit with
    /// --count or --follow.
    #[arg(long, value_name = "N")]
    pub timeout_ms: Option<u64>,
    /// One JSON object per message, one per line (schema in docs/CLI.md).
    #[arg(long, conflicts_with = "raw")]
    pub json: bool,
    /// Only the payload bytes of each message, each followed by a newline.
    #[arg(long)]
    pub raw: bool,
}

/// A received message as `recv --json` prints it.
#[derive(Serialize)]
pub struct MessageJson {
    pub message_id: u64,
    pub timestamp_ns: u64,
    pub channel_id: u32,
    pub message_type: u32,
    pub sender_pid: u32,
    pub sender_runtime: u16,
    /// `unknown`, `rust`, `c`, `python`, `go`, or `unknown(N)`.
    pub sender_runtime_name: String,
    pub flags: u16,
    pub payload_len: u32,
    /// `utf8` when the payload is valid UTF-8, else `base64` (standard alphabet, padded).
    pub payload_encoding: &'static str,
    pub payload: String,
}

impl From<&Message> for MessageJson {
    fn from(m: &Message) -> Self {
        let (payload_encoding, payload) = match std::str::from_utf8(&m.payload) {
            Ok(text) => ("utf8", text.to_owned()),
            Err(_) => (
                "base64",
                base64::engine::general_purpose::STANDARD.encode(&m.payload),
            ),
        };
        MessageJson {
            message_id: m.meta.message_id,
            timestamp_ns: m.meta.timestamp_ns,
            channel_id: m.meta.channel_id,
            message_type: m.meta.message_type,
            sender_pid: m.meta.sender_pid,
            sender_runtime: m.meta.sender_runtime,
            sender_runtime_name: runtime_name(m.meta.sender_runtime),
            flags: m.meta.flags,
            payload_len: m.meta.payload_len,
            payload_encoding,
            payload,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    Table,
    Json,
    Raw,
}

const TABLE_HEADING: &str = "MESSAGE_ID  TYPE        FLAGS   SENDER_PID  RUNTIME  LEN  PAYLOAD";

fn print(out: &mut impl Write, style: Style, m: &Message) -> io::Result<()> {
    match style {
        Style::Json => {
            serde_json::to_writer(&mut *out, &MessageJson::from(m))?;
            writeln!(out)
        }
        Style::Raw => {
            out.write_all(&m.payload)?;
            writeln!(out)
        }
        Style::Table => {
            let j = MessageJson::from(m);
            let shown = match j.payload_encoding {
                "utf8" => format!("{:?}", j.payload),
                _ => format!("base64:{}", j.payload),
            };
            writeln!(
                out,
                "{:<10}  {:<10}  {:#06x}  {:<10}  {:<7}  {:<3}  {shown}",
                j.message_id,
                j.message_type,
                j.flags,
                j.sender_pid,
                j.sender_runtime_name,
                j.payload_len
            )
        }
    }
}

/// What waiting for the next message ended with.
enum Next {
    Message(Message),
    /// Nothing arrived within the wait.
    Idle,
    Interrupted,
}

/// The next message, waiting up to `wait` (`None` = no limit) in slices short enough to see
/// an interrupt between them.
fn next(consumer: &Consumer, wait: Option<Duration>, stop: &Interrupt) -> dmxp::Result<Next> {
    if wait.is_some_and(|d| d.is_zero()) {
        return Ok(consumer
            .receive_with_meta()?
            .map_or(Next::Idle, Next::Message));
    }
    let deadline = wait.map(|d| Instant::now() + d);
    loop {
        if stop.requested() {
            return Ok(Next::Interrupted);
        }
        let left = deadline.map_or(interrupt::SLICE, |d| {
            d.saturating_duration_since(Instant::now())
        });
        if let Some(message) = consumer.receive_timeout(left.min(interrupt::SLICE))? {
            return Ok(Next::Message(message));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Next::Idle);
        }
    }
}

pub fn run(args: RecvArgs) -> Result<Outcome> {
    let source = args.segment.source();
    let stop = Interrupt::install()?;
    let consumer = args
        .segment
        .builder()
        .attach_allocator()?
        .consumer(args.channel)?;
    if !consumer.is_registered() {
        // Loud, not fatal: without a record a consumer killed mid-claim would wedge the channel.
        eprintln!(
            "dmxp: warning: channel {}: not registered in the peer table (full or no room): \
             these receives are not protected against this process dying mid-claim",
            args.channel
        );
    }
    let style = if args.json {
        Style::Json
    } else if args.raw {
        Style::Raw
    } else {
        Style::Table
    };
    let waits = args.count.is_some() || args.follow;
    let wait = match args.timeout_ms {
        Some(ms) => Some(Duration::from_millis(ms)),
        None if waits => None,
        None => Some(Duration::ZERO),
    };

    let mut out = io::stdout().lock();
    if style == Style::Table {
        writeln!(out, "{TABLE_HEADING}")?;
    }
    let mut received = 0u64;
    let outcome = loop {
        if args.count.is_some_and(|n| received >= n) {
            break Outcome::Success;
        }
        match next(&consumer, wait, &stop)? {
            Next::Message(message) => {
                print(&mut out, style, &message)?;
                out.flush()?;
                received += 1;
            }
            Next::Interrupted => break Outcome::Interrupted,
            Next::Idle => match args.count {
                Some(n) => {
                    break Outcome::Failure(format!(
                    "timed out: received {received} of {n} messages from channel {} of {source}",
                    args.channel
                ))
                }
                // Draining found the channel empty, or --follow was idle for --timeout-ms.
                None => break Outcome::Success,
            },
        }
    };
    out.flush()?;
    drop(out);

    let stats = consumer.stats();
    let skipped = stats.lost + stats.corrupt + stats.dropped_in_batch;
    if skipped > 0 {
        eprintln!(
            "dmxp: skipped {} lost and {} corrupt messages on channel {}",
            stats.lost,
            stats.corrupt + stats.dropped_in_batch,
            args.channel
        );
    }
    Ok(outcome)
}
