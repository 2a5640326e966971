//! The decoder against RFC 7541 Appendix C, against an independent encoder, and without history.

use super::table::{ENTRY_OVERHEAD, STATIC};
use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A decoded field, `?` standing for unknown text.
fn text(t: Text<'_>) -> String {
    match t {
        Text::Known(b) => String::from_utf8_lossy(b).into_owned(),
        Text::Unknown => "?".into(),
    }
}

fn decode(d: &mut Decoder, block: &[u8], whole: bool) -> (Vec<(String, String)>, Outcome) {
    let mut fields = Vec::new();
    let outcome = d.decode(block, whole, |f| fields.push((text(f.name), text(f.value))));
    (fields, outcome)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// The dynamic table as (name, value) newest first, and its size.
fn dynamic(d: &Decoder) -> (Vec<(String, String)>, usize) {
    let t = d.table();
    let entries = (1..=t.len())
        .map(|i| match t.get(i) {
            table::Lookup::Entry { name, value } => (
                name.map_or("?".into(), |n| String::from_utf8_lossy(n).into_owned()),
                String::from_utf8_lossy(value).into_owned(),
            ),
            other => panic!("entry {i}: {other:?}"),
        })
        .collect();
    (entries, t.size())
}

/// One block of an example: its hex, its fields, the dynamic table after it and its size.
type Step<'a> = (
    &'a str,
    &'a [(&'a str, &'a str)],
    &'a [(&'a str, &'a str)],
    usize,
);

/// One Appendix C example: blocks decoded in sequence, each with its fields and the table after.
fn example(table_size: u32, blocks: &[Step<'_>], name: &str) {
    let mut d = Decoder::new();
    if table_size != 4096 {
        // The examples assume an encoder table of this size from the start.
        d.set_limit(table_size);
    }
    for (i, (block, fields, table, size)) in blocks.iter().enumerate() {
        let (got, outcome) = decode(&mut d, &hex(block), true);
        assert_eq!(got, pairs(fields), "{name} block {i}");
        assert!(
            outcome.is_whole() && outcome.unknown == 0,
            "{name} block {i}"
        );
        assert_eq!(dynamic(&d), (pairs(table), *size), "{name} table after {i}");
    }
}

#[test]
fn c1_integers() {
    let int = |bytes: &[u8], n| integer(bytes, &mut 0, n).ok();
    assert_eq!(int(&[0x0a], 5), Some(10));
    assert_eq!(int(&[0x1f, 0x9a, 0x0a], 5), Some(1337));
    assert_eq!(int(&[0x2a], 8), Some(42));
    assert_eq!(int(&[0x1f, 0x9a], 5), None, "incomplete");
    assert_eq!(
        int(&[0x7f, 0xff, 0xff, 0xff, 0xff, 0x0f], 7),
        None,
        "over u32"
    );
    assert_eq!(
        int(&[0x7f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00], 7),
        None,
        "too long"
    );
    assert_eq!(
        int(&[0x7f, 0x80, 0x80, 0x00], 7),
        Some(127),
        "zero continuation bytes"
    );
}

#[test]
fn c2_field_representations() {
    example(
        4096,
        &[(
            "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
            &[("custom-key", "custom-header")],
            &[("custom-key", "custom-header")],
            55,
        )],
        "C.2.1",
    );
    example(
        4096,
        &[(
            "040c 2f73 616d 706c 652f 7061 7468",
            &[(":path", "/sample/path")],
            &[],
            0,
        )],
        "C.2.2",
    );
    example(
        4096,
        &[(
            "1008 7061 7373 776f 7264 0673 6563 7265 74",
            &[("password", "secret")],
            &[],
            0,
        )],
        "C.2.3",
    );
    example(4096, &[("82", &[(":method", "GET")], &[], 0)], "C.2.4");
}

const REQ1: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "www.example.com"),
];
const REQ2: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "www.example.com"),
    ("cache-control", "no-cache"),
];
const REQ3: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "https"),
    (":path", "/index.html"),
    (":authority", "www.example.com"),
    ("custom-key", "custom-value"),
];
const REQ_T1: &[(&str, &str)] = &[(":authority", "www.example.com")];
const REQ_T2: &[(&str, &str)] = &[
    ("cache-control", "no-cache"),
    (":authority", "www.example.com"),
];
const REQ_T3: &[(&str, &str)] = &[
    ("custom-key", "custom-value"),
    ("cache-control", "no-cache"),
    (":authority", "www.example.com"),
];

#[test]
fn c3_requests_without_huffman() {
    example(
        4096,
        &[
            (
                "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                REQ1,
                REQ_T1,
                57,
            ),
            ("8286 84be 5808 6e6f 2d63 6163 6865", REQ2, REQ_T2, 110),
            (
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
                REQ3,
                REQ_T3,
                164,
            ),
        ],
        "C.3",
    );
}

#[test]
fn c4_requests_with_huffman() {
    example(
        4096,
        &[
            (
                "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                REQ1,
                REQ_T1,
                57,
            ),
            ("8286 84be 5886 a8eb 1064 9cbf", REQ2, REQ_T2, 110),
            (
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
                REQ3,
                REQ_T3,
                164,
            ),
        ],
        "C.4",
    );
}

const RESP1: &[(&str, &str)] = &[
    (":status", "302"),
    ("cache-control", "private"),
    ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
    ("location", "https://www.example.com"),
];
const RESP2: &[(&str, &str)] = &[
    (":status", "307"),
    ("cache-control", "private"),
    ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
    ("location", "https://www.example.com"),
];
const RESP3: &[(&str, &str)] = &[
    (":status", "200"),
    ("cache-control", "private"),
    ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
    ("location", "https://www.example.com"),
    ("content-encoding", "gzip"),
    (
        "set-cookie",
        "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
    ),
];
const RESP_T1: &[(&str, &str)] = &[
    ("location", "https://www.example.com"),
    ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
    ("cache-control", "private"),
    (":status", "302"),
];
const RESP_T2: &[(&str, &str)] = &[
    (":status", "307"),
    ("location", "https://www.example.com"),
    ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
    ("cache-control", "private"),
];
const RESP_T3: &[(&str, &str)] = &[
    (
        "set-cookie",
        "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
    ),
    ("content-encoding", "gzip"),
    ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
];

#[test]
fn c5_responses_without_huffman() {
    example(
        256,
        &[
            (
                "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
                 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
                 6c65 2e63 6f6d",
                RESP1,
                RESP_T1,
                222,
            ),
            ("4803 3330 37c1 c0bf", RESP2, RESP_T2, 222),
            (
                "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
                 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
                 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
                 3d31",
                RESP3,
                RESP_T3,
                215,
            ),
        ],
        "C.5",
    );
}

#[test]
fn c6_responses_with_huffman() {
    example(
        256,
        &[
            (
                "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
                 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
                RESP1,
                RESP_T1,
                222,
            ),
            ("4883 640e ffc1 c0bf", RESP2, RESP_T2, 222),
            (
                "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
                 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
                 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
                RESP3,
                RESP_T3,
                215,
            ),
        ],
        "C.6",
    );
}

#[test]
fn without_history_static_and_literals_decode_and_dynamic_references_are_unknown() {
    // C.3.3 decoded by a decoder that missed C.3.1 and C.3.2.
    let mut d = Decoder::without_history();
    let block = hex("8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65");
    let (fields, outcome) = decode(&mut d, &block, true);
    assert_eq!(
        fields,
        pairs(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            ("?", "?"),
            ("custom-key", "custom-value"),
        ])
    );
    assert_eq!(
        outcome,
        Outcome {
            fields: 5,
            unknown: 1,
            truncated: false,
            malformed: false
        }
    );
    // What it inserted is known from now on: index 62 is custom-key, 63 is not known.
    let (fields, _) = decode(&mut d, &hex("be bf"), true);
    assert_eq!(fields, pairs(&[("custom-key", "custom-value"), ("?", "?")]));
    // A literal naming an unknown entry keeps its value; its insertion takes index 62.
    let (fields, outcome) = decode(&mut d, &hex("4103 6162 63 7f01 0178"), true);
    assert_eq!(fields, pairs(&[(":authority", "abc"), ("?", "x")]));
    assert_eq!(outcome.unknown, 1);
    let (fields, _) = decode(&mut d, &hex("be bf c0"), true);
    assert_eq!(
        fields,
        pairs(&[
            ("?", "x"),
            (":authority", "abc"),
            ("custom-key", "custom-value")
        ])
    );
    assert!(!d.has_whole_history());
}

#[test]
fn a_size_update_to_zero_restores_the_whole_history() {
    let mut d = Decoder::without_history();
    assert_eq!(decode(&mut d, &hex("be"), true).0, pairs(&[("?", "?")]));
    // Size 0 empties the table, then 4096 (the usual sequence of an encoder that resets).
    let (fields, outcome) = decode(&mut d, &hex("20 3f e1 1f 82"), true);
    assert_eq!(fields, pairs(&[(":method", "GET")]));
    assert!(outcome.is_whole());
    assert!(d.has_whole_history());
    assert_eq!(d.table().max_size(), 4096);
    let (_, outcome) = decode(&mut d, &hex("be"), true);
    assert!(outcome.malformed, "no entry can be there");
}

#[test]
fn a_cut_block_gives_its_whole_fields_and_loses_the_history() {
    let mut d = Decoder::new();
    decode(
        &mut d,
        &hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"),
        true,
    );
    // C.3.2 cut inside its last literal.
    let block = hex("8286 84be 5808 6e6f 2d63 6163 6865");
    let (fields, outcome) = decode(&mut d, &block[..8], false);
    assert_eq!(
        fields,
        pairs(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ])
    );
    assert!(outcome.truncated && !outcome.malformed);
    // The insertion of the cut field was not seen: references are unknown now.
    let (fields, _) = decode(&mut d, &hex("be"), true);
    assert_eq!(fields, pairs(&[("?", "?")]));
    // A block known to be cut loses the history even when it ends on a field boundary.
    let mut d = Decoder::new();
    let (fields, outcome) = decode(&mut d, &hex("82 86"), false);
    assert_eq!(fields.len(), 2);
    assert!(outcome.truncated);
    assert!(!d.has_whole_history());
}

#[test]
fn malformed_blocks_stop_at_the_error() {
    let cases: [(&str, &str); 8] = [
        ("82 80", "index 0"),
        ("82 be", "dynamic index past a complete table"),
        ("82 ff 80 80 80 80 80 01", "integer too long"),
        ("82 20", "size update after a field"),
        ("82 40 85 ff ff ff ff ff 00", "Huffman name containing EOS"),
        ("82 04 7f ff ff ff ff 0f", "string length over u32"),
        ("82 0f ff", "incomplete index in a whole block"),
        ("82 04 05 61", "string longer than the block"),
    ];
    for (block, why) in cases {
        let mut d = Decoder::new();
        let (fields, outcome) = decode(&mut d, &hex(block), true);
        assert_eq!(fields, pairs(&[(":method", "GET")]), "{why}");
        assert!(outcome.malformed, "{why}");
        assert!(!d.has_whole_history(), "{why}");
    }
}

#[test]
fn static_table_matches_an_independent_encoder() {
    // httlib-hpack's encoder, asked for the best representation, indexes these fields from
    // its own static table; ours must read them back.
    let mut enc = httlib_hpack::Encoder::default();
    for (name, value) in STATIC {
        let mut block = Vec::new();
        let flags = httlib_hpack::Encoder::BEST_FORMAT;
        enc.encode(
            (name.as_bytes().to_vec(), value.as_bytes().to_vec(), flags),
            &mut block,
        )
        .unwrap();
        let (fields, outcome) = decode(&mut Decoder::new(), &block, true);
        assert_eq!(fields, pairs(&[(name, value)]), "{block:02x?}");
        assert!(outcome.is_whole());
    }
}

use crate::test_rng::Rng;

#[test]
fn random_blocks_from_an_independent_encoder_decode_exactly() {
    let mut rng = Rng::new(7);
    let names: [&[u8]; 6] = [
        b":path",
        b"content-type",
        b"x-custom",
        b"grpc-status",
        b"te",
        b"",
    ];
    let mut enc = httlib_hpack::Encoder::default();
    let mut dec = Decoder::new();
    for round in 0..300 {
        let mut block = Vec::new();
        let mut expected = Vec::new();
        for _ in 0..1 + rng.below(6) {
            let name = names[rng.below(names.len())].to_vec();
            let name = if name.is_empty() {
                (0..1 + rng.below(12))
                    .map(|_| b'a' + rng.below(26) as u8)
                    .collect()
            } else {
                name
            };
            // Values over every octet, to exercise every Huffman code.
            let value: Vec<u8> = (0..rng.below(40)).map(|_| rng.next() as u8).collect();
            let flags = [0x0, 0x1, 0x2, 0x3, 0x4, 0x6, 0x7, 0x8, 0x13, 0x17][rng.below(10)];
            enc.encode((name.clone(), value.clone(), flags), &mut block)
                .unwrap();
            expected.push((
                String::from_utf8_lossy(&name).into_owned(),
                String::from_utf8_lossy(&value).into_owned(),
            ));
        }
        let (fields, outcome) = decode(&mut dec, &block, true);
        assert_eq!(fields, expected, "round {round}: {block:02x?}");
        assert!(outcome.is_whole() && outcome.unknown == 0, "round {round}");
    }
    assert!(!dec.table().is_empty(), "the rounds inserted entries");
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng::new(11);
    for _ in 0..2_000 {
        let len = rng.below(64);
        let block: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let mut d = if rng.below(2) == 0 {
            Decoder::new()
        } else {
            Decoder::without_history()
        };
        let whole = rng.below(2) == 0;
        let (fields, outcome) = decode(&mut d, &block, whole);
        assert_eq!(fields.len() as u32, outcome.fields);
        assert!(d.table().size() <= table::MAX_SIZE + ENTRY_OVERHEAD);
    }
}
