//! The HPACK Huffman code (RFC 7541 §5.2, Appendix B), decoding side.
//!
//! Appendix B's code is canonical: within one code length the codes count up in symbol order,
//! and each length starts where the previous one ended, shifted by one bit. So the table keeps
//! only the 257 code lengths and the codes follow from them at compile time; the tests check the
//! result against codes listed in the RFC, the Appendix C examples and an independent encoder.
//! Decoding walks the bits and compares the code read so far with the range of codes of its
//! length: no tree, no allocation besides the output.

/// Code length of each symbol: the 256 octets, then EOS (RFC 7541 Appendix B).
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0x00
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 0x10
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // 0x20 ' '
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // 0x30 '0'
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // 0x40 '@'
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 0x50 'P'
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // 0x60 '`'
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 0x70 'p'
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 0x80
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 0x90
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 0xa0
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 0xb0
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 0xc0
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 0xd0
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 0xe0
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 0xf0
    30, // EOS
];

const EOS: u16 = 256;
const MAX_LEN: usize = 30;

/// The canonical code, per length: its first code, how many codes, and where its symbols
/// start in `symbols` (sorted by length, then symbol).
struct Canonical {
    first: [u32; MAX_LEN + 1],
    count: [u32; MAX_LEN + 1],
    offset: [u16; MAX_LEN + 1],
    symbols: [u16; 257],
}

const CODE: Canonical = canonical();

const fn canonical() -> Canonical {
    let mut count = [0u32; MAX_LEN + 1];
    let mut sym = 0;
    while sym < LENGTHS.len() {
        count[LENGTHS[sym] as usize] += 1;
        sym += 1;
    }
    let mut first = [0u32; MAX_LEN + 1];
    let mut offset = [0u16; MAX_LEN + 1];
    let mut symbols = [0u16; 257];
    let (mut code, mut filled, mut len) = (0u32, 0usize, 1);
    while len <= MAX_LEN {
        first[len] = code;
        offset[len] = filled as u16;
        let mut sym = 0;
        while sym < LENGTHS.len() {
            if LENGTHS[sym] as usize == len {
                symbols[filled] = sym as u16;
                filled += 1;
            }
            sym += 1;
        }
        code = (code + count[len]) << 1;
        len += 1;
    }
    Canonical {
        first,
        count,
        offset,
        symbols,
    }
}

/// A Huffman string that breaks RFC 7541 §5.2: it contains EOS, or its padding is longer than
/// 7 bits or not the most significant bits of EOS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidHuffman;

/// Decodes `src`, appending the octets to `out`.
pub fn decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), InvalidHuffman> {
    let mut code = 0u32;
    let mut len = 0usize;
    for &byte in src {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            let index = code.wrapping_sub(CODE.first[len]);
            if index < CODE.count[len] {
                let symbol = CODE.symbols[usize::from(CODE.offset[len]) + index as usize];
                if symbol == EOS {
                    return Err(InvalidHuffman);
                }
                out.push(symbol as u8);
                code = 0;
                len = 0;
            } else if len == MAX_LEN {
                // Unreachable with a complete code; kept so that no input can index past it.
                return Err(InvalidHuffman);
            }
        }
    }
    // Padding: fewer than 8 bits, all ones (a prefix of EOS).
    if len > 7 || code != (1 << len) - 1 {
        return Err(InvalidHuffman);
    }
    Ok(())
}

/// The code of `symbol` and its length in bits.
#[cfg(test)]
pub fn code_of(symbol: u16) -> (u32, u8) {
    let len = LENGTHS[usize::from(symbol)];
    let rank = CODE.symbols[usize::from(CODE.offset[usize::from(len)])..]
        .iter()
        .position(|&s| s == symbol)
        .expect("every symbol has a code");
    (CODE.first[usize::from(len)] + rank as u32, len)
}

/// Encodes `src` (tests build header blocks with it).
#[cfg(test)]
pub fn encode(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u64, 0u32);
    for &byte in src {
        let (code, len) = code_of(u16::from(byte));
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        // Pad with the most significant bits of EOS (ones).
        out.push(((acc << (8 - bits)) | ((1 << (8 - bits)) - 1)) as u8);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(src: &[u8]) -> Result<Vec<u8>, InvalidHuffman> {
        let mut out = Vec::new();
        decode(src, &mut out).map(|()| out)
    }

    #[test]
    fn the_lengths_make_a_complete_prefix_code() {
        // Kraft's equality: a complete code, every bit string decodes or is a prefix.
        let kraft: u64 = LENGTHS
            .iter()
            .map(|&l| 1u64 << (MAX_LEN - l as usize))
            .sum();
        assert_eq!(kraft, 1 << MAX_LEN);
    }

    #[test]
    fn codes_listed_in_appendix_b() {
        assert_eq!(code_of(u16::from(b'0')), (0x0, 5));
        assert_eq!(code_of(u16::from(b'a')), (0x3, 5));
        assert_eq!(code_of(u16::from(b't')), (0x9, 5));
        assert_eq!(code_of(u16::from(b' ')), (0x14, 6));
        assert_eq!(code_of(u16::from(b':')), (0x5c, 7));
        assert_eq!(code_of(u16::from(b'&')), (0xf8, 8));
        assert_eq!(code_of(0), (0x1ff8, 13));
        assert_eq!(code_of(1), (0x7fffd8, 23));
        assert_eq!(code_of(u16::from(b'<')), (0x7ffc, 15));
        assert_eq!(code_of(u16::from(b'\\')), (0x7fff0, 19));
        assert_eq!(code_of(10), (0x3ffffffc, 30));
        assert_eq!(code_of(255), (0x3ffffee, 26));
        assert_eq!(code_of(EOS), (0x3fffffff, 30));
    }

    #[test]
    fn appendix_c_strings() {
        let cases: [(&str, &[u8]); 6] = [
            (
                "www.example.com",
                &[
                    0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
                ],
            ),
            ("no-cache", &[0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf]),
            (
                "custom-key",
                &[0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f],
            ),
            ("302", &[0x64, 0x02]),
            ("307", &[0x64, 0x0e, 0xff]),
            ("private", &[0xae, 0xc3, 0x77, 0x1a, 0x4b]),
        ];
        for (text, code) in cases {
            assert_eq!(decoded(code).as_deref(), Ok(text.as_bytes()), "{text}");
            assert_eq!(encode(text.as_bytes()), code, "{text}");
        }
    }

    #[test]
    fn every_octet_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decoded(&encode(&all)), Ok(all.clone()));
        for byte in all {
            assert_eq!(decoded(&encode(&[byte])), Ok(vec![byte]));
        }
        assert_eq!(decoded(&[]), Ok(vec![]));
    }

    #[test]
    fn bad_padding_and_eos_are_rejected() {
        // '0' is 00000: padding of three zeros is not EOS's prefix.
        assert_eq!(decoded(&[0x00]), Err(InvalidHuffman));
        // '0' then 111: fine.
        assert_eq!(decoded(&[0x07]), Ok(b"0".to_vec()));
        // Eight or more bits of padding.
        assert_eq!(decoded(&[0x07, 0xff]), Err(InvalidHuffman));
        assert_eq!(decoded(&[0xff]), Err(InvalidHuffman));
        // EOS itself (30 ones) inside the string.
        assert_eq!(decoded(&[0xff, 0xff, 0xff, 0xfc]), Err(InvalidHuffman));
    }
}
