//! Process limits the server needs for its promised load.

use ccflare_proxy::DEFAULT_MAX_CONNECTIONS;

/// Open files kept for everything but client and upstream sockets: the database and its
/// journal files, the runtime's own descriptors, standard streams, a log file.
const RESERVED_FILES: u64 = 64;

/// Open files below which a warning says how many concurrent streams fit.
const ENOUGH_OPEN_FILES: u64 = 4096;

/// Raises the soft limit on open files to the hard limit, as servers (and Go's runtime) do:
/// every stream holds two sockets (client and upstream), and the common default soft limit of
/// 1,024 would stop ccflare near 500 concurrent streams, with failures that look like the
/// upstream's. The hard limit is the administrator's ceiling and is never touched.
///
/// Returns how many client connections to serve at once: `configured` (the `max_connections`
/// option) when it is set and fits, else as many as can each also open their upstream
/// connection, half of what the limit leaves after [`RESERVED_FILES`], and never more than
/// [`DEFAULT_MAX_CONNECTIONS`] unless configured (an unlimited or huge open-files limit is no
/// reason to take every connection offered).
pub fn raise_open_files(configured: usize) -> usize {
    let soft = raise_soft_limit();
    let fit = soft.map_or(usize::MAX, connections_for);
    if configured > fit {
        tracing::warn!(
            max_connections = configured,
            "max_connections is more than the open-files limit allows; serving {fit} at once \
             (raise the limit with ulimit -n)"
        );
    } else if configured > 0 {
        return configured;
    }
    if let Some(soft) = soft.filter(|&n| n < ENOUGH_OPEN_FILES) {
        tracing::warn!(
            open_files = soft,
            "the open-files limit allows about {fit} concurrent streams; raise it (ulimit -n) for more",
        );
    }
    at_once(configured, fit)
}

/// Connections served at once: `configured` when set (lowered to what fits), else what fits
/// up to [`DEFAULT_MAX_CONNECTIONS`].
fn at_once(configured: usize, fit: usize) -> usize {
    match configured {
        0 => fit.min(DEFAULT_MAX_CONNECTIONS),
        n => n.min(fit),
    }
}

/// Client connections that fit in `open_files` (at least a few, whatever the limit).
fn connections_for(open_files: u64) -> usize {
    let pairs = open_files.saturating_sub(RESERVED_FILES) / 2;
    usize::try_from(pairs.max(8)).unwrap_or(usize::MAX)
}

/// The soft limit after raising it; `None` when unlimited.
#[cfg(unix)]
fn raise_soft_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    // `None` means unlimited.
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    if current.is_none() || current == maximum {
        return current;
    }
    // macOS refuses a soft limit above its per-process ceiling (OPEN_MAX, 10,240) even when
    // the hard limit is unlimited, so that is the second try.
    for soft in [
        maximum,
        Some(maximum.map_or(MACOS_OPEN_MAX, |m| m.min(MACOS_OPEN_MAX))),
    ] {
        // (`None` is unlimited, above every number; `current` is a number here.)
        if soft.is_some_and(|s| current.is_some_and(|c| s <= c)) {
            break;
        }
        let raised = Rlimit {
            current: soft,
            maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::debug!(from = ?current, to = ?soft, "raised the open-files limit");
                return soft;
            }
            Err(error) => {
                tracing::debug!(%error, to = ?soft, "could not raise the open-files limit")
            }
        }
    }
    current
}

/// macOS's `OPEN_MAX`: the most open files a process may ask for there.
#[cfg(unix)]
const MACOS_OPEN_MAX: u64 = 10_240;

#[cfg(not(unix))]
fn raise_soft_limit() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::{DEFAULT_MAX_CONNECTIONS, at_once, connections_for};

    #[test]
    fn an_unlimited_open_files_limit_still_bounds_connections() {
        assert_eq!(DEFAULT_MAX_CONNECTIONS, 10_000);
        assert_eq!(at_once(0, usize::MAX), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(at_once(0, 480), 480);
        assert_eq!(
            at_once(50_000, usize::MAX),
            50_000,
            "a person's choice stands"
        );
        assert_eq!(at_once(50_000, 480), 480);
    }

    #[test]
    fn half_of_what_the_reserve_leaves_and_never_none() {
        assert_eq!(connections_for(1024), 480);
        assert_eq!(connections_for(512), 224);
        assert_eq!(connections_for(20), 8);
        assert_eq!(connections_for(u64::MAX), ((u64::MAX - 64) / 2) as usize);
    }
}
