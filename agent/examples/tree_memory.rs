//! Prints what the agent measures for a process tree (its processes, resident memory and
//! NVML's GPU memory), as JSON: `cargo run -p switchyard-agent --example tree_memory -- PID`.
//! Used to check the measurement against `nvidia-smi` on a GPU machine.

fn main() -> std::process::ExitCode {
    let Some(pid) = std::env::args().nth(1).and_then(|a| a.parse::<u32>().ok()) else {
        eprintln!("usage: tree_memory PID");
        return std::process::ExitCode::from(2);
    };
    let tree = switchyard_agent::models::process::measure_tree(pid);
    let line = serde_json::json!({
        "pid": pid,
        "processes": tree.processes,
        "resident_mb": tree.resident_bytes / (1024 * 1024),
        "gpu_mb": tree.gpu_bytes / (1024 * 1024),
        "total_mb": tree.total_mb(),
    });
    #[allow(clippy::print_stdout)]
    {
        println!("{line}");
    }
    std::process::ExitCode::SUCCESS
}
