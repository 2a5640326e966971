use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use tracer::{
    agent::{self, RunOptions},
    capture::CaptureConfig,
    cli::{self, Cli, Command, RunArgs},
    config::Config,
    control::{self, Selector},
    export::ExportArgs,
    stitch::StitchConfig,
};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc v2's `mi_option_arena_eager_commit` (its position in `mi_option_e`, mimalloc.h;
/// libmimalloc-sys does not export it).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// On Linux mimalloc commits its 1 GiB arena up front by default, and its segments then keep
/// freed pages resident. Committing on demand lets it hand them back: peak RSS of the agent
/// at 10k requests/s fell by about 5 MiB (BENCHMARKS.md, section 8).
///
/// The first allocation reserves the arena, and Rust's runtime allocates before `main`
/// (setting the option in `main` changed nothing), so this runs from the ELF init array,
/// before the runtime starts. `MIMALLOC_ARENA_EAGER_COMMIT` in the environment still wins.
extern "C" fn configure_allocator() {
    // SAFETY: getenv on a C string literal, with no other thread running yet; setting an
    // option has no preconditions.
    unsafe {
        if libc::getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() {
            libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        }
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static CONFIGURE_ALLOCATOR: extern "C" fn() = configure_allocator;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Run(args) => run(args).map(|()| ExitCode::SUCCESS),
        Command::Enable(args) => cli::enable(args).map(|()| ExitCode::SUCCESS),
        Command::Disable(args) => cli::disable(args).map(|()| ExitCode::SUCCESS),
        Command::Status(args) => cli::status(args).map(|()| ExitCode::SUCCESS),
        // Stays single-threaded: the traced child talks to the agent between fork and exec.
        Command::Exec(args) => cli::exec(args),
    };
    result.unwrap_or_else(|e| {
        // One line: what happened and what to do; no backtrace for user errors.
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}

/// Flags override the config file, which overrides the `OTEL_*` variables (read by export).
fn run(args: RunArgs) -> Result<()> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let mut selectors = config.selectors();
    selectors.extend(
        args.pids
            .iter()
            .map(|t| (Selector::Pid(t.pid), t.service_name.clone())),
    );
    selectors.extend(args.exes.iter().map(|e| (Selector::Exe(e.clone()), None)));
    selectors.extend(args.ports.iter().map(|p| (Selector::Port(*p), None)));
    selectors.extend(
        args.cgroups
            .iter()
            .map(|c| (Selector::Cgroup(c.clone()), None)),
    );
    selectors.extend(
        args.namespaces
            .iter()
            .map(|n| (Selector::Namespace(n.clone()), None)),
    );
    selectors.extend(
        args.pod_labels
            .iter()
            .map(|kv| (Selector::PodLabel(kv.clone()), None)),
    );
    selectors.extend(
        args.pod_annotations
            .iter()
            .map(|kv| (Selector::PodAnnotation(kv.clone()), None)),
    );
    let ring_mib = args.ring_buffer_mib.or(config.ring_buffer_mib).unwrap_or(4);
    if !(1..=1024).contains(&ring_mib) || !ring_mib.is_power_of_two() {
        anyhow::bail!("ring_buffer_mib {ring_mib}: expected a power of two between 1 and 1024");
    }
    let capture_bytes = args
        .capture_bytes
        .or(config.capture_bytes)
        .unwrap_or(tracer_common::DEFAULT_CAPTURE_BYTES);
    if !(64..=tracer_common::MAX_CAPTURE_BYTES as u32).contains(&capture_bytes) {
        anyhow::bail!(
            "capture_bytes {capture_bytes}: expected 64 to {}",
            tracer_common::MAX_CAPTURE_BYTES
        );
    }
    let options = RunOptions {
        selectors,
        control_socket: control::socket_path(args.socket.control_socket.or(config.control_socket)),
        export: ExportArgs {
            otlp_endpoint: args.export.otlp_endpoint.or(config.export.otlp_endpoint),
            otlp_protocol: args.export.otlp_protocol.or(config.export.otlp_protocol),
            output: args.export.output.or(config.export.output),
        },
        capture: CaptureConfig {
            capture_bytes,
            ring_bytes: ring_mib << 20,
            inject_traceparent: args.inject_traceparent
                || config.inject_traceparent.unwrap_or(false),
        },
        stitch: StitchConfig::default(),
        record_events: args.record_events,
        metrics_addr: args.metrics_addr.or(config.metrics_addr),
    };
    // One thread: reading the ring, exporting and the control socket take turns. Each thread
    // more was another allocator heap holding pages, and spans allocated on one thread and
    // freed on another.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(agent::run(options))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The init-array entry survived linking and ran before this test's runtime started.
    #[test]
    fn the_allocator_commits_its_arena_on_demand() {
        if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_some() {
            return; // the operator's choice wins, by design
        }
        // SAFETY: reading an option has no preconditions.
        let value = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_ARENA_EAGER_COMMIT) };
        assert_eq!(value, 0);
    }
}
