//! HPACK (RFC 7541) decoding for an observer that may lack part of the connection's history.
//!
//! Written here rather than taken from a crate. The maintained decoders evaluated (`hpack`
//! 0.3.0, `hpack-patched` 0.3.0, `loona-hpack` 0.4.3, `fluke-hpack` 0.3.1, `httlib-hpack`
//! 0.1.3) all decode every RFC 7541 Appendix C example (C.2-C.6, with and without Huffman), but
//! they are endpoints' decoders: a reference to a dynamic table entry they never saw fails the
//! whole block (`HeaderIndexOutOfBounds`, `InvalidIndex`), and a block cut short fails too. A
//! tracer joins connections mid-way and sees header blocks cut by the capture, and must then
//! still read what the static table and the literals give, mark the rest unknown, and know
//! which later references it can trust (see [`table`]). None models that, so this decoder does.
//!
//! The decoder reports fields through a callback, borrowing from the block, the table or a
//! scratch buffer: nothing is allocated per field except the entries the table keeps.

pub mod huffman;
pub mod table;

use self::table::{DynamicTable, Lookup};

/// A name or a value as far as it could be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Text<'a> {
    Known(&'a [u8]),
    /// It refers to a dynamic table entry the tracer did not see.
    Unknown,
}

impl<'a> Text<'a> {
    pub fn known(self) -> Option<&'a [u8]> {
        match self {
            Text::Known(bytes) => Some(bytes),
            Text::Unknown => None,
        }
    }
}

/// One header field of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field<'a> {
    pub name: Text<'a>,
    pub value: Text<'a>,
}

/// How decoding a header block went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Fields reported.
    pub fields: u32,
    /// Fields reported with an unknown name or value.
    pub unknown: u32,
    /// The block's bytes were not all there (cut by the capture or by the size limit): fields
    /// past the cut were not reported.
    pub truncated: bool,
    /// The block breaks RFC 7541: fields from the error on were not reported.
    pub malformed: bool,
}

impl Outcome {
    /// Every field of the block was reported with its name.
    pub fn is_whole(&self) -> bool {
        !self.truncated && !self.malformed
    }
}

/// Scratch buffers larger than this are shrunk after a block.
const SCRATCH_KEEP: usize = 4096;

/// The decoding context of one direction of a connection.
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    /// Huffman-decoded (or copied) name and value of the field being decoded.
    name: Vec<u8>,
    value: Vec<u8>,
}

/// Why decoding stopped inside a field.
enum Stop {
    /// The bytes ran out.
    More,
    /// The encoding is invalid.
    Bad,
}

/// Where a decoded string lies.
#[derive(Clone, Copy)]
enum Str {
    /// In the block, at this range.
    Raw(usize, usize),
    /// In the scratch buffer.
    Scratch,
    Unknown,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder that has seen the connection from its start.
    pub fn new() -> Self {
        Self::with_table(DynamicTable::new())
    }

    /// A decoder for a connection joined mid-way: its dynamic table is unknown.
    pub fn without_history() -> Self {
        Self::with_table(DynamicTable::without_history())
    }

    fn with_table(table: DynamicTable) -> Self {
        Self {
            table,
            name: Vec::new(),
            value: Vec::new(),
        }
    }

    /// A header block of this direction was missed: the indices of what the table knows shift
    /// by an unknown amount.
    pub fn lose_history(&mut self) {
        self.table.lose_history();
    }

    /// The decoding peer announced SETTINGS_HEADER_TABLE_SIZE.
    pub fn set_limit(&mut self, announced: u32) {
        self.table.set_limit(announced);
    }

    /// Whether no dynamic entry can be unknown: every reference can be resolved.
    pub fn has_whole_history(&self) -> bool {
        self.table.is_complete()
    }

    pub fn table(&self) -> &DynamicTable {
        &self.table
    }

    /// Decodes one header block, calling `on_field` for each field in order. `whole` is false
    /// when the block's bytes are only a prefix of it (cut by the capture): the fields in the
    /// prefix are decoded, and the table loses its history since insertions past the cut were
    /// not seen. A malformed block does the same from the error on.
    pub fn decode(
        &mut self,
        block: &[u8],
        whole: bool,
        mut on_field: impl FnMut(Field<'_>),
    ) -> Outcome {
        let mut outcome = Outcome::default();
        let mut pos = 0;
        let mut fields_seen = false;
        while pos < block.len() {
            match self.field(block, &mut pos, &mut fields_seen, &mut on_field) {
                Ok(Some(known)) => {
                    outcome.fields += 1;
                    outcome.unknown += u32::from(!known);
                }
                Ok(None) => {}
                Err(Stop::More) if !whole => {
                    outcome.truncated = true;
                    break;
                }
                Err(_) => {
                    outcome.malformed = true;
                    break;
                }
            }
        }
        if !whole {
            outcome.truncated = true;
        }
        if !outcome.is_whole() {
            self.table.lose_history();
        }
        for scratch in [&mut self.name, &mut self.value] {
            if scratch.capacity() > 4 * SCRATCH_KEEP {
                scratch.clear();
                scratch.shrink_to(SCRATCH_KEEP);
            }
        }
        outcome
    }

    /// Decodes the representation at `pos`. `Some(known)` for a field (whether its name and
    /// value are both known), `None` for a size update.
    fn field(
        &mut self,
        block: &[u8],
        pos: &mut usize,
        fields_seen: &mut bool,
        on_field: &mut impl FnMut(Field<'_>),
    ) -> Result<Option<bool>, Stop> {
        let Decoder { table, name, value } = self;
        let first = block[*pos];
        if first & 0x80 != 0 {
            // Indexed Header Field (§6.1).
            let index = integer(block, pos, 7)?;
            *fields_seen = true;
            let field = match table::lookup(table, index as usize) {
                Lookup::Entry { name, value } => Field {
                    name: name.map_or(Text::Unknown, Text::Known),
                    value: Text::Known(value),
                },
                Lookup::Unknown => Field {
                    name: Text::Unknown,
                    value: Text::Unknown,
                },
                Lookup::Invalid => return Err(Stop::Bad),
            };
            let known = field.name != Text::Unknown;
            on_field(field);
            return Ok(Some(known));
        }
        if first & 0xe0 == 0x20 {
            // Dynamic Table Size Update (§6.3): only before the first field.
            if *fields_seen {
                return Err(Stop::Bad);
            }
            let size = integer(block, pos, 5)?;
            table.size_update(size);
            return Ok(None);
        }
        // Literal Header Field (§6.2): with incremental indexing (01), without (0000), never
        // indexed (0001).
        let (indexing, prefix) = if first & 0xc0 == 0x40 {
            (true, 6)
        } else {
            (false, 4)
        };
        let index = integer(block, pos, prefix)?;
        *fields_seen = true;
        let name_at = if index == 0 {
            string(block, pos, name)?
        } else {
            match table::lookup(table, index as usize) {
                Lookup::Entry {
                    name: Some(known), ..
                } => {
                    // Copied: the table may evict it when this field is inserted.
                    name.clear();
                    name.extend_from_slice(known);
                    Str::Scratch
                }
                Lookup::Entry { name: None, .. } | Lookup::Unknown => Str::Unknown,
                Lookup::Invalid => return Err(Stop::Bad),
            }
        };
        let value_at = string(block, pos, value)?;
        let field_name = resolve(block, name_at, name);
        let field_value = resolve(block, value_at, value);
        let field_value = field_value.unwrap_or_default();
        on_field(Field {
            name: field_name.map_or(Text::Unknown, Text::Known),
            value: Text::Known(field_value),
        });
        if indexing {
            table.insert(field_name, field_value);
        }
        Ok(Some(field_name.is_some()))
    }
}

/// The bytes of a decoded string.
fn resolve<'a>(block: &'a [u8], at: Str, scratch: &'a [u8]) -> Option<&'a [u8]> {
    match at {
        Str::Raw(start, end) => Some(&block[start..end]),
        Str::Scratch => Some(scratch),
        Str::Unknown => None,
    }
}

/// Decodes an integer with an `n`-bit prefix at `pos` (§5.1); values above `u32::MAX` are
/// rejected, so no input can make it overflow or loop long.
fn integer(block: &[u8], pos: &mut usize, n: u8) -> Result<u64, Stop> {
    let mask = u8::MAX >> (8 - n);
    let first = block.get(*pos).ok_or(Stop::More)? & mask;
    *pos += 1;
    if first < mask {
        return Ok(u64::from(first));
    }
    let mut value = u64::from(mask);
    let mut shift = 0;
    loop {
        let byte = *block.get(*pos).ok_or(Stop::More)?;
        *pos += 1;
        value += u64::from(byte & 0x7f) << shift;
        if value > u64::from(u32::MAX) {
            return Err(Stop::Bad);
        }
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        if shift > 28 {
            return Err(Stop::Bad);
        }
    }
}

/// Decodes a string literal at `pos` (§5.2): raw bytes stay in the block, Huffman-coded ones
/// are decoded into `scratch`.
fn string(block: &[u8], pos: &mut usize, scratch: &mut Vec<u8>) -> Result<Str, Stop> {
    let huffman = block.get(*pos).ok_or(Stop::More)? & 0x80 != 0;
    let len = integer(block, pos, 7)? as usize;
    let start = *pos;
    let end = start.checked_add(len).ok_or(Stop::Bad)?;
    if end > block.len() {
        return Err(Stop::More);
    }
    *pos = end;
    if !huffman {
        return Ok(Str::Raw(start, end));
    }
    scratch.clear();
    huffman::decode(&block[start..end], scratch).map_err(|_| Stop::Bad)?;
    Ok(Str::Scratch)
}

#[cfg(test)]
mod tests;
