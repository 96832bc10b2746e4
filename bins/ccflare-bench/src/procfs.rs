//! What `/proc` says about the proxy process and this machine: resident memory (`VmRSS`) and
//! its high-water mark (`VmHWM`, which `clear_refs` resets so that each scenario gets its own
//! peak), open file descriptors (`fd/`), CPU time (`utime + stime` from `stat`), the open-files
//! limit, and the machine facts the report prints. Linux only; elsewhere the figures are simply
//! absent.

use serde::Serialize;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

fn proc_path(pid: u32, file: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{file}"))
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in kB.
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(proc_path(pid, "status")).ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

pub fn rss_kb(pid: u32) -> Option<u64> {
    status_kb(pid, "VmRSS")
}

pub fn peak_rss_kb(pid: u32) -> Option<u64> {
    status_kb(pid, "VmHWM")
}

/// Resets `VmHWM` to the current RSS (`echo 5 > clear_refs`), so the next peak read is the
/// peak since now. Returns false when not allowed (another user's process).
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(proc_path(pid, "clear_refs"), "5").is_ok()
}

/// User plus system CPU time of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(proc_path(pid, "stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after its `)` are plain.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); field 3 is the first after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Nanoseconds all threads of `pid` have spent runnable but waiting for a CPU (the second
/// field of each `/proc/<pid>/task/<tid>/schedstat`). Growth during a phase means the process
/// was ready to work and the machine had no CPU for it: the source of tail latency that no
/// change to the process itself removes.
pub fn run_queue_wait_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(proc_path(pid, "task")).ok()?;
    let mut total = 0;
    // Bounded by the process's thread count.
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            // A thread that ended between the listing and the read.
            continue;
        };
        if let Some(wait) = text
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
        {
            total += wait;
        }
    }
    Some(total)
}

/// Clock ticks per second (`getconf CLK_TCK`); 100 on practically every Linux.
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

/// The open-files limit before and after trying to raise it.
#[derive(Debug, Clone, Serialize)]
pub struct FdLimit {
    pub soft_before: Option<u64>,
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

fn nofile_limits() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut numbers = line["Max open files".len()..].split_whitespace();
    let parse = |v: Option<&str>| match v? {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    };
    Some((parse(numbers.next())?, parse(numbers.next())?))
}

/// Raises this process's soft `RLIMIT_NOFILE` to the hard limit, so a thousand concurrent
/// streams (two sockets each here) fit. The workspace forbids `unsafe`, so instead of calling
/// `setrlimit` this asks util-linux's `prlimit` to do it for our pid. The server started
/// afterwards inherits the raised limit.
pub fn raise_fd_limit() -> FdLimit {
    let before = nofile_limits();
    if let Some((soft, hard)) = before
        && soft < hard
    {
        let value = if hard == u64::MAX {
            "unlimited".to_owned()
        } else {
            hard.to_string()
        };
        let raised = Command::new("prlimit")
            .arg("--pid")
            .arg(std::process::id().to_string())
            .arg(format!("--nofile={value}:{value}"))
            .status();
        if !matches!(raised, Ok(status) if status.success()) {
            eprintln!(
                "ccflare-bench: could not raise the open-files limit from {soft} (prlimit missing?); \
                 run `ulimit -n {hard}` first for the 1,000-stream scenario"
            );
        }
    }
    let after = nofile_limits();
    FdLimit {
        soft_before: before.map(|(soft, _)| soft),
        soft: after.map(|(soft, _)| soft),
        hard: after.map(|(_, hard)| hard),
    }
}

/// Open file descriptors of `pid` (the entries of `/proc/<pid>/fd`): sockets, the database
/// and its WAL, the log file, pipes.
pub fn fd_count(pid: u32) -> Option<u64> {
    let entries = std::fs::read_dir(proc_path(pid, "fd")).ok()?;
    // Bounded by the process's open-files limit.
    Some(entries.count() as u64)
}

/// One reading of a process.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProcSample {
    /// Since the sampler started.
    pub at_s: f64,
    pub rss_kb: u64,
    /// Only when the sampler was asked to count them (a directory listing costs more than
    /// reading `status`, so the fast memory samplers skip it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fds: Option<u64>,
}

/// The most samples one sampler keeps: over an hour at 5 ms, far beyond any use here, and a
/// bound on its memory (32 MB) whatever it is asked.
const MAX_SAMPLES: usize = 1_000_000;

/// Samples a process's RSS (and, if asked, its open file descriptors) every `period` until
/// stopped, keeping the maximum RSS and the series.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    max_kb: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Vec<ProcSample>>,
}

impl Sampler {
    pub fn start(pid: u32, period: Duration, count_fds: bool) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max_kb = Arc::new(AtomicU64::new(0));
        let task = {
            let stop = stop.clone();
            let max_kb = max_kb.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let mut series = Vec::new();
                while series.len() < MAX_SAMPLES && !stop.load(Ordering::Acquire) {
                    let Some(rss_kb) = rss_kb(pid) else { break };
                    let fds = if count_fds { fd_count(pid) } else { None };
                    max_kb.fetch_max(rss_kb, Ordering::Relaxed);
                    series.push(ProcSample {
                        at_s: started.elapsed().as_secs_f64(),
                        rss_kb,
                        fds,
                    });
                    tokio::time::sleep(period).await;
                }
                series
            })
        };
        Sampler { stop, max_kb, task }
    }

    /// Stops sampling; returns the largest RSS seen (kB) and every sample.
    pub async fn stop(self) -> (u64, Vec<ProcSample>) {
        self.stop.store(true, Ordering::Release);
        let series = self.task.await.unwrap_or_default();
        (self.max_kb.load(Ordering::Relaxed), series)
    }
}

/// The machine the run happened on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_mb: u64,
    pub kernel: String,
    /// `/proc/loadavg`'s 1-minute figure when the run started and when it ended: other work on
    /// the machine competes with the bench.
    pub load_at_start: f64,
    pub load_at_end: f64,
}

pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == "model name").then(|| value.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let memory_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        memory_mb: memory_kb / 1024,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| k.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into()),
        load_at_start: load_average(),
        load_at_end: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(rss_kb(pid).is_some_and(|kb| kb > 0));
        assert!(peak_rss_kb(pid).is_some_and(|kb| kb >= rss_kb(pid).unwrap_or(0) / 2));
        assert!(cpu_ticks(pid).is_some());
        assert!(run_queue_wait_ns(pid).is_some());
        assert!(nofile_limits().is_some_and(|(soft, hard)| soft <= hard));
        // At least stdin, stdout and stderr, and the listing's own handle.
        assert!(fd_count(pid).is_some_and(|fds| fds >= 3));
    }
}
