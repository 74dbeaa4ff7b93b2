//! A file of which only some byte ranges are in memory: the page reads a
//! dropped checkpoint of 2 GB by slices, never whole. A read outside the
//! loaded ranges fails with [`NotLoaded`] and remembers where it was, so the
//! caller can load from there and try again.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::rc::Rc;

/// A handle on the file. Clones share the loaded ranges (one handle reads,
/// another loads) but each has its own position.
#[derive(Clone)]
pub struct PartialFile {
    shared: Rc<RefCell<Ranges>>,
    position: u64,
}

struct Ranges {
    len: u64,
    /// Loaded bytes by their start offset.
    chunks: BTreeMap<u64, Vec<u8>>,
    /// Where the last read outside the loaded ranges was.
    miss: Option<u64>,
}

/// The error of a read outside the loaded ranges.
#[derive(Debug)]
pub struct NotLoaded(pub u64);

impl std::fmt::Display for NotLoaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "byte {} of the file is not loaded", self.0)
    }
}

impl std::error::Error for NotLoaded {}

impl Ranges {
    /// How many loaded bytes from `at` on one range holds (0 when `at` is
    /// not loaded).
    fn loaded_from(&self, at: u64) -> u64 {
        let hit = self.chunks.range(..=at).next_back().filter(|(start, bytes)| at < **start + bytes.len() as u64);
        hit.map_or(0, |(start, bytes)| *start + bytes.len() as u64 - at)
    }

    /// Bytes from `at` to the next loaded range's start or the file's end.
    fn gap_from(&self, at: u64) -> u64 {
        let next = self.chunks.range(at..).next().map_or(self.len, |(start, _)| *start);
        next.max(at) - at
    }
}

impl PartialFile {
    /// A file of `len` bytes with nothing loaded.
    pub fn new(len: u64) -> PartialFile {
        PartialFile { shared: Rc::new(RefCell::new(Ranges { len, chunks: BTreeMap::new(), miss: None })), position: 0 }
    }

    pub fn len(&self) -> u64 {
        self.shared.borrow().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes `bytes` the file's contents from `offset` on, where nothing is
    /// loaded yet: bytes over a loaded range are dropped, so loaded ranges
    /// never overlap and never hold more than the file's length (a hostile
    /// archive whose reads miss at many offsets once made retries load the
    /// same megabytes hundreds of times over).
    pub fn insert(&self, offset: u64, mut bytes: Vec<u8>) {
        let mut ranges = self.shared.borrow_mut();
        let mut at = offset;
        while !bytes.is_empty() {
            // Skip what a loaded range already holds, then keep what fits
            // before the next one.
            let covered = ranges.loaded_from(at);
            if covered > 0 {
                let skip = covered.min(bytes.len() as u64) as usize;
                bytes.drain(..skip);
                at += skip as u64;
                continue;
            }
            let gap = ranges.gap_from(at).min(bytes.len() as u64) as usize;
            let rest = bytes.split_off(gap);
            ranges.chunks.insert(at, std::mem::replace(&mut bytes, rest));
            at += gap as u64;
        }
    }

    /// How many bytes from `at` on are not loaded: up to the next loaded
    /// range or the file's end. What a read that missed at `at` should load.
    pub fn gap_from(&self, at: u64) -> u64 {
        self.shared.borrow().gap_from(at)
    }

    /// Bytes of the file loaded now.
    pub fn loaded_bytes(&self) -> u64 {
        self.shared.borrow().chunks.values().map(|c| c.len() as u64).sum()
    }

    /// Drops every loaded range, to keep memory to what one read needs.
    pub fn clear(&self) {
        self.shared.borrow_mut().chunks.clear();
    }

    /// Where the last failed read was, once.
    pub fn take_miss(&self) -> Option<u64> {
        self.shared.borrow_mut().miss.take()
    }
}

impl Read for PartialFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut ranges = self.shared.borrow_mut();
        if self.position >= ranges.len || buf.is_empty() {
            return Ok(0);
        }
        let at = self.position;
        // The chunk that holds `at`, if any: the last one starting at or
        // before it (chunks never overlap).
        let hit = ranges.chunks.range(..=at).next_back().filter(|(start, bytes)| at < **start + bytes.len() as u64);
        let Some((start, bytes)) = hit else {
            ranges.miss = Some(at);
            return Err(std::io::Error::other(NotLoaded(at)));
        };
        let from = (at - start) as usize;
        let n = buf.len().min(bytes.len() - from);
        buf[..n].copy_from_slice(&bytes[from..from + n]);
        self.position += n as u64;
        Ok(n)
    }
}

impl Seek for PartialFile {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let len = self.len() as i128;
        let target = match to {
            SeekFrom::Start(n) => n as i128,
            SeekFrom::End(d) => len + d as i128,
            SeekFrom::Current(d) => self.position as i128 + d as i128,
        };
        if target < 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start of the file"));
        }
        self.position = target as u64;
        Ok(self.position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_loaded_ranges_and_names_the_first_gap() {
        let file = PartialFile::new(10);
        file.insert(2, vec![2, 3, 4]);
        file.insert(5, vec![5, 6]);
        let mut reader = file.clone();
        reader.seek(SeekFrom::Start(2)).unwrap();
        let mut got = [0u8; 4];
        reader.read_exact(&mut got).unwrap();
        assert_eq!(got, [2, 3, 4, 5]);
        let mut rest = Vec::new();
        let error = reader.read_to_end(&mut rest).unwrap_err();
        assert!(error.to_string().contains("byte 7"), "{error}");
        assert_eq!(file.take_miss(), Some(7));
        assert_eq!(file.take_miss(), None);
        reader.seek(SeekFrom::End(-1)).unwrap();
        file.insert(7, vec![7, 8, 9]);
        assert_eq!(reader.read(&mut got).unwrap(), 1);
        assert_eq!(reader.read(&mut got).unwrap(), 0);
    }

    #[test]
    fn loaded_ranges_never_overlap_so_a_file_never_holds_more_than_its_length() {
        let file = PartialFile::new(10);
        file.insert(4, vec![4, 5]);
        assert_eq!(file.gap_from(0), 4);
        assert_eq!(file.gap_from(6), 4);
        // Over the loaded range and past it: only the gaps are kept.
        file.insert(2, vec![2, 3, 40, 50, 6, 7]);
        file.insert(0, (0..10).collect());
        assert_eq!(file.loaded_bytes(), 10);
        let mut all = Vec::new();
        file.clone().read_to_end(&mut all).unwrap();
        assert_eq!(all, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "the first bytes loaded stay");
        for _ in 0..100 {
            file.insert(1, vec![0; 9]);
        }
        assert_eq!(file.loaded_bytes(), 10);
    }
}
