//! An answer's header fields as they came, without a header map: the proxy passes on a few
//! of Claude's ~25 headers and looks at three, so only those are ever turned into
//! `HeaderName`s and `HeaderValue`s (httparse has already checked every name and value).

use bytes::Bytes;
use std::ops::Range;

/// Where one field's name and value sit in the head.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: Range<usize>,
    pub value: Range<usize>,
}

#[derive(Debug, Clone, Default)]
pub struct Fields {
    head: Bytes,
    fields: Vec<Field>,
}

impl Fields {
    pub fn new(head: Bytes, fields: Vec<Field>) -> Fields {
        Fields { head, fields }
    }

    /// Each field's name (as sent, ASCII token characters; compare without case) and value,
    /// in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|f| (&self.head[f.name.clone()], &self.head[f.value.clone()]))
    }

    /// The fields `keep` accepts by name, each value a `Bytes` that shares the head instead
    /// of a copy of it.
    pub fn shared<'a>(
        &'a self,
        keep: impl Fn(&[u8]) -> bool + 'a,
    ) -> impl Iterator<Item = (&'a [u8], Bytes)> + 'a {
        self.fields.iter().filter_map(move |f| {
            let name = &self.head[f.name.clone()];
            keep(name).then(|| (name, self.head.slice(f.value.clone())))
        })
    }

    /// The first value of `name` (any case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The first value of `name` as text, trimmed; None when absent or not text.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.get(name)?).ok().map(str::trim)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_fields_in_any_case_and_keeps_their_order() {
        let head = Bytes::from_static(b"Content-Type: text/plain\r\nx-a: 1\r\nX-A: 2\r\n");
        let fields = Fields::new(
            head,
            vec![
                Field {
                    name: 0..12,
                    value: 14..24,
                },
                Field {
                    name: 26..29,
                    value: 31..32,
                },
                Field {
                    name: 34..37,
                    value: 39..40,
                },
            ],
        );
        assert_eq!(fields.get_str("content-type"), Some("text/plain"));
        assert_eq!(fields.get("x-a"), Some(&b"1"[..]));
        assert!(!fields.contains("retry-after"));
        let all: Vec<(&[u8], &[u8])> = fields.iter().collect();
        assert_eq!(
            all,
            vec![
                (&b"Content-Type"[..], &b"text/plain"[..]),
                (b"x-a", b"1"),
                (b"X-A", b"2")
            ]
        );
        let kept: Vec<(&[u8], Bytes)> = fields
            .shared(|name| name.eq_ignore_ascii_case(b"x-a"))
            .collect();
        assert_eq!(
            kept,
            vec![
                (&b"x-a"[..], Bytes::from_static(b"1")),
                (b"X-A", Bytes::from_static(b"2"))
            ]
        );
        let head = fields.head.as_ptr_range();
        assert!(
            kept.iter().all(|(_, v)| head.contains(&v.as_ptr())),
            "values share the head, they are not copies"
        );
    }
}
