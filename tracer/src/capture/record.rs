//! Recording ring-buffer records to a file, and reading them back: real captures for replay
//! (benchmarks, fuzzing seeds, bug reports). A recording holds payloads as captured, request
//! heads included: it is created mode 0600, and is meant for test traffic.
//!
//! Format: for each record, its length as a little-endian u32, then its bytes.

use std::{
    fs::File,
    io::{BufWriter, Read, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use anyhow::{Context, Result, bail};

/// Longest record accepted when reading (a data event with a full capture and its hints).
const MAX_RECORD: usize = 64 * 1024;

pub struct Recorder {
    out: BufWriter<File>,
}

impl Recorder {
    pub fn create(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating the recording {}", path.display()))?;
        Ok(Self {
            out: BufWriter::new(file),
        })
    }

    pub fn record(&mut self, record: &[u8]) -> Result<()> {
        self.out.write_all(&(record.len() as u32).to_le_bytes())?;
        self.out.write_all(record)?;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        Ok(self.out.flush()?)
    }
}

/// Every record of a recording, in order.
pub fn read(path: &Path) -> Result<Vec<Vec<u8>>> {
    let mut bytes = Vec::new();
    File::open(path)
        .with_context(|| format!("opening the recording {}", path.display()))?
        .read_to_end(&mut bytes)?;
    parse(&bytes).with_context(|| format!("reading the recording {}", path.display()))
}

/// Splits a recording's bytes into records.
pub fn parse(mut bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut records = Vec::new();
    while !bytes.is_empty() {
        let Some((len, rest)) = bytes.split_first_chunk::<4>() else {
            bail!("truncated length at record {}", records.len());
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > MAX_RECORD || len > rest.len() {
            bail!("record {} of {len} bytes runs past the end", records.len());
        }
        records.push(rest[..len].to_vec());
        bytes = &rest[len..];
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_an_error() {
        let path = std::env::temp_dir().join(format!("tracer-rec-{}", std::process::id()));
        let mut r = Recorder::create(&path).unwrap();
        r.record(b"first").unwrap();
        r.record(b"").unwrap();
        r.record(&[7u8; 300]).unwrap();
        r.flush().unwrap();
        drop(r);
        let records = read(&path).unwrap();
        assert_eq!(records, vec![b"first".to_vec(), vec![], vec![7u8; 300]]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let bytes = std::fs::read(&path).unwrap();
        assert!(parse(&bytes[..bytes.len() - 1]).is_err());
        assert!(parse(&[1, 0]).is_err());
        std::fs::remove_file(&path).unwrap();
    }
}
