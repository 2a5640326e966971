//! Loads the capture programs (without attaching them) and prints how many instructions the
//! kernel's verifier processed for each: the budget is 1,000,000 per program. Run as root:
//!
//!     cargo run -p tracer --example verifier_stats

use aya::{Ebpf, EbpfLoader, programs::Program};

fn main() -> anyhow::Result<()> {
    let object = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));
    // Injection on: its code paths are verified too (off, the verifier prunes them).
    let inject = u32::from(std::env::var_os("INJECT_OFF").is_none());
    let mut ebpf: Ebpf = EbpfLoader::new()
        .override_global(tracer_common::inject_names::GLOBAL_INJECT, &inject, true)
        .load(object)?;
    let names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
    let mut rows = Vec::new();
    for name in names {
        let program = ebpf.program_mut(&name).expect("listed");
        let loaded = match program {
            Program::TracePoint(p) => p.load(),
            // (a tail-call target is a tracepoint program too)
            Program::SockOps(p) => p.load(),
            Program::SkMsg(p) => p.load(),
            _ => continue,
        };
        match loaded {
            Ok(()) => {
                let info = ebpf.program(&name).expect("listed").info()?;
                rows.push((info.verified_instruction_count().unwrap_or(0), name));
            }
            Err(e) => {
                let text = format!("{e:#}");
                let stats = text
                    .lines()
                    .find(|l| l.contains("processed"))
                    .unwrap_or("(no stats)")
                    .trim()
                    .to_string();
                println!("{name}: REFUSED: {stats}");
                if std::env::var_os("VERBOSE").is_some() {
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = lines.len().saturating_sub(40);
                    println!("{}", lines[tail..].join("\n"));
                }
            }
        }
    }
    rows.sort();
    for (insns, name) in rows {
        println!("{insns:>9}  {name}");
    }
    Ok(())
}
