//! The snapshot file's framing: a fixed header — magic, format version,
//! CRC-32 and length of the body — then the body, JSON. A file that is not
//! a snapshot, is of another format version, is cut short or has a wrong
//! checksum is refused with one line before any of it is used.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// The first bytes of every tandem snapshot.
const MAGIC: &[u8; 8] = b"TANDEMSN";
/// The body's format. Bump it whenever a saved structure changes shape;
/// a reader refuses every version but its own (no upgrade path yet).
pub const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 4 + 8;
/// Far more than any VM's state (RAM goes to its own file).
pub const MAX_BODY: u64 = 64 << 20;

/// `body` with the header in front: a state file's bytes (also what a
/// migration sends).
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(HEADER_LEN + body.len());
    framed.extend_from_slice(MAGIC);
    framed.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    framed.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    framed.extend_from_slice(&(body.len() as u64).to_le_bytes());
    framed.extend_from_slice(body);
    framed
}

/// Writes `body` to `path` with the header, and syncs it.
pub fn write(path: &Path, body: &[u8]) -> Result<()> {
    let mut file =
        File::create(path).with_context(|| format!("snapshot file {}", path.display()))?;
    file.write_all(&frame(body))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing snapshot file {}", path.display()))
}

/// Reads and checks the file at `path`; returns its body.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    let mut file = File::open(path).with_context(|| format!("snapshot file {}", path.display()))?;
    let mut bytes = Vec::new();
    Read::take(&mut file, HEADER_LEN as u64 + MAX_BODY + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading snapshot file {}", path.display()))?;
    check(&bytes).with_context(|| format!("snapshot file {}", path.display()))
}

/// The body of a whole snapshot file `bytes`, once every check passed.
pub fn check(bytes: &[u8]) -> Result<Vec<u8>> {
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        bail!("not a tandem snapshot");
    }
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let version = word(8);
    if version != FORMAT_VERSION {
        bail!("snapshot format version {version}; this tandem reads version {FORMAT_VERSION} only");
    }
    let crc = word(12);
    let len = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    let body = &bytes[HEADER_LEN..];
    if len > MAX_BODY || body.len() as u64 != len {
        bail!(
            "the file holds {} bytes of state, its header says {len}: cut short or not one file",
            body.len()
        );
    }
    if crc32fast::hash(body) != crc {
        bail!("checksum mismatch: the file is corrupted");
    }
    Ok(body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let path = dir.as_path().join("s");
        write(&path, body).unwrap();
        std::fs::read(&path).unwrap()
    }

    fn refusal(bytes: &[u8]) -> String {
        format!("{:#}", check(bytes).unwrap_err())
    }

    #[test]
    fn a_written_body_reads_back() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let path = dir.as_path().join("s");
        write(&path, b"{\"x\":1}").unwrap();
        assert_eq!(read(&path).unwrap(), b"{\"x\":1}");
    }

    #[test]
    fn foreign_truncated_corrupted_and_newer_files_are_refused() {
        let good = framed(b"{\"state\":[1,2,3]}");
        assert!(refusal(b"\x7fELF and so on, long enough").contains("not a tandem snapshot"));
        assert!(refusal(&good[..10]).contains("not a tandem snapshot"));
        assert!(refusal(&good[..good.len() - 1]).contains("cut short"));
        let mut longer = good.clone();
        longer.push(b' ');
        assert!(refusal(&longer).contains("cut short"));
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(refusal(&flipped).contains("checksum"));
        let mut newer = good.clone();
        newer[8] = 2;
        assert!(refusal(&newer).contains("version 2"));
        assert!(check(&good).is_ok());
    }
}
