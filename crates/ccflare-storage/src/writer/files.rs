//! The writer's two files beside the database, both append-only, one JSON line per record:
//!
//! - the **spill file** (`<database>-spill.jsonl`) holds request records that could not go
//!   into the database for longer than the writer waits in memory. They are replayed into the
//!   database, oldest first, once it can be written again (or at the next start), and the file
//!   is emptied when all of it is in. It is bounded: when full, records wait in memory again.
//! - the **rejects file** (`<database>-rejects.jsonl`) keeps what the database refused for a
//!   reason of its own (a constraint on one row) and spill lines that cannot be read back, with
//!   the error, so nothing vanishes unseen.
//!
//! All file work runs on tokio's blocking pool; the writer task only serializes.

use ccflare_core::record::RequestRecord;
use ccflare_core::time::{Clock, SystemClock, format_rfc3339};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the files go and how big the spill file may grow.
#[derive(Debug, Clone)]
pub(super) struct Files {
    spill: Option<PathBuf>,
    rejects: Option<PathBuf>,
    max_spill_bytes: u64,
    /// Bytes in the spill file.
    spill_len: u64,
    /// Bytes of the spill file already replayed into the database.
    replayed_to: u64,
    /// Records in the spill file not replayed yet.
    waiting: u64,
}

/// Why records could not be spilled.
#[derive(Debug, thiserror::Error)]
pub(super) enum SpillError {
    #[error("no spill file is configured")]
    Disabled,
    #[error("the spill file {path} is full ({max} bytes)")]
    Full { path: PathBuf, max: u64 },
    #[error("cannot write the spill file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Records read back from the spill file, and the lines among them that could not be read.
pub(super) struct Chunk {
    pub records: Vec<RequestRecord>,
    pub unreadable: Vec<String>,
    /// Offset just past the last line read.
    pub end: u64,
}

impl Files {
    pub fn new(spill: Option<PathBuf>, rejects: Option<PathBuf>, max_spill_bytes: u64) -> Files {
        Files {
            spill,
            rejects,
            max_spill_bytes,
            spill_len: 0,
            replayed_to: 0,
            waiting: 0,
        }
    }

    pub fn spill_path(&self) -> Option<&Path> {
        self.spill.as_deref()
    }

    /// Records in the spill file waiting to be replayed.
    pub fn waiting(&self) -> u64 {
        self.waiting
    }

    /// Stops using the spill file (its content is left as it is).
    pub fn disable_spill(&mut self) {
        self.spill = None;
        self.waiting = 0;
    }

    /// Looks at a spill file left by an earlier run: its records wait to be replayed.
    pub async fn load(&mut self) -> std::io::Result<()> {
        let Some(path) = self.spill.clone() else {
            return Ok(());
        };
        let (len, lines) = blocking(move || {
            let file = match std::fs::File::open(&path) {
                Ok(file) => file,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
                Err(error) => return Err(error),
            };
            let len = file.metadata()?.len();
            let mut lines = 0u64;
            for line in BufReader::new(file).split(b'\n') {
                if !line?.is_empty() {
                    lines += 1;
                }
            }
            Ok((len, lines))
        })
        .await?;
        self.spill_len = len;
        self.replayed_to = 0;
        self.waiting = lines;
        Ok(())
    }

    /// Appends `records` to the spill file and syncs it to disk. All or nothing: on failure
    /// the file is cut back to where it was, and the caller keeps the records.
    pub async fn spill(&mut self, records: &[Arc<RequestRecord>]) -> Result<(), SpillError> {
        let Some(path) = self.spill.clone() else {
            return Err(SpillError::Disabled);
        };
        let mut text = Vec::with_capacity(records.len() * 512);
        for record in records {
            // A plain struct of strings and numbers: serializing it cannot fail.
            if serde_json::to_writer(&mut text, record).is_ok() {
                text.push(b'\n');
            }
        }
        if self.spill_len + text.len() as u64 > self.max_spill_bytes {
            return Err(SpillError::Full {
                path,
                max: self.max_spill_bytes,
            });
        }
        let at = self.spill_len;
        let added = text.len() as u64;
        let written = {
            let path = path.clone();
            blocking(move || append_synced(&path, at, &text)).await
        };
        written.map_err(|source| SpillError::Io { path, source })?;
        self.spill_len += added;
        self.waiting += records.len() as u64;
        Ok(())
    }

    /// Reads up to `max` records after those already replayed.
    pub async fn next_chunk(&self, max: usize) -> std::io::Result<Chunk> {
        let Some(path) = self.spill.clone() else {
            return Ok(Chunk {
                records: Vec::new(),
                unreadable: Vec::new(),
                end: 0,
            });
        };
        let from = self.replayed_to;
        let to = self.spill_len;
        blocking(move || {
            let mut file = std::fs::File::open(&path)?;
            file.seek(SeekFrom::Start(from))?;
            let mut reader = BufReader::new(file.take(to - from));
            let mut chunk = Chunk {
                records: Vec::new(),
                unreadable: Vec::new(),
                end: from,
            };
            let mut line = Vec::new();
            while chunk.records.len() + chunk.unreadable.len() < max {
                line.clear();
                let read = reader.read_until(b'\n', &mut line)?;
                if read == 0 {
                    // The file ends before where this run wrote up to (someone cut it): what
                    // is not there cannot be replayed, and must not be waited for forever.
                    chunk.end = to;
                    break;
                }
                chunk.end += read as u64;
                let text = line.strip_suffix(b"\n").unwrap_or(&line);
                if text.is_empty() {
                    continue;
                }
                match serde_json::from_slice::<RequestRecord>(text) {
                    Ok(record) => chunk.records.push(record),
                    // A line cut by a crash in the middle of an append, or damaged on disk.
                    Err(_) => chunk
                        .unreadable
                        .push(String::from_utf8_lossy(text).into_owned()),
                }
            }
            Ok(chunk)
        })
        .await
    }

    /// Marks a chunk as replayed; once the whole file is, empties it.
    pub async fn replayed(&mut self, chunk_end: u64, lines: u64) -> std::io::Result<()> {
        self.replayed_to = chunk_end;
        self.waiting = self.waiting.saturating_sub(lines);
        if self.replayed_to < self.spill_len {
            return Ok(());
        }
        if let Some(path) = self.spill.clone() {
            blocking(move || match std::fs::remove_file(&path) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
                _ => Ok(()),
            })
            .await?;
        }
        self.spill_len = 0;
        self.replayed_to = 0;
        self.waiting = 0;
        Ok(())
    }

    /// Keeps a record the database refused, with the reason. Returns whether it was kept.
    pub async fn reject(&self, what: serde_json::Value, error: &str) -> bool {
        let Some(path) = self.rejects.clone() else {
            return false;
        };
        let line = serde_json::json!({
            "rejected_at": format_rfc3339(SystemClock.now_ms()),
            "error": error,
            "record": what,
        });
        let mut text = line.to_string().into_bytes();
        text.push(b'\n');
        let path_shown = path.display().to_string();
        match blocking(move || {
            let at = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            append_synced(&path, at, &text)
        })
        .await
        {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(%error, file = %path_shown, "cannot write the rejects file");
                false
            }
        }
    }
}

/// Writes `text` at offset `at` of the file (created mode 0600 if missing) and syncs it; on
/// failure cuts the file back to `at`, so a half-written line never stays behind.
fn append_synced(path: &Path, at: u64, text: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let created = !path.exists();
    let mut file = options.open(path)?;
    let result = (|| {
        file.seek(SeekFrom::Start(at))?;
        file.write_all(text)?;
        file.sync_data()
    })();
    if result.is_err() {
        let _ = file.set_len(at);
        return result;
    }
    if created {
        // The new name must survive a crash too.
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = std::fs::File::open(parent).and_then(|dir| dir.sync_all());
        }
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| Err(std::io::Error::other(join.to_string())))
}
