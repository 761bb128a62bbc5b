//! A package's manifest.json: `Manifest::from_json` (parse + validate). Input: the file's bytes.
//!
//! Properties: no panic or unbounded allocation; a manifest that validates round-trips through
//! `to_json`; and what the loaders then do without further checks holds: every tensor has a
//! layout and part sizes, its ranges sum to them, and every row chunk `chunk_rows` plans (for a
//! browser's 128 MiB binding limit and a small one) is a sub-range of those parts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webgpu_llm::loader::{Layout, Manifest, PartKind};
use webgpu_llm::ops::matmul::{chunk_byte_ranges, chunk_rows};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Manifest::from_json(data) else {
        return;
    };
    let _ = m.total_bytes();
    let json = m.to_json().expect("a valid manifest serializes");
    let again = Manifest::from_json(json.as_bytes()).expect("a valid manifest re-parses");
    assert_eq!(again, m);

    for t in &m.tensors {
        let layout = t.layout().expect("validated");
        for p in &t.parts {
            let want = t.part_bytes(p.kind).expect("validated");
            let got: u64 = p.ranges.iter().map(|r| r.bytes).sum();
            assert_eq!(got, want, "{}", t.name);
        }
        let Layout::Matrix { n, k } = layout else {
            continue;
        };
        let weights = t.part_bytes(PartKind::Weights).unwrap();
        let scales = t.part_bytes(PartKind::Scales).unwrap();
        for limit in [128 << 20, 4096] {
            let Ok(chunks) = chunk_rows(t.format, n, k, limit) else {
                continue;
            };
            let mut next = 0u32;
            for (row0, rows) in chunks {
                assert_eq!(row0, next);
                next = row0 + rows;
                let (w, s) = chunk_byte_ranges(t.format, k, row0, rows);
                assert!(w.start <= w.end && w.end <= weights && w.end - w.start <= limit, "{}: {w:?}", t.name);
                assert!(s.start <= s.end && s.end <= scales && s.end - s.start <= limit, "{}: {s:?}", t.name);
            }
            assert_eq!(next as usize, n);
        }
    }
});
