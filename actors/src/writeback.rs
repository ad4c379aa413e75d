//! Early writeback: the disk is asked to start writing a file's bytes as
//! they are written (as RocksDB's `bytes_per_sync` does), not all at the
//! fdatasync that makes the file durable. A large upload then reaches the
//! disk while it arrives, and its sync before the answer has little left
//! to write; and where two copies of it are written at once (the owner's
//! and the standby's), they do not queue for the disk together at the end.

use std::fs::File;
use std::os::fd::AsRawFd;

/// Bytes written between two requests to the disk.
pub const WINDOW: u64 = 8 * 1024 * 1024;

/// Notes that `file` grew by its writes from `before` to `after` bytes:
/// asks the disk to start writing each whole [`WINDOW`] this completed,
/// without waiting for it. Only a hint: a failure here is met again, and
/// reported, by the fdatasync that follows.
pub fn wrote(file: &File, before: u64, after: u64) {
    let (from, to) = windows_completed(before, after);
    if from < to {
        start(file, from, to - from);
    }
}

/// The byte range of the windows a write from `before` to `after`
/// completed: empty when it completed none.
fn windows_completed(before: u64, after: u64) -> (u64, u64) {
    (before / WINDOW * WINDOW, after / WINDOW * WINDOW)
}

/// `sync_file_range(2)` with `SYNC_FILE_RANGE_WRITE`: starts writing the
/// dirty pages of the range, returns without waiting for them.
fn start(file: &File, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is open for as long as `file` is borrowed, and
    // the call reads no memory of ours.
    let _ = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_for_each_whole_window_a_write_completes_once() {
        assert_eq!(windows_completed(0, WINDOW - 1), (0, 0));
        assert_eq!(windows_completed(0, WINDOW), (0, WINDOW));
        assert_eq!(windows_completed(WINDOW, WINDOW + 10), (WINDOW, WINDOW));
        assert_eq!(
            windows_completed(WINDOW - 5, 3 * WINDOW + 5),
            (0, 3 * WINDOW)
        );
    }

    #[test]
    fn a_file_written_with_hints_reads_back_whole() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("upload");
        let mut file = File::create(&path).expect("a new file");
        let chunk = vec![7u8; 3 * 1024 * 1024 + 11];
        let mut size = 0;
        for _ in 0..4 {
            std::io::Write::write_all(&mut file, &chunk).expect("written");
            let before = size;
            size += chunk.len() as u64;
            wrote(&file, before, size);
        }
        file.sync_data().expect("synced");
        let back = std::fs::read(&path).expect("read back");
        assert_eq!(back.len() as u64, size);
        assert!(back.iter().all(|b| *b == 7));
    }
}
