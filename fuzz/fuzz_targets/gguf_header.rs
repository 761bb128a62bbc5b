//! The GGUF header/metadata parser and what reads the parsed table on the CPU: `parse_header`,
//! `GgufFile::parse`, `hf_config`, and every tensor through `read_matrix` / `read_vector` (the
//! repacking the GPU loaders do). Input: a whole .gguf file.
//!
//! Properties: no panic, no allocation beyond the input's scale (libFuzzer's -malloc_limit_mb),
//! and the prefix property the streaming reader relies on: parsing any prefix gives the whole
//! file's result or `TruncatedHeader` asking for more bytes than the prefix has.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webgpu_llm::loader::gguf::{hf_config, parse_header, read_matrix, read_vector, GgufError, GgufFile, SliceSource};
use webgpu_llm::loader::Layout;

fuzz_target!(|data: &[u8]| {
    let whole = parse_header(data);
    if let Err(GgufError::TruncatedHeader { available, needed }) = &whole {
        assert_eq!(*available, data.len() as u64);
        assert!(needed > available, "TruncatedHeader asks for {needed} of {available} bytes");
    }
    if let Ok(h) = &whole {
        assert!(h.alignment.is_power_of_two());
        assert_eq!(h.data_offset % h.alignment, 0);
        for t in &h.tensors {
            assert!(t.offset >= h.data_offset);
        }
    }

    // A prefix: the same result, or "read more" with a length past the prefix.
    if !data.is_empty() {
        let cut = data.len() * (data[data.len() - 1] as usize + 1) / 257;
        let part = parse_header(&data[..cut]);
        match (&part, &whole) {
            (Err(GgufError::TruncatedHeader { available, needed }), _) => {
                assert_eq!(*available, cut as u64);
                assert!(*needed > cut as u64);
            }
            // Debug text, not ==: a NaN in the metadata is not equal to itself.
            (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}")),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!("prefix of {cut}: {a:?}, whole: {b:?}"),
        }
    }

    let Ok(file) = GgufFile::parse(data, data.len() as u64) else {
        return;
    };
    let mut src = SliceSource::new(vec![data]);
    let _ = hf_config(&file, &mut src);
    for t in &file.tensors {
        match t.layout() {
            Ok(Layout::Matrix { n, k }) => {
                if let Ok(m) = read_matrix(&file, &mut src, &t.name) {
                    assert_eq!((m.n, m.k), (n, k));
                }
            }
            Ok(Layout::Vector { len }) => {
                if let Ok(v) = read_vector(&file, &mut src, &t.name) {
                    assert_eq!(v.len(), len);
                }
            }
            Err(_) => {}
        }
    }
});
