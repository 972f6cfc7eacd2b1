//! Files the tool writes are written atomically: a temporary file `.NAME.tmp-PID` in the same
//! folder, flushed to disk, then renamed over the target. A crash or a full disk never leaves a
//! half-written file, and the temporary files of a process that died are removed by the next
//! write to the same folder.
//!
//! Only a regular file (or nothing) is replaced: a target that is a device, a FIFO or a socket
//! (`-o /dev/null`, `-o /dev/stdout`) is written through, as a shell redirection would, since
//! renaming over it would replace the device node by a regular file. A symbolic link is followed:
//! the file it points to is replaced, the link stays.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `path` atomically with what `fill` writes.
pub fn write_atomic_with(path: &Path, fill: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>) -> std::io::Result<()> {
    let path = &resolve(path)?;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.is_dir() {
            return Err(std::io::Error::other(format!("`{}` is a folder", path.display())));
        }
        if !meta.is_file() {
            return write_through(path, fill);
        }
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| std::io::Error::other(format!("`{}` is not a file path", path.display())))?;
    remove_stale_temporaries(&dir, Some(name));
    let tmp = dir.join(format!(".{}{TMP}{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let file = std::fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        fill(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Copies `from` to `to` atomically.
pub fn copy_atomic(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut source = std::fs::File::open(from)?;
    write_atomic_with(to, |w| std::io::copy(&mut source, w).map(drop))
}

/// What separates a temporary file's target name from the PID of the process writing it.
const TMP: &str = ".tmp-";

/// `path` with a symbolic link (or a chain of them) resolved to the file it points to, which may
/// not exist yet.
fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    let mut path = path.to_path_buf();
    // As the kernel's limit on links followed (40): a loop is an error, not a hang.
    for _ in 0..40 {
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::read_link(&path)?;
                path = match path.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            _ => return Ok(path),
        }
    }
    Err(std::io::Error::other(format!("`{}`: too many levels of symbolic links", path.display())))
}

/// Writes into an existing file that is not a regular one (a device, a FIFO): there is nothing
/// to make atomic, and nothing may replace it.
fn write_through(path: &Path, fill: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    fill(&mut w)?;
    w.flush()
}

/// Removes the temporary files in `dir` (of the target `name` only, when given) that belong to
/// processes no longer running: what a crash (or a second Ctrl-C) in the middle of a write
/// left. Files of running processes, and any that cannot be told apart, are left alone.
pub fn remove_stale_temporaries(dir: &Path, name: Option<&OsStr>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some((target, pid)) = file_name.to_str().and_then(|n| n.strip_prefix('.')).and_then(|n| n.rsplit_once(TMP)) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if name.is_some_and(|n| n.to_str() != Some(target)) || is_running(pid) != Some(false) {
            continue;
        }
        let _ = std::fs::remove_file(entry.path());
    }
}

/// Whether process `pid` is running; `None` where this cannot be told (no `/proc`).
fn is_running(pid: u32) -> Option<bool> {
    if pid == std::process::id() {
        return Some(true);
    }
    Path::new("/proc/self").exists().then(|| Path::new("/proc").join(pid.to_string()).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("incc-fsutil-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A PID that no process has: past the kernel's largest (2^22).
    const DEAD: u32 = 4_999_999;

    #[test]
    fn stale_temporaries_of_dead_processes_go_and_others_stay() {
        let dir = folder("stale");
        let dead = dir.join(format!(".model.onnx{TMP}{DEAD}"));
        let other_target = dir.join(format!(".other.onnx{TMP}{DEAD}"));
        // PID 1 always runs.
        let alive = dir.join(format!(".model.onnx{TMP}1"));
        let unrelated = dir.join(".model.onnx.tmp-notapid");
        for f in [&dead, &other_target, &alive, &unrelated] {
            std::fs::write(f, b"half").unwrap();
        }
        write_atomic(&dir.join("model.onnx"), b"whole").unwrap();
        assert!(!dead.exists(), "the dead process's temporary is removed by the next write of its target");
        assert!(other_target.exists() && alive.exists() && unrelated.exists());
        remove_stale_temporaries(&dir, None);
        assert!(!other_target.exists(), "and all of a folder's, when asked");
        assert!(alive.exists() && unrelated.exists());
        assert_eq!(std::fs::read(dir.join("model.onnx")).unwrap(), b"whole");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_symbolic_link_is_followed_and_kept() {
        let dir = folder("link");
        std::fs::write(dir.join("real"), b"old").unwrap();
        std::os::unix::fs::symlink("real", dir.join("link")).unwrap();
        write_atomic(&dir.join("link"), b"new").unwrap();
        assert!(std::fs::symlink_metadata(dir.join("link")).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(dir.join("real")).unwrap(), b"new");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_written_through_not_replaced() {
        use std::os::unix::fs::FileTypeExt;
        let dir = folder("fifo");
        let fifo = dir.join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("skipped: no mkfifo");
            return;
        }
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        write_atomic(&fifo, b"through the pipe").unwrap();
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "still a FIFO");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_folder_is_refused() {
        let dir = folder("dir");
        let err = write_atomic(&dir, b"x").unwrap_err().to_string();
        assert!(err.contains("is a folder"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
