//! The HPACK decoder alone, in two modes chosen by the first byte's top bit.
//!
//! Raw: arbitrary header blocks, whole or cut, with history lost and table limits announced in
//! between, into one decoder (with or without history). Input: flags (bit 0: without
//! history), then blocks `h:u8 len:u16le [limit:u32le if h & 4] bytes[len]` (h bit 0: the
//! block is whole; bit 1: history lost before it). Invariants: every field reported is counted;
//! no name or value is longer than the literals seen so far allow (Huffman expands at most 8/5;
//! the static table adds short ones); the dynamic table stays within its maximum, and that
//! within `table::MAX_SIZE`.
//!
//! Round trip: header lists read from the input, encoded by `httlib-hpack` (an independent
//! encoder, with Huffman coding, indexing and size updates as the input picks), decoded by a
//! decoder that saw the connection from its start: every field comes back exactly, known.

use httlib_hpack::Encoder;
use tracer::protocols::http2::hpack::{Decoder, Text, table};

use crate::script::take;

/// Longest name or value in the static table (`www-authenticate`, `access-control-...`).
const STATIC_LONGEST: usize = 64;

pub fn run(data: &[u8]) {
    match data.split_first() {
        Some((&mode, rest)) if mode & 0x80 == 0 => raw(mode, rest),
        Some((_, rest)) => round_trip(rest),
        None => {}
    }
}

fn raw(flags: u8, mut rest: &[u8]) {
    let mut decoder = match flags & 1 {
        0 => Decoder::new(),
        _ => Decoder::without_history(),
    };
    let mut literal_bytes = 0usize;
    while let Some((&h, tail)) = rest.split_first() {
        rest = tail;
        let len = usize::from(u16::from_le_bytes(take::<2>(&mut rest)));
        if h & 2 != 0 {
            decoder.lose_history();
        }
        if h & 4 != 0 {
            decoder.set_limit(u32::from_le_bytes(take::<4>(&mut rest)));
        }
        let (block, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        literal_bytes += block.len();
        let bound = literal_bytes * 8 / 5 + STATIC_LONGEST;
        let whole = h & 1 != 0;
        let mut reported = 0u32;
        let mut unknown = 0u32;
        let outcome = decoder.decode(block, whole, |field| {
            reported += 1;
            unknown += u32::from(field.name == Text::Unknown || field.value == Text::Unknown);
            for text in [field.name, field.value] {
                if let Text::Known(bytes) = text {
                    assert!(
                        bytes.len() <= bound,
                        "{} bytes from {literal_bytes}",
                        bytes.len()
                    );
                }
            }
        });
        assert_eq!(outcome.fields, reported);
        assert_eq!(outcome.unknown, unknown);
        if !whole {
            assert!(outcome.truncated, "a cut block is reported whole");
        }
        let t = decoder.table();
        assert!(t.size() <= t.max_size(), "{} > {}", t.size(), t.max_size());
        assert!(t.max_size() <= table::MAX_SIZE);
    }
}

/// Field encodings the input picks from: `httlib-hpack` flags.
const ENCODINGS: [u8; 6] = [
    Encoder::BEST_FORMAT | Encoder::WITH_INDEXING | Encoder::HUFFMAN_VALUE,
    Encoder::BEST_FORMAT | Encoder::WITH_INDEXING | Encoder::HUFFMAN_NAME,
    Encoder::WITH_INDEXING,
    Encoder::NEVER_INDEXED | Encoder::HUFFMAN_VALUE,
    0,
    Encoder::BEST_FORMAT | Encoder::HUFFMAN_NAME | Encoder::HUFFMAN_VALUE,
];

/// Input: fields `kind:u8 name_len:u8 name value_len:u8 value`; kind's low bits pick the
/// encoding, bit 3 ends the block after the field, bit 4 starts the block with a size update
/// to `name_len * 32` bytes (at most the default 4096 the decoder allows).
fn round_trip(mut rest: &[u8]) {
    let mut encoder = Encoder::default();
    let mut decoder = Decoder::new();
    let mut block = Vec::new();
    let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    while let Some((&kind, tail)) = rest.split_first() {
        rest = tail;
        let name = string(&mut rest);
        let value = string(&mut rest);
        if kind & 0x10 != 0 && block.is_empty() {
            let size = (name.len() as u32 * 32).min(4096);
            if encoder.update_max_dynamic_size(size, &mut block).is_err() {
                return;
            }
        }
        let flags = ENCODINGS[usize::from(kind & 7) % ENCODINGS.len()];
        if encoder
            .encode((name.clone(), value.clone(), flags), &mut block)
            .is_err()
        {
            return;
        }
        fields.push((name, value));
        if kind & 8 != 0 || rest.is_empty() {
            check_block(&mut decoder, &block, &fields);
            block.clear();
            fields.clear();
        }
    }
}

fn check_block(decoder: &mut Decoder, block: &[u8], sent: &[(Vec<u8>, Vec<u8>)]) {
    let mut got = Vec::new();
    let outcome = decoder.decode(block, true, |field| {
        got.push((
            field.name.known().map(<[u8]>::to_vec),
            field.value.known().map(<[u8]>::to_vec),
        ))
    });
    assert!(outcome.is_whole(), "{outcome:?} for {sent:?}");
    assert_eq!(outcome.unknown, 0);
    let expected: Vec<_> = sent
        .iter()
        .map(|(n, v)| (Some(n.clone()), Some(v.clone())))
        .collect();
    assert_eq!(got, expected);
}

/// A length-prefixed string (u8 length), cut at the end of the input.
fn string(rest: &mut &[u8]) -> Vec<u8> {
    let Some((&len, tail)) = rest.split_first() else {
        return Vec::new();
    };
    let (s, tail) = tail.split_at(usize::from(len).min(tail.len()));
    *rest = tail;
    s.to_vec()
}
