//! `dmxp watch`: the channel table, refreshed in place, with messages/s from tail deltas.

use std::collections::HashMap;
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::inspect::{snapshot, write_validation};
use crate::report::ChannelJson;
use crate::source::SegmentArgs;
use crate::{table, Outcome};

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub segment: SegmentArgs,
    /// Time between refreshes.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub interval_ms: u64,
    /// Stop after N refreshes (default: until Ctrl-C).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Print one JSON object per refresh, one per line, instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One refresh, as `watch --json` prints it.
#[derive(Serialize)]
struct Frame<'a> {
    /// Refresh number, from 1.
    refresh: u64,
    /// Milliseconds since the first refresh.
    elapsed_ms: u64,
    valid: bool,
    channels: Vec<Rate<'a>>,
    problems: &'a [crate::report::Problem],
}

#[derive(Serialize)]
struct Rate<'a> {
    #[serde(flatten)]
    channel: &'a ChannelJson,
    /// Messages sent per second since the previous refresh (tail delta / time); `null` on the
    /// first refresh or when the tail moved backwards.
    messages_per_s: Option<f64>,
}

pub fn run(args: WatchArgs) -> Result<Outcome> {
    let source = args.segment.source();
    let interval = Duration::from_millis(args.interval_ms);
    let in_place = !args.json && io::stdout().is_terminal();
    let start = Instant::now();
    let mut previous: HashMap<u32, (u64, Instant)> = HashMap::new();
    let mut refresh = 0u64;
    loop {
        refresh += 1;
        let report = snapshot(&source)?;
        let now = Instant::now();
        let rates: Vec<Rate> = report
            .channels
            .iter()
            .map(|c| {
                let messages_per_s = previous
                    .get(&c.id)
                    .and_then(|&(tail, then)| rate(tail, c.tail, now.duration_since(then)));
                Rate {
                    channel: c,
                    messages_per_s,
                }
            })
            .collect();
        previous = report
            .channels
            .iter()
            .map(|c| (c.id, (c.tail, now)))
            .collect();

        let mut out = io::stdout().lock();
        if args.json {
            let frame = Frame {
                refresh,
                elapsed_ms: now.duration_since(start).as_millis() as u64,
                valid: report.valid,
                channels: rates,
                problems: &report.problems,
            };
            serde_json::to_writer(&mut out, &frame)?;
            writeln!(out)?;
        } else {
            let mut text = String::new();
            if in_place {
                // Clear the screen and move the cursor home.
                text.push_str("\x1b[2J\x1b[H");
            } else if refresh > 1 {
                text.push('\n');
            }
            text.push_str(&format!(
                "{source}  refresh {refresh}  every {} ms  (Ctrl-C to stop)\n\n",
                args.interval_ms
            ));
            text.push_str(&render(&rates));
            out.write_all(text.as_bytes())?;
            if !report.valid {
                writeln!(out)?;
                write_validation(&mut out, &report)?;
            }
        }
        out.flush()?;
        drop(out);

        if args.count.is_some_and(|count| refresh >= count) {
            return Ok(Outcome::Success);
        }
        std::thread::sleep(interval);
    }
}

/// Messages per second from two readings of `tail` taken `elapsed` apart; `None` when the tail
/// moved backwards (a wrapping difference below zero: a corrupt or reset cursor).
fn rate(before: u64, after: u64, elapsed: Duration) -> Option<f64> {
    let delta = after.wrapping_sub(before) as i64;
    let secs = elapsed.as_secs_f64();
    (delta >= 0 && secs > 0.0).then(|| delta as f64 / secs)
}

fn render(rates: &[Rate]) -> String {
    if rates.is_empty() {
        return "no channels\n".into();
    }
    let mut rows = vec![[
        "ID",
        "STATUS",
        "CAPACITY",
        "HEAD",
        "TAIL",
        "DEPTH",
        "MSGS/S",
        "RECV_WAITERS",
        "SEND_WAITERS",
    ]
    .map(String::from)
    .to_vec()];
    for r in rates {
        let c = r.channel;
        rows.push(vec![
            c.id.to_string(),
            c.status.to_string(),
            c.capacity.to_string(),
            c.head.to_string(),
            c.tail.to_string(),
            c.depth.map_or("-".into(), |d| d.to_string()),
            r.messages_per_s.map_or("-".into(), |m| format!("{m:.1}")),
            c.not_empty_waiters.to_string(),
            c.not_full_waiters.to_string(),
        ]);
    }
    table::render(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_tail_delta_over_time() {
        assert_eq!(rate(10, 510, Duration::from_millis(500)), Some(1000.0));
        assert_eq!(rate(7, 7, Duration::from_secs(1)), Some(0.0));
        assert_eq!(rate(u64::MAX, 1, Duration::from_secs(1)), Some(2.0));
        assert_eq!(rate(9, 3, Duration::from_secs(1)), None);
        assert_eq!(rate(0, 3, Duration::ZERO), None);
    }
}
