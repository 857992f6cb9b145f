//! `dmxp watch`: the channel table, refreshed, with each channel's send and receive rates
//! (from the change of `tail` and `head` between two reads) and the registered peers.
//!
//! On a terminal it takes the screen over (alternate screen, hidden cursor, raw mode) and
//! redraws in place until `q`, Esc, Ctrl-C or SIGTERM; a [`Terminal`] guard gives the screen
//! back whichever way the command ends: return, error, or panic. Otherwise (stdout not a
//! terminal, `--json`, `--once`) it prints frames one after the other.

use std::collections::HashMap;
use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::{cursor, queue, style, terminal};
use serde::Serialize;

use dmxp_inspect::{
    not_a_segment_line, peers_line, table, write_validation, ChannelJson, PeerJson, Problem, Report,
};

use crate::inspect::snapshot;
use crate::interrupt::{self, Interrupt};
use crate::source::{SegmentArgs, Source};
use crate::Outcome;

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub segment: SegmentArgs,
    /// Time between refreshes.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub interval_ms: u64,
    /// Stop after N refreshes (default: until q, Ctrl-C or SIGTERM).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Print one frame and exit, never taking the terminal over: the segment is read twice,
    /// --interval-ms apart, so the frame has rates.
    #[arg(long, conflicts_with = "count")]
    pub once: bool,
    /// Print one JSON object per refresh, one per line, instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One refresh, as `watch --json` prints it.
#[derive(Serialize)]
struct Frame<'a> {
    /// Refresh number, from 1.
    refresh: u64,
    /// Milliseconds since the first read.
    elapsed_ms: u64,
    valid: bool,
    channels: Vec<ChannelRates<'a>>,
    peers: &'a [PeerJson],
    problems: &'a [Problem],
}

#[derive(Serialize)]
struct ChannelRates<'a> {
    #[serde(flatten)]
    channel: &'a ChannelJson,
    #[serde(flatten)]
    rates: Rates,
}

/// Messages per second through one channel since the previous read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rates {
    /// Sent: the change of `tail` over the time between the reads. `None` on the first read,
    /// for a channel that is not `ok`, or when the cursor went backwards.
    pub send_per_s: Option<f64>,
    /// Received: the change of `head`, likewise.
    pub recv_per_s: Option<f64>,
}

/// The cursors of one channel at one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursors {
    pub head: u64,
    pub tail: u64,
}

/// The rates between two reads of a channel's cursors taken `elapsed` apart.
pub fn rates(before: Cursors, after: Cursors, elapsed: Duration) -> Rates {
    Rates {
        send_per_s: rate(before.tail, after.tail, elapsed),
        recv_per_s: rate(before.head, after.head, elapsed),
    }
}

/// Messages per second from two readings of a cursor taken `elapsed` apart; `None` when the
/// cursor moved backwards (a wrapping difference below zero: a corrupt or reset cursor) or no
/// time passed.
fn rate(before: u64, after: u64, elapsed: Duration) -> Option<f64> {
    let delta = after.wrapping_sub(before) as i64;
    let secs = elapsed.as_secs_f64();
    (delta >= 0 && secs > 0.0).then(|| delta as f64 / secs)
}

/// The previous read of every channel, to compute rates against.
#[derive(Default)]
struct Sampler {
    previous: HashMap<u32, (Cursors, Instant)>,
}

impl Sampler {
    /// The rates of each of `report`'s channels since the previous call, read at `now`.
    fn sample(&mut self, report: &Report, now: Instant) -> Vec<Rates> {
        let rates = report
            .channels
            .iter()
            .map(|c| {
                let cursors = Cursors {
                    head: c.head,
                    tail: c.tail,
                };
                match self.previous.get(&c.id) {
                    Some(&(before, then)) if c.status == "ok" => {
                        rates(before, cursors, now.duration_since(then))
                    }
                    _ => Rates::default(),
                }
            })
            .collect();
        self.previous = report
            .channels
            .iter()
            .filter(|c| c.status == "ok")
            .map(|c| {
                let cursors = Cursors {
                    head: c.head,
                    tail: c.tail,
                };
                (c.id, (cursors, now))
            })
            .collect();
        rates
    }
}

/// Reads the segment, refusing an object that is not a DMXP segment (one line, exit 1).
fn read(source: &Source) -> Result<std::result::Result<Report, String>> {
    let report = snapshot(source)?;
    Ok(match not_a_segment_line(&report) {
        Some(line) => Err(line),
        None => Ok(report),
    })
}

/// Sleeps until `deadline` in slices short enough to see an interrupt; `false` if one came.
fn sleep_until(deadline: Instant, stop: &Interrupt) -> bool {
    loop {
        if stop.requested() {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(interrupt::SLICE));
    }
}

pub fn run(args: WatchArgs) -> Result<Outcome> {
    let source = args.segment.source();
    let stop = Interrupt::install()?;
    if !args.json && !args.once && io::stdout().is_terminal() {
        return run_interactive(&args, &source, &stop);
    }
    let interval = Duration::from_millis(args.interval_ms);
    let start = Instant::now();
    let mut sampler = Sampler::default();
    if args.once {
        // The first read only gives the rates their starting point.
        match read(&source)? {
            Ok(report) => {
                sampler.sample(&report, Instant::now());
            }
            Err(line) => return Ok(Outcome::Failure(line)),
        }
        if !sleep_until(start + interval, &stop) {
            return Ok(Outcome::Interrupted);
        }
    }
    let count = if args.once { Some(1) } else { args.count };
    let mut refresh = 0u64;
    loop {
        refresh += 1;
        let report = match read(&source)? {
            Ok(report) => report,
            Err(line) => return Ok(Outcome::Failure(line)),
        };
        let now = Instant::now();
        let rates = sampler.sample(&report, now);
        let mut out = io::stdout().lock();
        if args.json {
            let frame = Frame {
                refresh,
                elapsed_ms: now.duration_since(start).as_millis() as u64,
                valid: report.valid,
                channels: report
                    .channels
                    .iter()
                    .zip(&rates)
                    .map(|(channel, &rates)| ChannelRates { channel, rates })
                    .collect(),
                peers: &report.peers,
                problems: &report.problems,
            };
            serde_json::to_writer(&mut out, &frame)?;
            writeln!(out)?;
        } else {
            if refresh > 1 {
                writeln!(out)?;
            }
            let title = if args.once {
                format!("{source}  rates over {} ms", args.interval_ms)
            } else {
                format!(
                    "{source}  refresh {refresh}  every {} ms  (Ctrl-C to stop)",
                    args.interval_ms
                )
            };
            for line in frame_lines(&title, &report, &rates) {
                writeln!(out, "{line}")?;
            }
        }
        out.flush()?;
        drop(out);

        if count.is_some_and(|count| refresh >= count) {
            return Ok(Outcome::Success);
        }
        if !sleep_until(now + interval, &stop) {
            return Ok(Outcome::Interrupted);
        }
    }
}

/// How waiting for the next refresh ended.
enum Key {
    /// Time for the next refresh.
    Refresh,
    /// `q` or Esc.
    Quit,
    /// Ctrl-C (a key in raw mode), SIGINT or SIGTERM.
    Interrupt,
}

fn run_interactive(args: &WatchArgs, source: &Source, stop: &Interrupt) -> Result<Outcome> {
    let interval = Duration::from_millis(args.interval_ms);
    let mut screen = Terminal::enter().context("taking the terminal over")?;
    let mut sampler = Sampler::default();
    let mut refresh = 0u64;
    loop {
        refresh += 1;
        let report = match read(source)? {
            Ok(report) => report,
            Err(line) => return Ok(Outcome::Failure(line)),
        };
        let now = Instant::now();
        let rates = sampler.sample(&report, now);
        let title = format!(
            "{source}  refresh {refresh}  every {} ms  (q to quit)",
            args.interval_ms
        );
        let lines = frame_lines(&title, &report, &rates);
        screen.draw(&lines)?;
        if args.count.is_some_and(|count| refresh >= count) {
            return Ok(Outcome::Success);
        }
        loop {
            match next_key(now + interval, stop)? {
                Some(Key::Refresh) => break,
                Some(Key::Quit) => return Ok(Outcome::Success),
                Some(Key::Interrupt) => return Ok(Outcome::Interrupted),
                // Resized: the same frame, fitted to the new size.
                None => screen.draw(&lines)?,
            }
        }
    }
}

/// Waits for a key until `deadline`, in slices short enough to see SIGTERM; `None` when the
/// terminal was resized.
fn next_key(deadline: Instant, stop: &Interrupt) -> io::Result<Option<Key>> {
    loop {
        if stop.requested() {
            return Ok(Some(Key::Interrupt));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Some(Key::Refresh));
        }
        if !event::poll(left.min(interrupt::SLICE))? {
            continue;
        }
        match event::read()? {
            Event::Key(key) if key.kind != KeyEventKind::Release => match key.code {
                KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    return Ok(Some(Key::Interrupt))
                }
                KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc => {
                    return Ok(Some(Key::Quit))
                }
                _ => {}
            },
            Event::Resize(..) => return Ok(None),
            _ => {}
        }
    }
}

/// Whether the terminal is taken over: raw mode, alternate screen, hidden cursor.
static TAKEN_OVER: AtomicBool = AtomicBool::new(false);

/// Gives the terminal back (once, whoever calls first: the guard's drop or the panic hook).
fn restore_terminal() {
    if TAKEN_OVER.swap(false, Ordering::SeqCst) {
        let mut out = io::stdout();
        let _ = queue!(out, cursor::Show, terminal::LeaveAlternateScreen);
        let _ = out.flush();
        let _ = terminal::disable_raw_mode();
    }
}

/// The terminal, taken over for as long as this lives: its drop gives it back, whether
/// `watch` returns, fails or panics. A panic gives it back before the panic message is
/// printed, so that the message lands on the normal screen.
struct Terminal {
    out: io::Stdout,
}

impl Terminal {
    fn enter() -> io::Result<Terminal> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_terminal();
                previous(info);
            }));
        });
        terminal::enable_raw_mode()?;
        TAKEN_OVER.store(true, Ordering::SeqCst);
        // From here on, an error drops the guard, which restores what was done.
        let mut screen = Terminal { out: io::stdout() };
        queue!(
            screen.out,
            terminal::EnterAlternateScreen,
            cursor::Hide,
            terminal::Clear(terminal::ClearType::All)
        )?;
        screen.out.flush()?;
        Ok(screen)
    }

    /// Draws `lines` from the top left, each cut to the width; lines below the last row are
    /// summed up on it.
    fn draw(&mut self, lines: &[String]) -> io::Result<()> {
        let (width, height) = match terminal::size() {
            Ok((w, h)) if w > 0 && h > 0 => (w as usize, h as usize),
            _ => (80, 24),
        };
        let shown = fit(lines, width, height);
        for (row, line) in shown.iter().enumerate() {
            queue!(
                self.out,
                cursor::MoveTo(0, row as u16),
                style::Print(line),
                terminal::Clear(terminal::ClearType::UntilNewLine)
            )?;
        }
        queue!(
            self.out,
            cursor::MoveTo(0, shown.len() as u16),
            terminal::Clear(terminal::ClearType::FromCursorDown)
        )?;
        self.out.flush()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// `lines` cut to `width` characters and `height` rows; when they do not all fit, the last
/// row says how many more there are.
fn fit(lines: &[String], width: usize, height: usize) -> Vec<String> {
    let cut = |line: &str| line.chars().take(width).collect::<String>();
    if lines.len() <= height {
        return lines.iter().map(|l| cut(l)).collect();
    }
    let kept = height.saturating_sub(1);
    let mut shown: Vec<String> = lines[..kept].iter().map(|l| cut(l)).collect();
    shown.push(cut(&format!(
        "... {} more lines (a taller terminal shows them)",
        lines.len() - kept
    )));
    shown
}

/// One frame as text lines: the title, the channel table with rates, the peers, and the
/// validation problems if any.
fn frame_lines(title: &str, report: &Report, rates: &[Rates]) -> Vec<String> {
    let mut text = format!("{title}\n\n");
    text.push_str(&channel_table(report, rates));
    text.push('\n');
    text.push_str(&peer_table(report));
    if !report.valid {
        text.push('\n');
        let mut problems = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = write_validation(&mut problems, report);
        text.push_str(&String::from_utf8_lossy(&problems));
    }
    text.lines().map(str::to_owned).collect()
}

fn per_s(rate: Option<f64>) -> String {
    rate.map_or("-".into(), |r| format!("{r:.1}"))
}

fn channel_table(report: &Report, rates: &[Rates]) -> String {
    if report.channels.is_empty() {
        return "channels: none\n".into();
    }
    let mut rows = vec![[
        "ID",
        "STATUS",
        "CAPACITY",
        "HEAD",
        "TAIL",
        "DEPTH",
        "SEND/S",
        "RECV/S",
        "PEERS",
        "NOT_EMPTY_WAITERS",
        "NOT_FULL_WAITERS",
    ]
    .map(String::from)
    .to_vec()];
    for (c, r) in report.channels.iter().zip(rates) {
        rows.push(vec![
            c.id.to_string(),
            c.status.to_string(),
            c.capacity.to_string(),
            c.head.to_string(),
            c.tail.to_string(),
            c.depth.map_or("-".into(), |d| d.to_string()),
            per_s(r.send_per_s),
            per_s(r.recv_per_s),
            c.peers
                .map_or("-".into(), |p| format!("{}/{}", p.producers, p.consumers)),
            c.not_empty_waiters.to_string(),
            c.not_full_waiters.to_string(),
        ]);
    }
    table::render(&rows)
}

fn peer_table(report: &Report) -> String {
    let mut text = peers_line(report);
    text.push('\n');
    if report.peers.is_empty() {
        return text;
    }
    let mut rows = vec![["PID", "ROLE", "CHANNEL", "ALIVE", "WAITING"]
        .map(String::from)
        .to_vec()];
    for p in &report.peers {
        rows.push(vec![
            p.pid.to_string(),
            p.role.clone(),
            p.channel.to_string(),
            if p.alive { "yes" } else { "no" }.into(),
            p.waiting.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    text.push_str(&table::render(&rows));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_cursor_delta_over_time() {
        assert_eq!(rate(10, 510, Duration::from_millis(500)), Some(1000.0));
        assert_eq!(rate(7, 7, Duration::from_secs(1)), Some(0.0));
        assert_eq!(rate(u64::MAX, 1, Duration::from_secs(1)), Some(2.0));
        assert_eq!(rate(9, 3, Duration::from_secs(1)), None);
        assert_eq!(rate(0, 3, Duration::ZERO), None);
    }

    #[test]
    fn send_rate_follows_tail_and_receive_rate_follows_head() {
        let before = Cursors {
            head: 100,
            tail: 150,
        };
        let after = Cursors {
            head: 130,
            tail: 250,
        };
        assert_eq!(
            rates(before, after, Duration::from_millis(250)),
            Rates {
                send_per_s: Some(400.0),
                recv_per_s: Some(120.0)
            }
        );
        // A consumer that stopped: sends go on, receives are 0.
        let stalled = Cursors {
            head: 100,
            tail: 160,
        };
        assert_eq!(
            rates(before, stalled, Duration::from_secs(2)),
            Rates {
                send_per_s: Some(5.0),
                recv_per_s: Some(0.0)
            }
        );
        // A head that went backwards (a scribbled cursor): no receive rate.
        let scribbled = Cursors { head: 1, tail: 150 };
        assert_eq!(
            rates(before, scribbled, Duration::from_secs(1)),
            Rates {
                send_per_s: Some(0.0),
                recv_per_s: None
            }
        );
    }

    #[test]
    fn fit_cuts_lines_and_sums_up_the_rows_that_do_not_fit() {
        let lines: Vec<String> = (0..5).map(|i| format!("line {i} of the frame")).collect();
        assert_eq!(
            fit(&lines, 6, 10),
            ["line 0", "line 1", "line 2", "line 3", "line 4"]
        );
        let shown = fit(&lines, 80, 3);
        assert_eq!(shown.len(), 3);
        assert_eq!(shown[..2], lines[..2]);
        assert!(shown[2].starts_with("... 3 more lines"), "{shown:?}");
    }
}
