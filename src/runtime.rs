//! The async runtime the binary runs on, and how many threads it has.
//!
//! The daemon's runtime work is waiting on remotes: HTTP requests, JSON and
//! XML bodies, mapping. Its ledger has a thread of its own
//! ([`crate::store`]), and blocking work goes to tokio's blocking pool. One
//! runtime worker is enough for that and cheaper than one per core: with
//! two workers on a 2-core machine, each answer from the ledger thread woke
//! whichever worker was parked, and the daemon spent more of its CPU
//! switching threads than on any one function of its own. One worker cut
//! CPU per order by about a tenth with no added latency and by a seventh to
//! a fifth at 20 ms, at the same throughput (docs/BENCHMARKS.md, "One
//! runtime worker").
//!
//! An operator chooses another number with tokio's own variable,
//! `TOKIO_WORKER_THREADS` (docs/OPERATIONS.md, "Threads"). The simulators
//! (`ordersync sandbox`), which stand in for many remotes at once, keep
//! tokio's default of one worker per core.

/// tokio's own variable for the number of runtime workers.
pub const THREADS_VAR: &str = "TOKIO_WORKER_THREADS";

/// Runtime workers when the operator sets none: see the module docs.
pub const DEFAULT_WORKERS: usize = 1;

/// The number of runtime workers `value` (the variable's value, if set)
/// asks for: `None` for tokio's default of one per core. A value that is
/// not a whole number from 1 up is an error that names the variable and
/// the value (tokio itself would panic on it).
pub fn workers(value: Option<&std::ffi::OsStr>, per_core: bool) -> Result<Option<usize>, String> {
    let Some(raw) = value else {
        return Ok((!per_core).then_some(DEFAULT_WORKERS));
    };
    let text = raw.to_string_lossy();
    match text.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(format!(
            "{THREADS_VAR}={text:?} is not a number of runtime threads (a whole number from 1 up; unset it for {DEFAULT_WORKERS})"
        )),
    }
}

/// [`workers`] for this process's environment.
pub fn workers_from_env(per_core: bool) -> Result<Option<usize>, String> {
    workers(std::env::var_os(THREADS_VAR).as_deref(), per_core)
}

/// Builds the runtime with `workers` runtime workers (`None`: one per core).
pub fn build(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    builder.build()
}

/// glibc gives a thread arena's free top back to the kernel as soon as it
/// passes 128 KiB (`madvise`), and the next allocation faults the pages in
/// again. Each thread that allocates has its own arena and a job's task is about
/// 14 KB, so under load the daemon did this all the time: a fifth of its CPU
/// was kernel time, much of it these page faults and the TLB flushes that
/// `madvise` sends to the other core. Keep up to 64 MiB free per arena
/// instead: at 20k CloudSuite orders and no added latency, CPU per order fell
/// from 479-594 to 412-459 µs and kernel time by a third, with the same peak
/// RSS (docs/BENCHMARKS.md, "Freed heap kept"). Allocations of 128 KiB and
/// more are still their own mappings and go back when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_SETTINGS: [(i32, i32); 2] = [
    (libc::M_TRIM_THRESHOLD, 64 << 20),
    (libc::M_MMAP_THRESHOLD, 128 << 10),
];

/// Whether the operator set glibc's malloc tunables (`GLIBC_TUNABLES`,
/// its value given): theirs win over [`keep_freed_heap`]'s.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn operator_tunes_malloc(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| v.to_string_lossy().contains("glibc.malloc."))
}

/// Sets [`MALLOC_SETTINGS`] (glibc only) unless the operator tuned malloc.
/// Call it first thing in `main`.
pub fn keep_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if !operator_tunes_malloc(std::env::var_os("GLIBC_TUNABLES").as_deref()) {
        for (param, value) in MALLOC_SETTINGS {
            // SAFETY: mallopt only sets a parameter of the allocator (under
            // its own lock); `main` calls this before any other thread
            // exists. (Its answer says nothing: this glibc answers 1 even
            // for a parameter it does not know.)
            unsafe { libc::mallopt(param, value) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn the_operators_malloc_tunables_win() {
        assert!(!operator_tunes_malloc(None));
        assert!(!operator_tunes_malloc(Some(OsStr::new(
            "glibc.rtld.optional_static_tls=512"
        ))));
        assert!(operator_tunes_malloc(Some(OsStr::new(
            "glibc.rtld.optional_static_tls=512:glibc.malloc.trim_threshold=0"
        ))));
    }

    #[test]
    fn one_worker_unless_the_operator_or_the_simulators_say_otherwise() {
        assert_eq!(workers(None, false), Ok(Some(1)));
        assert_eq!(workers(None, true), Ok(None));
        assert_eq!(workers(Some(OsStr::new("4")), false), Ok(Some(4)));
        assert_eq!(workers(Some(OsStr::new(" 2\n")), true), Ok(Some(2)));
    }

    #[test]
    fn a_bad_thread_count_names_the_variable_and_the_value() {
        for bad in ["0", "-1", "two", "", "1e400", "99999999999999999999999"] {
            let err = workers(Some(OsStr::new(bad)), false).unwrap_err();
            assert!(err.contains("TOKIO_WORKER_THREADS"), "{err}");
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn the_built_runtime_has_the_workers_asked_for() {
        let workers_of = |value: Option<&str>, per_core| {
            build(workers(value.map(OsStr::new), per_core).unwrap())
                .unwrap()
                .metrics()
                .num_workers()
        };
        assert_eq!(workers_of(None, false), DEFAULT_WORKERS);
        assert_eq!(workers_of(Some("3"), false), 3);
        assert_eq!(workers_of(Some("3"), true), 3);
        // tokio's default reads the variable itself; only unset is one per core.
        if std::env::var_os(THREADS_VAR).is_none() {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            assert_eq!(workers_of(None, true), cores);
        }
    }
}
