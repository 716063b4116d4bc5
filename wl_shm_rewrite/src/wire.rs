// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The Wayland wire format, as much of it as following wl_shm needs.
//!
//! A message is a header of two 32-bit words in the host's byte order: the object id, then the
//! message size in bytes (header included, a multiple of 4) in the upper 16 bits and the opcode
//! in the lower 16. Arguments are 32-bit words; a string is its length (NUL included) followed by
//! its bytes padded to 4; fds travel out of band (SCM_RIGHTS), one per `fd` argument, in order.

/// Size of a message header.
pub const HEADER_SIZE: usize = 8;

/// A message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub object: u32,
    pub opcode: u16,
    /// The whole message, header included.
    pub size: usize,
}

/// Why a stream cannot be followed any further.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// A header whose size is smaller than a header or not a multiple of 4.
    BadSize { object: u32, size: usize },
    /// An argument runs past the end of its message.
    Truncated { object: u32, opcode: u16 },
}

/// The header at the start of `bytes`, if the 8 bytes are there.
pub fn header(bytes: &[u8]) -> Result<Option<Header>, WireError> {
    let (Some(object), Some(size_opcode)) = (word(bytes, 0), word(bytes, 4)) else {
        return Ok(None);
    };
    let size = (size_opcode >> 16) as usize;
    if size < HEADER_SIZE || !size.is_multiple_of(4) {
        return Err(WireError::BadSize { object, size });
    }
    Ok(Some(Header {
        object,
        opcode: size_opcode as u16,
        size,
    }))
}

/// The 32-bit word at byte `at`.
pub fn word(bytes: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    bytes
        .get(at..end)
        .map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
}

/// Overwrites the 32-bit word at byte `at`, which the caller has read before.
pub fn set_word(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_ne_bytes());
}

/// Reads a message's arguments in order.
pub struct Args<'a> {
    message: &'a [u8],
    at: usize,
    header: Header,
}

impl<'a> Args<'a> {
    /// The arguments of `message` (one whole message, header included).
    pub fn new(message: &'a [u8], header: Header) -> Args<'a> {
        Args {
            message,
            at: HEADER_SIZE,
            header,
        }
    }

    fn truncated(&self) -> WireError {
        WireError::Truncated {
            object: self.header.object,
            opcode: self.header.opcode,
        }
    }

    /// Byte offset of the next argument in the message.
    pub fn position(&self) -> usize {
        self.at
    }

    /// A uint, int, object or new_id argument.
    pub fn word(&mut self) -> Result<u32, WireError> {
        let value = word(self.message, self.at).ok_or_else(|| self.truncated())?;
        self.at += 4;
        Ok(value)
    }

    /// A string argument, without its NUL; `None` for a null string.
    pub fn string(&mut self) -> Result<Option<&'a [u8]>, WireError> {
        let len = self.word()? as usize;
        if len == 0 {
            return Ok(None);
        }
        let padded = len.checked_add(3).ok_or_else(|| self.truncated())? & !3;
        let end = self
            .at
            .checked_add(padded)
            .ok_or_else(|| self.truncated())?;
        let text = self
            .message
            .get(self.at..self.at + len - 1)
            .filter(|_| end <= self.message.len())
            .ok_or_else(|| self.truncated())?;
        self.at = end;
        Ok(Some(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(object: u32, opcode: u16, args: &[u32]) -> Vec<u8> {
        let size = HEADER_SIZE + 4 * args.len();
        let mut bytes = object.to_ne_bytes().to_vec();
        bytes.extend_from_slice(&(((size as u32) << 16) | u32::from(opcode)).to_ne_bytes());
        for arg in args {
            bytes.extend_from_slice(&arg.to_ne_bytes());
        }
        bytes
    }

    #[test]
    fn headers_and_words() {
        let bytes = message(3, 2, &[7, 8]);
        let header = header(&bytes).unwrap().unwrap();
        assert_eq!(
            header,
            Header {
                object: 3,
                opcode: 2,
                size: 16
            }
        );
        let mut args = Args::new(&bytes, header);
        assert_eq!(args.word().unwrap(), 7);
        assert_eq!(args.word().unwrap(), 8);
        assert!(args.word().is_err());
        assert_eq!(super::header(&bytes[..7]).unwrap(), None);
        let mut bad = bytes.clone();
        set_word(&mut bad, 4, (6 << 16) | 2);
        assert_eq!(
            super::header(&bad),
            Err(WireError::BadSize { object: 3, size: 6 })
        );
    }

    #[test]
    fn strings_are_padded_and_checked() {
        // "wl_shm" is 7 bytes with its NUL, padded to 8.
        let mut bytes = message(2, 0, &[1, 7]);
        bytes.extend_from_slice(b"wl_shm\0\0");
        bytes.extend_from_slice(&1u32.to_ne_bytes());
        let size = bytes.len() as u32;
        set_word(&mut bytes, 4, size << 16);
        let header = header(&bytes).unwrap().unwrap();
        let mut args = Args::new(&bytes, header);
        assert_eq!(args.word().unwrap(), 1);
        assert_eq!(args.string().unwrap(), Some(&b"wl_shm"[..]));
        assert_eq!(args.word().unwrap(), 1);
        // A length that runs past the message.
        let mut long = message(2, 0, &[1, 4000]);
        let size = long.len() as u32;
        set_word(&mut long, 4, size << 16);
        let header = super::header(&long).unwrap().unwrap();
        let mut args = Args::new(&long, header);
        args.word().unwrap();
        assert!(args.string().is_err());
        // Lengths near the top of the range do not overflow.
        let mut huge = message(2, 0, &[u32::MAX]);
        let size = huge.len() as u32;
        set_word(&mut huge, 4, size << 16);
        let header = super::header(&huge).unwrap().unwrap();
        assert!(Args::new(&huge, header).string().is_err());
    }
}
