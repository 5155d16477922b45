//! The data directory: the lock that keeps one server per directory, and the
//! backup and restore of its database (see ARCHITECTURE.md, "The data
//! directory").

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::StoreError;

/// The database of a data directory.
pub const DB_FILE: &str = "wuyang.db";
/// The lock file of a data directory.
pub const LOCK_FILE: &str = "wuyang.lock";

/// The exclusive lock on a data directory, held until dropped (or until the
/// process dies: the kernel releases it).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock of `dir` (creating the directory), or fails with
    /// [`StoreError::InUse`] naming the process that holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
        // What failed, and on which file: an operator's first question.
        let failed = |what: &str, path: &Path, e: std::io::Error| {
            StoreError::DataDir(format!("{what} {}: {e}", path.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| failed("creating the data directory", dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| failed("opening the lock file", &lock_path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(StoreError::InUse {
                    dir: dir.display().to_string(),
                    holder: if holder.is_empty() {
                        "another process".into()
                    } else {
                        format!("process {holder}")
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        Ok(DirLock { _file: file })
    }
}

/// What a database holds, as a backup or a restore reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbSummary {
    /// The storage format.
    pub format: String,
    /// The size of the file.
    pub bytes: u64,
    /// Entities, all tenants together.
    pub entities: u64,
    /// Tenants (the default one included once written to).
    pub tenants: u64,
}

/// Checks that `path` is a sound Wuyang database (SQLite's `quick_check`,
/// a storage format this build reads) and says what it holds.
pub fn inspect(path: &Path) -> Result<DbSummary, StoreError> {
    let bad = |reason: String| StoreError::DataDir(format!("{}: {reason}", path.display()));
    if !path.is_file() {
        return Err(bad("no such file".into()));
    }
    // Read-only first (a backup may sit on read-only media); a database in
    // WAL mode may need its shared-memory index written to be read.
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .or_else(|_| {
        Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    })?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| bad(format!("not a readable database ({e})")))?;
    if check != "ok" {
        return Err(bad(format!("the database is damaged: {check}")));
    }
    let format: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(|_| bad("not a Wuyang database (it has no storage format)".into()))?;
    let Some(format) = format else {
        return Err(bad(
            "not a Wuyang database (it has no storage format)".into()
        ));
    };
    if !crate::sqlite::is_known_format(&format) {
        return Err(StoreError::UnknownFormat(format));
    }
    let entities: i64 = conn.query_row("SELECT COUNT(*) FROM entities", [], |r| r.get(0))?;
    let tenants: i64 = conn.query_row("SELECT COUNT(*) FROM tenants", [], |r| r.get(0))?;
    drop(conn);
    Ok(DbSummary {
        format,
        bytes: std::fs::metadata(path)?.len(),
        entities: entities as u64,
        tenants: tenants as u64,
    })
}

/// Copies the database of `dir` to the new file `to`, consistently while a
/// server writes to it: one read transaction copies every page, so the copy
/// holds the state of one commit. `progress` is called about twice a second
/// with the bytes copied and the size of the database when the copy began.
/// The copy is synced and checked before it takes its name; an existing
/// `to` is never overwritten.
pub fn backup(
    dir: &Path,
    to: &Path,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<DbSummary, StoreError> {
    let source = dir.join(DB_FILE);
    if !source.is_file() {
        return Err(StoreError::DataDir(format!(
            "{} holds no database ({DB_FILE})",
            dir.display()
        )));
    }
    if to.exists() {
        return Err(StoreError::DataDir(format!(
            "{} exists already; a backup never overwrites a file",
            to.display()
        )));
    }
    let partial = with_suffix(to, ".partial");
    let _ = std::fs::remove_file(&partial);
    let result = copy_database(&source, &partial, progress).and_then(|()| {
        let summary = inspect(&partial)?;
        // A link fails where a file appeared meanwhile; a rename would
        // replace it.
        std::fs::hard_link(&partial, to).map_err(|e| {
            StoreError::DataDir(format!("cannot name the backup {}: {e}", to.display()))
        })?;
        std::fs::remove_file(&partial)?;
        sync_parent(to)?;
        Ok(summary)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
        let _ = std::fs::remove_file(with_suffix(&partial, "-journal"));
    }
    result
}

fn copy_database(
    source: &Path,
    to: &Path,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(), StoreError> {
    let src = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // The server's writer may hold the write lock for a commit; reading
    // never waits for it in WAL mode, but opening the WAL index may.
    src.busy_timeout(Duration::from_secs(10))?;
    let total: u64 = src.query_row(
        "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        [],
        |r| r.get::<_, i64>(0),
    )? as u64;
    let mut dst = Connection::open(to)?;
    // The copy is synced once, whole, below.
    dst.pragma_update(None, "synchronous", "OFF")?;
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| -> Result<(), StoreError> {
        scope.spawn(|| {
            let mut ticks = 0u32;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                ticks += 1;
                if ticks.is_multiple_of(10)
                    && let Ok(meta) = std::fs::metadata(to)
                {
                    progress(meta.len().min(total), total);
                }
            }
        });
        let outcome = (|| {
            let copy = rusqlite::backup::Backup::new(&src, &mut dst)?;
            // One step of every page: one read transaction, one commit's state.
            copy.step(-1)?;
            Ok::<(), StoreError>(())
        })();
        done.store(true, Ordering::Relaxed);
        outcome
    })?;
    // A self-contained file: no WAL belongs with it.
    dst.pragma_update(None, "journal_mode", "DELETE")?;
    drop(dst);
    File::open(to)?.sync_all()?;
    progress(total, total);
    Ok(())
}

/// Puts the backup `from` in place as the database of `dir`. Refuses while a
/// server (anything holding the directory's lock) runs there, refuses a file
/// that is not a sound Wuyang database, and refuses a directory that holds a
/// database already unless `replace`, which moves that database and its WAL
/// aside together first. Returns what the restored database holds and where
/// the replaced one went.
pub fn restore(
    from: &Path,
    dir: &Path,
    replace: bool,
) -> Result<(DbSummary, Option<PathBuf>), StoreError> {
    // The backup is checked first: a refused file leaves no directory made
    // and no lock file behind.
    let summary = inspect(from)?;
    let _lock = DirLock::acquire(dir)?;
    let db = dir.join(DB_FILE);
    let companions = |base: &Path| {
        [
            base.to_path_buf(),
            with_suffix(base, "-wal"),
            with_suffix(base, "-shm"),
        ]
    };
    let present: Vec<PathBuf> = companions(&db).into_iter().filter(|p| p.exists()).collect();
    let mut moved = None;
    if !present.is_empty() {
        if !replace {
            return Err(StoreError::DataDir(format!(
                "{} holds a database already; move it away or pass --replace",
                dir.display()
            )));
        }
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let aside = with_suffix(&db, &format!(".replaced-{secs}"));
        for (current, target) in companions(&db).iter().zip(companions(&aside)) {
            if current.exists() {
                std::fs::rename(current, target)?;
            }
        }
        moved = Some(aside);
    }
    let incoming = with_suffix(&db, ".restoring");
    std::fs::copy(from, &incoming)?;
    File::open(&incoming)?.sync_all()?;
    std::fs::rename(&incoming, &db)?;
    sync_parent(&db)?;
    Ok((summary, moved))
}

/// `path` with `suffix` appended to its file name (`wuyang.db` → `wuyang.db-wal`).
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The directory `path` is in (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sync_parent(path: &Path) -> Result<(), StoreError> {
    File::open(parent_dir(path))?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_directory_names_the_holder_and_the_first_releases_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        let err = DirLock::acquire(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("in use") && text.contains(&std::process::id().to_string()),
            "{text}"
        );
        drop(first);
        DirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn inspect_refuses_what_is_not_a_sound_wuyang_database() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "not a database at all, just some words").unwrap();
        assert!(
            inspect(&text)
                .unwrap_err()
                .to_string()
                .contains("notes.txt")
        );
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        assert!(
            inspect(&other)
                .unwrap_err()
                .to_string()
                .contains("not a Wuyang database")
        );
        assert!(inspect(&dir.path().join("missing.db")).is_err());
    }

    #[test]
    fn a_refused_restore_makes_no_directory() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "not a database").unwrap();
        let target = dir.path().join("data");
        assert!(restore(&text, &target, false).is_err());
        assert!(!target.exists(), "a refused restore made {target:?}");
    }
}
