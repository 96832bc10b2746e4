//! Process limits the server needs for its promised load.

/// Open files below which a warning says how many concurrent streams fit.
const ENOUGH_OPEN_FILES: u64 = 4096;

/// Raises the soft limit on open files to the hard limit, as servers (and Go's runtime) do:
/// every stream holds two sockets (client and upstream), and the common default soft limit of
/// 1,024 would stop ccflare near 500 concurrent streams, with failures that look like the
/// upstream's. The hard limit is the administrator's ceiling and is never touched.
#[cfg(unix)]
pub fn raise_open_files() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    // `None` means unlimited.
    let mut soft = current;
    if current.is_some() && current != maximum {
        let raised = Rlimit {
            current: maximum,
            maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                soft = maximum;
                tracing::debug!(from = ?current, to = ?maximum, "raised the open-files limit");
            }
            // macOS refuses an unlimited soft limit; keep what the system gave.
            Err(error) => tracing::debug!(%error, "could not raise the open-files limit"),
        }
    }
    if let Some(soft) = soft.filter(|&n| n < ENOUGH_OPEN_FILES) {
        tracing::warn!(
            open_files = soft,
            "the open-files limit allows about {} concurrent streams; raise it (ulimit -n) for more",
            soft / 2
        );
    }
}

#[cfg(not(unix))]
pub fn raise_open_files() {}
