//! What a report is read from: an open file (an shm object is one, under /dev/shm) or a copy
//! of a segment's bytes.
//!
//! The object is only ever read, with ordinary reads (never mapped, never written), while
//! other processes may be writing it: each field is as it was at some instant during the read.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use dmxp_nostd::layout::HEADER_SIZE;

/// An object a report can be read from: its size and bytes at given offsets.
pub trait Object {
    /// The object's size in bytes.
    fn size(&self) -> io::Result<u64>;

    /// Fills `buf` with the bytes at `offset`; an error (`UnexpectedEof` past the end) when
    /// they cannot all be read.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// A copy of the first `HEADER_SIZE` bytes (fewer if the object is shorter).
    fn header_bytes(&self) -> io::Result<Vec<u8>>;
}

impl Object for File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    /// Read from the file's current position (the start, for a file just opened).
    fn header_bytes(&self) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(HEADER_SIZE);
        let reader: &File = self;
        reader.take(HEADER_SIZE as u64).read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}

impl Object for [u8] {
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn header_bytes(&self) -> io::Result<Vec<u8>> {
        Ok(self[..self.len().min(HEADER_SIZE)].to_vec())
    }
}

/// The size of `object` and a copy of its first `HEADER_SIZE` bytes (fewer if it is shorter),
/// in that order: what [`analyze`](crate::analyze) takes.
pub fn read_header<O: Object + ?Sized>(object: &O) -> io::Result<(u64, Vec<u8>)> {
    let size = object.size()?;
    let bytes = object.header_bytes()?;
    Ok((size, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_like_a_file() {
        let data: Vec<u8> = (0..HEADER_SIZE + 10).map(|i| i as u8).collect();
        let object: &[u8] = &data;
        let (size, header) = read_header(object).unwrap();
        assert_eq!(size, data.len() as u64);
        assert_eq!(header, data[..HEADER_SIZE]);
        let mut word = [0u8; 4];
        object.read_exact_at(&mut word, 3).unwrap();
        assert_eq!(word, [3, 4, 5, 6]);
        let past = object.read_exact_at(&mut word, data.len() as u64 - 2);
        assert_eq!(past.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert!(object.read_exact_at(&mut word, u64::MAX).is_err());

        let short: &[u8] = &[1, 2, 3];
        assert_eq!(read_header(short).unwrap(), (3, vec![1, 2, 3]));
    }
}
