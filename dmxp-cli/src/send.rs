//! `dmxp send`: messages from arguments, a file (whole or by lines), or stdin lines.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args};
use serde::Serialize;

use dmxp::Producer;

use crate::source::SegmentArgs;
use crate::{parse, Outcome};

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("input").required(true).args(["messages", "from_file", "stdin"])))]
pub struct SendArgs {
    #[command(flatten)]
    pub segment: SegmentArgs,
    /// Channel id (0..256); the channel must exist (see `dmxp create`).
    #[arg(long, value_name = "ID", value_parser = parse::channel_id)]
    pub channel: u32,
    /// Application message type (u32, decimal or 0x hex).
    #[arg(long = "type", value_name = "T", value_parser = parse::u32_value, default_value = "0")]
    pub message_type: u32,
    /// Application flags: bits of 0xff00 only (the low byte belongs to the protocol).
    #[arg(long, value_name = "F", value_parser = parse::app_flags, default_value = "0")]
    pub flags: u16,
    /// Messages to send, one per argument.
    #[arg(value_name = "MESSAGE")]
    pub messages: Vec<String>,
    /// Send this file's contents as one message (or each line with --lines).
    #[arg(long, value_name = "PATH")]
    pub from_file: Option<PathBuf>,
    /// With --from-file: one message per line (without the line ending).
    // (`requires = "from_file"` is not enough: clap accepts any member of the `input` group
    // in its place, so the other inputs are refused explicitly.)
    #[arg(long, requires = "from_file", conflicts_with_all = ["messages", "stdin"])]
    pub lines: bool,
    /// Send each line of standard input as a message, as it arrives.
    #[arg(long)]
    pub stdin: bool,
    /// How long to wait for a free slot when the ring is full (0: fail at once).
    #[arg(long, value_name = "N", default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Default)]
struct Summary {
    segment: String,
    channel: u32,
    sent: u64,
    first_message_id: Option<u64>,
    last_message_id: Option<u64>,
}

struct Sender<'a> {
    producer: Producer,
    args: &'a SendArgs,
    summary: Summary,
}

impl Sender<'_> {
    fn send(&mut self, payload: &[u8]) -> Result<()> {
        let limit = self.producer.max_message_size();
        if payload.len() > limit {
            bail!(
                "message {} is {} bytes; channel {} takes at most {limit} (sent {} before it)",
                self.summary.sent + 1,
                payload.len(),
                self.args.channel,
                self.summary.sent
            );
        }
        let (t, f) = (self.args.message_type, self.args.flags);
        let sent = if self.args.timeout_ms == 0 {
            self.producer.send_with(payload, t, f)
        } else {
            let timeout = Duration::from_millis(self.args.timeout_ms);
            self.producer.send_with_timeout(payload, t, f, timeout)
        };
        let id = sent.with_context(|| format!("after sending {} messages", self.summary.sent))?;
        self.summary.sent += 1;
        self.summary.first_message_id.get_or_insert(id);
        self.summary.last_message_id = Some(id);
        Ok(())
    }
}

/// Splits `reader` at `\n`, dropping a `\r` before it, and hands each line to `each`.
fn for_each_line(reader: impl BufRead, mut each: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    for line in reader.split(b'\n') {
        let mut line = line?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        each(&line)?;
    }
    Ok(())
}

pub fn run(args: SendArgs) -> Result<Outcome> {
    let source = args.segment.source();
    // Everything but stdin is read and checked before the first send.
    let mut batch: Vec<Vec<u8>> = args
        .messages
        .iter()
        .map(|m| m.clone().into_bytes())
        .collect();
    if let Some(path) = &args.from_file {
        let open = || File::open(path).with_context(|| format!("reading {}", path.display()));
        if args.lines {
            for_each_line(BufReader::new(open()?), |line| {
                batch.push(line.to_vec());
                Ok(())
            })?;
        } else {
            let mut contents = Vec::new();
            io::Read::read_to_end(&mut open()?, &mut contents)
                .with_context(|| format!("reading {}", path.display()))?;
            batch.push(contents);
        }
    }
    let producer = args
        .segment
        .builder()
        .attach_allocator()?
        .producer(args.channel)?;
    let limit = producer.max_message_size();
    if let Some((n, big)) = batch.iter().enumerate().find(|(_, m)| m.len() > limit) {
        bail!(
            "message {} is {} bytes; channel {} takes at most {limit} (see `dmxp create \
             --max-message-size`; nothing sent)",
            n + 1,
            big.len(),
            args.channel
        );
    }
    if !producer.is_registered() {
        // Loud, not fatal: without a record a producer killed mid-claim would wedge the channel.
        eprintln!(
            "dmxp: warning: channel {}: not registered in the peer table (full or no room): \
             these sends are not protected against this process dying mid-claim",
            args.channel
        );
    }
    let mut sender = Sender {
        producer,
        args: &args,
        summary: Summary {
            segment: source.to_string(),
            channel: args.channel,
            ..Summary::default()
        },
    };
    for message in &batch {
        sender.send(message)?;
    }
    if args.stdin {
        for_each_line(io::stdin().lock(), |line| sender.send(line))?;
    }

    let summary = sender.summary;
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        let ids = match (summary.first_message_id, summary.last_message_id) {
            (Some(a), Some(b)) if a == b => format!(" (message_id {a})"),
            (Some(a), Some(b)) => format!(" (message_id {a}..{b})"),
            _ => String::new(),
        };
        writeln!(
            out,
            "sent {} message{} to channel {} of {source}{ids}",
            summary.sent,
            if summary.sent == 1 { "" } else { "s" },
            summary.channel
        )?;
    }
    Ok(Outcome::Success)
}
