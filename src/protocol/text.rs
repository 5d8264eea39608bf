//! Client-supplied text, made safe to put in a log line or a Reason String.
//!
//! A client id, user name, topic or authentication method can be 65,535 bytes of anything but
//! U+0000: control characters that forge log lines, bidirectional overrides that make a log lie,
//! or simply far more than anyone wants to read. [`cut`] shows at most [`SHOWN`] bytes of it,
//! escaped, with the cut marked; nothing is allocated.
//!
//! ```
//! use mqttd::protocol::text;
//! assert_eq!(text::cut("a\nb").to_string(), r"a\nb");
//! let long = "x".repeat(1000);
//! assert_eq!(text::cut_to(&long, 24).to_string(), "xxxxxxxx…(+992 bytes)");
//! ```

use std::fmt::{self, Write};

/// Most bytes [`cut`] writes (the marker included).
pub const SHOWN: usize = 256;

/// `s` for a log line or a Reason String: at most [`SHOWN`] bytes, escaped, cut marked.
pub fn cut(s: &str) -> Cut<'_> {
    cut_to(s, SHOWN)
}

/// Like [`cut`] with another bound; below about 20 bytes only the marker may fit.
pub fn cut_to(s: &str, max: usize) -> Cut<'_> {
    Cut { text: s, max }
}

/// `Display`s its text escaped (control characters, `\`, `"`, invisible and bidirectional
/// formatting characters) in at most `max` bytes (or just the marker, if `max` cannot even hold
/// that); a cut ends in `…(+N bytes)`, N counting the original bytes left out. Escaping `"` lets a
/// caller quote the text unambiguously.
#[derive(Clone, Copy)]
pub struct Cut<'a> {
    text: &'a str,
    max: usize,
}

impl fmt::Debug for Cut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Characters that change how the rest of a line reads without showing: zero-width characters,
/// bidirectional embeddings, overrides and isolates, and the byte-order mark.
fn invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// How `c` is shown, as (the bytes it takes, or a char shown as itself).
enum Shown {
    Plain(char),
    Escape(&'static str),
    Hex(u32),
}

impl Shown {
    fn of(c: char) -> Shown {
        match c {
            '\n' => Shown::Escape("\\n"),
            '\r' => Shown::Escape("\\r"),
            '\t' => Shown::Escape("\\t"),
            '\\' => Shown::Escape("\\\\"),
            '"' => Shown::Escape("\\\""),
            c if c.is_control() || invisible(c) => Shown::Hex(u32::from(c)),
            c => Shown::Plain(c),
        }
    }

    fn len(&self) -> usize {
        match self {
            Shown::Plain(c) => c.len_utf8(),
            Shown::Escape(e) => e.len(),
            // `\x1b` below 0x80, else `\u{85}` .. `\u{feff}`.
            Shown::Hex(v) if *v < 0x80 => 4,
            Shown::Hex(v) => 4 + hex_digits(*v),
        }
    }

    fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shown::Plain(c) => f.write_char(*c),
            Shown::Escape(e) => f.write_str(e),
            Shown::Hex(v) if *v < 0x80 => write!(f, "\\x{v:02x}"),
            Shown::Hex(v) => write!(f, "\\u{{{v:x}}}"),
        }
    }
}

fn hex_digits(v: u32) -> usize {
    (32 - v.leading_zeros()).div_ceil(4).max(1) as usize
}

fn dec_digits(v: usize) -> usize {
    v.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// `…(+` and ` bytes)`.
const MARKER_FIXED: usize = '…'.len_utf8() + 2 + 7;

impl fmt::Display for Cut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Everything, if it fits.
        let mut total = 0;
        let fits = self.text.chars().all(|c| {
            total += Shown::of(c).len();
            total <= self.max
        });
        if fits {
            return self.text.chars().try_for_each(|c| Shown::of(c).write(f));
        }
        // Else as much as leaves room for the marker (sized for the largest count it can show).
        let budget = self
            .max
            .saturating_sub(MARKER_FIXED + dec_digits(self.text.len()));
        let (mut used, mut shown_bytes) = (0, 0);
        for c in self.text.chars() {
            let shown = Shown::of(c);
            if used + shown.len() > budget {
                break;
            }
            shown.write(f)?;
            used += shown.len();
            shown_bytes += c.len_utf8();
        }
        write!(f, "…(+{} bytes)", self.text.len() - shown_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_escaped_not_cut() {
        assert_eq!(cut("plain é 😀").to_string(), "plain é 😀");
        assert_eq!(
            cut("a\"b\\c\r\n\t\x01\x7f\u{85}").to_string(),
            r#"a\"b\\c\r\n\t\x01\x7f\u{85}"#
        );
        // A right-to-left override cannot reorder the rest of the log line.
        assert_eq!(cut("ab\u{202E}cd").to_string(), r"ab\u{202e}cd");
        assert_eq!(cut("").to_string(), "");
        assert_eq!(format!("{:?}", cut("a\nb")), r#""a\nb""#);
    }

    #[test]
    fn long_text_is_cut_and_marked_within_the_bound() {
        let long = "y".repeat(30_000);
        let out = cut(&long).to_string();
        assert!(out.len() <= SHOWN, "{} bytes", out.len());
        let kept = out.strip_suffix("…(+29761 bytes)").expect(&out);
        assert_eq!(kept, "y".repeat(30_000 - 29_761));
        // Exactly at the bound: not cut.
        let exact = "z".repeat(SHOWN);
        assert_eq!(cut(&exact).to_string(), exact);
        let over = "z".repeat(SHOWN + 1);
        assert!(cut(&over).to_string().ends_with("…(+16 bytes)"));
    }

    #[test]
    fn cut_counts_escapes_and_keeps_chars_whole() {
        // The 30,000-byte Authentication Method of issue 11: all U+0001.
        let method = "\u{1}".repeat(30_000);
        let out = cut(&method).to_string();
        assert!(out.len() <= SHOWN, "{} bytes", out.len());
        let shown = out.matches(r"\x01").count();
        assert!(shown > 50, "{out}");
        assert!(
            out.ends_with(&format!("…(+{} bytes)", 30_000 - shown)),
            "{out}"
        );
        // Four-byte characters are never split.
        let emoji = "😀".repeat(100);
        let out = cut_to(&emoji, 40).to_string();
        assert!(out.len() <= 40);
        let kept = out.split('…').next().unwrap_or_default();
        assert_eq!(kept.len() % 4, 0);
        assert!(
            out.ends_with(&format!("…(+{} bytes)", 400 - kept.len())),
            "{out}"
        );
    }

    #[test]
    fn tiny_bounds_show_the_marker() {
        assert_eq!(cut_to("abcdef", 3).to_string(), "…(+6 bytes)");
        assert_eq!(cut_to("abc", 3).to_string(), "abc");
    }
}
