//! The JSON lines file sink: appends whole batches of sealed lines, rotates by size, keeps a
//! bounded number of rotated files (`audit.jsonl.1` newest ... `audit.jsonl.N` oldest).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Appends to a log file and rotates it.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: File,
    size: u64,
    /// Rotate before the next write whatever the size (a new chain seal begins).
    rotate_next: bool,
}

/// `path.n`: the n-th newest rotated file.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl RotatingFile {
    /// Opens (creating) the log; `max_bytes` 0 never rotates.
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> std::io::Result<RotatingFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = append(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_owned(),
            max_bytes,
            keep,
            file,
            size,
            rotate_next: false,
        })
    }

    /// Whether the next [`RotatingFile::write`] begins a new file (or, keeping none, empties
    /// this one): the writer begins it with a rotation checkpoint.
    pub fn will_rotate(&self) -> bool {
        self.size > 0 && (self.rotate_next || (self.max_bytes > 0 && self.size >= self.max_bytes))
    }

    /// Makes the next write begin a new file, if this one holds anything.
    pub fn rotate_before_next_write(&mut self) {
        self.rotate_next = true;
    }

    /// Nothing written yet.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Writes whole lines; rotates first when the file has reached its size. A batch is never
    /// split, so a file may exceed `max_bytes` by at most one batch.
    pub fn write(&mut self, lines: &[u8]) -> std::io::Result<()> {
        if self.will_rotate() {
            self.rotate()?;
        }
        self.rotate_next = false;
        self.file.write_all(lines)?;
        self.file.flush()?;
        self.size = self
            .size
            .saturating_add(u64::try_from(lines.len()).unwrap_or(u64::MAX));
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        // What was written is on disk before its name changes.
        self.file.sync_data()?;
        if self.keep == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        match std::fs::remove_file(rotated(&self.path, self.keep)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        for n in (1..self.keep).rev() {
            match std::fs::rename(
                rotated(&self.path, n),
                rotated(&self.path, n.saturating_add(1)),
            ) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        self.file = append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    // Audit logs are for the SOC, not for every local user.
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut f = RotatingFile::open(&path, 10, 2).unwrap();
        for i in 0..5 {
            f.write(format!("line {i} xxxx\n").as_bytes()).unwrap();
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(&path), "line 4 xxxx\n");
        assert_eq!(read(&rotated(&path, 1)), "line 3 xxxx\n");
        assert_eq!(read(&rotated(&path, 2)), "line 2 xxxx\n");
        assert!(!rotated(&path, 3).exists());
    }

    #[test]
    fn reopening_appends_and_counts_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/audit.jsonl");
        RotatingFile::open(&path, 100, 1)
            .unwrap()
            .write(b"one\n")
            .unwrap();
        let mut f = RotatingFile::open(&path, 4, 1).unwrap();
        f.write(b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(std::fs::read_to_string(rotated(&path, 1)).unwrap(), "one\n");
    }
}
