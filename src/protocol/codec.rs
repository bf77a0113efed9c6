//! Bounds-checked reading and the writers every encoder uses.

use super::error::{AmqpError, Result};
use super::table;
use super::types::{FieldTable, LongStr, ShortStr};
use bytes::{Buf, BufMut, Bytes, BytesMut};

fn short() -> AmqpError {
    AmqpError::frame("truncated")
}

/// A cursor over a frame payload. Strings and byte arrays it returns are
/// slices of the payload (no copy).
#[derive(Debug, Clone)]
pub struct Reader {
    buf: Bytes,
}

impl Reader {
    pub fn new(buf: Bytes) -> Self {
        Reader { buf }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub fn rest(&self) -> &Bytes {
        &self.buf
    }
    pub fn u8(&mut self) -> Result<u8> {
        if self.buf.is_empty() {
            return Err(short());
        }
        Ok(self.buf.get_u8())
    }
    pub fn u16(&mut self) -> Result<u16> {
        if self.buf.len() < 2 {
            return Err(short());
        }
        Ok(self.buf.get_u16())
    }
    pub fn u32(&mut self) -> Result<u32> {
        if self.buf.len() < 4 {
            return Err(short());
        }
        Ok(self.buf.get_u32())
    }
    pub fn u64(&mut self) -> Result<u64> {
        if self.buf.len() < 8 {
            return Err(short());
        }
        Ok(self.buf.get_u64())
    }
    pub fn bytes(&mut self, n: usize) -> Result<Bytes> {
        if self.buf.len() < n {
            return Err(short());
        }
        Ok(self.buf.split_to(n))
    }
    pub fn shortstr(&mut self) -> Result<ShortStr> {
        let n = self.u8()? as usize;
        Ok(ShortStr::new(self.bytes(n)?).expect("at most 255 bytes"))
    }
    pub fn longstr(&mut self) -> Result<LongStr> {
        let n = self.u32()? as usize;
        Ok(LongStr::new(self.bytes(n)?))
    }
    pub fn table(&mut self) -> Result<FieldTable> {
        table::read_table(self, 0)
    }
}

pub fn put_shortstr(out: &mut BytesMut, s: &[u8]) {
    debug_assert!(s.len() <= 255);
    let n = s.len().min(255);
    out.put_u8(n as u8);
    out.put_slice(&s[..n]);
}

pub fn put_longstr(out: &mut BytesMut, s: &[u8]) {
    out.put_u32(s.len() as u32);
    out.put_slice(s);
}

pub fn put_table(out: &mut BytesMut, t: &FieldTable) {
    table::write_table(out, t);
}

pub use table::write_value as put_field_value;
