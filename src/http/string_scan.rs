//! Finding where a JSON string ends, 16 bytes at a time: one vector compare finds every
//! quote, backslash and raw control byte of a block, and the escapes inside a block are
//! stepped over without going back to memory. Code and prose put an escape every few dozen
//! bytes, which is what keeps byte-wise and 8-byte-wise scanners (serde's) near 1.5 GB/s.

/// Index of the closing quote of the string whose contents start at `from`; None when the
/// string is not well formed (raw control character, bad escape, no end).
pub fn string_end(json: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        // The next quote, backslash or control byte: 16 bytes at a time.
        let (block, mut marks) = next_marks(json, i)?;
        loop {
            let at = block + marks.trailing_zeros() as usize;
            match json[at] {
                b'"' => return Some(at),
                b'\\' => {
                    let next = at + 1 + escape_len(json.get(at + 1..)?)?;
                    // Marks inside the escape are not events; carry on in this block.
                    let skipped = next - block;
                    if skipped >= 16 {
                        i = next;
                        break;
                    }
                    marks &= !((1u32 << skipped) - 1);
                    if marks == 0 {
                        i = block + 16;
                        break;
                    }
                }
                _ => return None,
            }
        }
    }
}

/// The first 16-byte block at or after `i` holding a quote, backslash or control byte, and
/// which of its bytes those are (bit k: `json[block + k]`), bytes before `i` masked out.
fn next_marks(json: &[u8], mut i: usize) -> Option<(usize, u32)> {
    loop {
        if i >= json.len() {
            return None;
        }
        let (block, marks) = marks_at(json, i);
        if marks != 0 {
            return Some((block, marks));
        }
        i = block + 16;
    }
}

/// Marks of the 16 bytes from `i` (fewer at the end of `json`). Other targets use the
/// byte-wise loop: correct, but no faster than serde there.
#[cfg(target_arch = "x86_64")]
fn marks_at(json: &[u8], i: usize) -> (usize, u32) {
    use std::arch::x86_64::*;
    if i + 16 > json.len() {
        return marks_scalar(json, i);
    }
    // SAFETY: SSE2 is part of x86_64; the load reads json[i..i + 16], in bounds above.
    let marks = unsafe {
        let v = _mm_loadu_si128(json.as_ptr().add(i).cast());
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        let low = _mm_set1_epi8(0x1f);
        let control = _mm_cmpeq_epi8(_mm_max_epu8(v, low), low);
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
    };
    (i, marks)
}

#[cfg(not(target_arch = "x86_64"))]
fn marks_at(json: &[u8], i: usize) -> (usize, u32) {
    marks_scalar(json, i)
}

fn marks_scalar(json: &[u8], i: usize) -> (usize, u32) {
    let end = (i + 16).min(json.len());
    let mut marks = 0u32;
    for (k, &b) in json[i..end].iter().enumerate() {
        if b == b'"' || b == b'\\' || b < 0x20 {
            marks |= 1 << k;
        }
    }
    (i, marks)
}

/// Length of the escape after a backslash (`rest` starts after it), if it is a valid one.
fn escape_len(rest: &[u8]) -> Option<usize> {
    match rest.first()? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(1),
        b'u' => rest
            .get(1..5)?
            .iter()
            .all(u8::is_ascii_hexdigit)
            .then_some(5),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn finds_the_end_of_any_string_serde_writes(
            text in prop::collection::vec(
                prop::sample::select(vec!['a', 'é', '😀', '"', '\\', '\n', '\t', '\u{1}', '/', ' ']),
                0..80,
            ),
            before in 0..20usize,
        ) {
            let text: String = text.into_iter().collect();
            let literal = serde_json::to_string(&text).expect("serialize");
            let json = format!("{}{literal},\"next\"", " ".repeat(before));
            prop_assert_eq!(string_end(json.as_bytes(), before + 1), Some(before + literal.len() - 1));
        }

        #[test]
        fn refuses_a_raw_control_byte_anywhere(len in 0..60usize, at in 0..60usize) {
            let mut json = format!("\"{}\"", "x".repeat(len)).into_bytes();
            let at = 1 + at % (len + 1);
            json.insert(at, 0x1f);
            prop_assert_eq!(string_end(&json, 1), None);
        }
    }

    #[test]
    fn an_escape_across_a_block_edge_is_stepped_over() {
        for pad in 0..20 {
            let json = format!("{}\\u0022\\\"x\"", "a".repeat(pad));
            assert_eq!(
                string_end(json.as_bytes(), 0),
                Some(json.len() - 1),
                "{json}"
            );
        }
    }
}
