//! A safetensors file read one tensor at a time (a dense release-format
//! model is 1.7 GB at the 0.4B shape: it is never all in memory).

use std::io::{Read, Seek, SeekFrom};

use safetensors::tensor::Metadata;
use safetensors::Dtype;

use super::{Checkpoint, ConvertError, DenseTensor, Float};

pub struct SafetensorsFile<R: Read + Seek> {
    reader: R,
    metadata: Metadata,
    /// Where the tensor data starts: after the 8-byte length and the header.
    data_start: u64,
}

/// Headers past this are not a model's (the format's own limit).
const MAX_HEADER: u64 = 100_000_000;

impl<R: Read + Seek> SafetensorsFile<R> {
    pub fn open(mut reader: R) -> Result<SafetensorsFile<R>, ConvertError> {
        let bad = |m: String| ConvertError::Safetensors(m);
        let file_len = reader.seek(SeekFrom::End(0)).map_err(|e| bad(e.to_string()))?;
        reader.seek(SeekFrom::Start(0)).map_err(|e| bad(e.to_string()))?;
        let mut len = [0u8; 8];
        reader.read_exact(&mut len).map_err(|_| bad(format!("file is truncated: {file_len} bytes, shorter than the 8-byte header length")))?;
        let header_len = u64::from_le_bytes(len);
        if header_len > MAX_HEADER || header_len > file_len - 8 {
            return Err(bad(format!("header length {header_len} bytes does not fit the file ({file_len} bytes): truncated or not a safetensors file")));
        }
        let mut header = vec![0u8; header_len as usize];
        reader.read_exact(&mut header).map_err(|e| bad(e.to_string()))?;
        let metadata: Metadata = serde_json::from_slice(&header).map_err(|e| bad(format!("not a valid safetensors header: {e}")))?;
        let data_start = 8 + header_len;
        if data_start + metadata.data_len() as u64 != file_len {
            return Err(bad(format!("file is {file_len} bytes, but its header says {}: truncated or not a safetensors file", data_start + metadata.data_len() as u64)));
        }
        Ok(SafetensorsFile { reader, metadata, data_start })
    }
}

impl<R: Read + Seek> Checkpoint for SafetensorsFile<R> {
    fn names(&self) -> Vec<String> {
        // In file order, so progress goes through the file front to back.
        self.metadata.offset_keys()
    }

    fn read(&mut self, name: &str) -> Result<DenseTensor, ConvertError> {
        let bad = |m: String| ConvertError::Safetensors(format!("tensor `{name}`: {m}"));
        let info = self.metadata.info(name).ok_or_else(|| bad("not in the file".into()))?;
        let float = match info.dtype {
            Dtype::F64 => Float::F64,
            Dtype::F32 => Float::F32,
            Dtype::F16 => Float::F16,
            Dtype::BF16 => Float::BF16,
            other => return Err(bad(format!("dtype {other:?}; weights must be floating point"))),
        };
        let (start, end) = info.data_offsets;
        let shape = info.shape.clone();
        let mut bytes = vec![0u8; end - start];
        self.reader.seek(SeekFrom::Start(self.data_start + start as u64)).map_err(|e| bad(e.to_string()))?;
        self.reader.read_exact(&mut bytes).map_err(|e| bad(e.to_string()))?;
        Ok(DenseTensor { shape, values: bytes.chunks_exact(float.size()).map(|b| float.read(b)).collect() })
    }
}
