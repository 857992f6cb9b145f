//! A server hands an anonymous memfd segment to a client process over a Unix socket
//! (SCM_RIGHTS); the client sends messages back through it.
//!
//! ```text
//! cargo run --release --features memfd --example memfd_pass [server] [--messages 10000]
//! cargo run --release --features memfd --example memfd_pass client --socket PATH
//! ```
//!
//! `server` (the default) creates the segment (sealed against shrinking and growing, so no
//! peer can make it SIGBUS), serves it on a socket, starts this same binary as the client,
//! and checks every message the client sends.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use dmxp::memfd::{MemfdSegment, SegmentServer};
use dmxp::{pattern, ChannelBuilder};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Role {
    Server,
    Client,
}

#[derive(Parser)]
#[command(about = "Pass a DMXP memfd segment to another process over a Unix socket")]
struct Args {
    #[arg(value_enum, default_value_t = Role::Server)]
    role: Role,
    /// Unix socket path (the server picks one in the temp directory by default).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Messages the client sends.
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
    /// Name given to the memfd (shown in /proc/PID/fd); memfds have no global name.
    #[arg(long, env = "DMXP_SEGMENT", default_value = dmxp::DEFAULT_SEGMENT_NAME)]
    segment: String,
}

const WAIT: Duration = Duration::from_secs(30);

fn server(args: &Args) -> dmxp::Result<()> {
    let socket = args.socket.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("dmxp_memfd_{}.sock", std::process::id()))
    });
    let debug_name = args.segment.trim_start_matches('/');
    let segment = Arc::new(MemfdSegment::create(debug_name, 16 << 20)?);
    let builder = ChannelBuilder::new().with_memory(Arc::clone(&segment));
    builder.clone().with_capacity(1024).build_producer()?;
    let consumer = builder.build_consumer()?;
    let server = SegmentServer::bind(&socket, Arc::clone(&segment))?.spawn();
    println!(
        "memfd_pass: serving a {} MiB segment on {}",
        segment.len() >> 20,
        socket.display()
    );

    let exe = std::env::current_exe()?;
    let mut client = Command::new(exe)
        .arg("client")
        .arg("--socket")
        .arg(&socket)
        .arg("--messages")
        .arg(args.messages.to_string())
        .spawn()?;
    let client_pid = client.id();
    let started = Instant::now();
    let mut bad = 0u64;
    for expected in 0..args.messages {
        let Some(message) = consumer.receive_timeout(WAIT)? else {
            eprintln!("memfd_pass: client sent nothing for {WAIT:?}");
            bad += args.messages - expected;
            break;
        };
        let right = pattern::decode(&message.payload) == Ok((0, expected))
            && message.meta.sender_pid == client_pid;
        bad += u64::from(!right);
    }
    let elapsed = started.elapsed();
    let status = client.wait()?;
    server.stop()?;
    println!(
        "memfd_pass: received {} messages from client pid {client_pid} in {elapsed:.3?} \
         ({:.0} msgs/s), {bad} wrong; client {status}",
        args.messages,
        args.messages as f64 / elapsed.as_secs_f64()
    );
    if bad == 0 && status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other("messages missing or wrong").into())
    }
}

fn client(args: &Args) -> dmxp::Result<()> {
    let socket = args.socket.clone().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "client needs --socket")
    })?;
    let producer = ChannelBuilder::new()
        .with_memfd_socket(socket)
        .build_producer()?;
    for index in 0..args.messages {
        producer.send_timeout(pattern::encode(0, index, pattern::default_len(index)), WAIT)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.role {
        Role::Server => server(&args),
        Role::Client => client(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("memfd_pass: {e}");
            ExitCode::FAILURE
        }
    }
}
