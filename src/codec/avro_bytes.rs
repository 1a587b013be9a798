//! The Avro binary encoding's primitives, read straight from a byte
//! slice: the readers specialised to one schema (snapshots, metric
//! events) are built from these. Every read answers `None` where the
//! bytes are not exactly what apache-avro's writer writes; the callers
//! then let apache-avro decide.

/// Most items one array or map may announce: a corrupt count must not
/// reserve gigabytes before the bytes run out.
pub(super) const MAX_ITEMS: usize = 1 << 20;

/// A cursor over an Avro datum.
pub(super) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Reader(bytes)
    }

    /// Bytes not read yet.
    pub(super) fn remaining(&self) -> usize {
        self.0.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    /// A zig-zag varint `long` (also `int`).
    pub(super) fn long(&mut self) -> Option<i64> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                return None; // beyond 64 bits
            }
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some((n >> 1) as i64 ^ -((n & 1) as i64));
            }
        }
        None
    }

    /// A non-negative length or count.
    pub(super) fn count(&mut self) -> Option<usize> {
        usize::try_from(self.long()?).ok()
    }

    pub(super) fn double(&mut self) -> Option<f64> {
        let bytes: [u8; 8] = self.take(8)?.try_into().ok()?;
        Some(f64::from_le_bytes(bytes))
    }

    pub(super) fn boolean(&mut self) -> Option<bool> {
        match self.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    /// A UTF-8 string, borrowed from the datum.
    pub(super) fn str(&mut self) -> Option<&'a str> {
        let n = self.count()?;
        let bytes = self.take(n)?;
        if bytes.is_ascii() {
            // SAFETY: every byte is below 0x80, and a sequence of ASCII
            // bytes is valid UTF-8 (each is a one-byte code point). The
            // check is cheaper than `from_utf8` on the short strings of
            // an event (names, versions, tags).
            return Some(unsafe { std::str::from_utf8_unchecked(bytes) });
        }
        std::str::from_utf8(bytes).ok()
    }

    pub(super) fn owned_string(&mut self) -> Option<String> {
        self.str().map(str::to_owned)
    }

    /// A `["null", T]` union.
    pub(super) fn optional<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<Option<T>> {
        match self.long()? {
            0 => Some(None),
            1 => read(self).map(Some),
            _ => None,
        }
    }
}
