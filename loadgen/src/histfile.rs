//! Histogram files: writing a run's `PREFIX.hgrm` (percentile distribution, ms),
//! `PREFIX.hdr` (HdrHistogram V2 binary serialization, µs, uncompressed), and reading
//! either kind back for `loadgen compare`.

use std::fs;
use std::path::{Path, PathBuf};

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use thiserror::Error;

use crate::hgrm;

#[derive(Debug, Error)]
pub enum HistFileError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serialize histogram: {0}")]
    Serialize(String),
    #[error("{path}: not an HdrHistogram V2 serialization: {reason}")]
    BadHdr { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    BadHgrm {
        path: PathBuf,
        #[source]
        source: hgrm::ParseError,
    },
    #[error("{path}: unknown file type (expected .hdr or .hgrm)")]
    UnknownType { path: PathBuf },
}

/// Serializes `h` in HdrHistogram's V2 format (uncompressed, binary).
pub fn to_v2(h: &Histogram<u64>) -> Result<Vec<u8>, HistFileError> {
    let mut buf = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut buf)
        .map_err(|e| HistFileError::Serialize(format!("{e:?}")))?;
    Ok(buf)
}

/// Deserializes a V2 (or V2 deflate) histogram.
pub fn from_v2(bytes: &[u8]) -> Result<Histogram<u64>, String> {
    let mut cursor = std::io::Cursor::new(bytes);
    Deserializer::new()
        .deserialize(&mut cursor)
        .map_err(|e| format!("{e:?}"))
}

fn write(path: PathBuf, bytes: &[u8]) -> Result<(), HistFileError> {
    fs::write(&path, bytes).map_err(|source| HistFileError::Write { path, source })
}

/// Appends `suffix` to the prefix path (`out/run` + `.hgrm`).
pub fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes `PREFIX{tag}.hgrm` and `PREFIX{tag}.hdr` for one histogram.
pub fn write_pair(
    prefix: &Path,
    tag: &str,
    h: &Histogram<u64>,
) -> Result<Vec<PathBuf>, HistFileError> {
    let hgrm_path = with_suffix(prefix, &format!("{tag}.hgrm"));
    write(hgrm_path.clone(), hgrm::render(h).as_bytes())?;
    let hdr_path = with_suffix(prefix, &format!("{tag}.hdr"));
    write(hdr_path.clone(), &to_v2(h)?)?;
    Ok(vec![hgrm_path, hdr_path])
}

/// Loads a `.hdr` or `.hgrm` file.
pub fn load(path: &Path) -> Result<Histogram<u64>, HistFileError> {
    let read_err = |source| HistFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    match path.extension().and_then(|e| e.to_str()) {
        Some("hdr") => {
            let bytes = fs::read(path).map_err(read_err)?;
            from_v2(&bytes).map_err(|reason| HistFileError::BadHdr {
                path: path.to_path_buf(),
                reason,
            })
        }
        Some("hgrm") => {
            let text = fs::read_to_string(path).map_err(read_err)?;
            hgrm::parse(&text).map_err(|source| HistFileError::BadHgrm {
                path: path.to_path_buf(),
                source,
            })
        }
        _ => Err(HistFileError::UnknownType {
            path: path.to_path_buf(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency;

    #[test]
    fn writes_and_loads_both_kinds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut h = latency::new_histogram().expect("histogram");
        for v in [100u64, 200, 300, 5_000, 80_000] {
            h.record(v).expect("in range");
        }
        let prefix = dir.path().join("run");
        let files = write_pair(&prefix, "", &h).expect("writes");
        assert_eq!(files[0], dir.path().join("run.hgrm"));
        let from_hdr = load(&dir.path().join("run.hdr")).expect("hdr loads");
        assert_eq!(from_hdr, h);
        let from_hgrm = load(&dir.path().join("run.hgrm")).expect("hgrm loads");
        assert_eq!(from_hgrm.len(), 5);
        assert!(matches!(
            load(&dir.path().join("run.txt")),
            Err(HistFileError::UnknownType { .. })
        ));
        fs::write(dir.path().join("bad.hdr"), b"nope").expect("write");
        assert!(matches!(
            load(&dir.path().join("bad.hdr")),
            Err(HistFileError::BadHdr { .. })
        ));
    }
}
