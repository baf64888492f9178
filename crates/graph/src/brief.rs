//! Messages of bounded length: a value or a list that comes from a file or
//! the command line is shortened, with a count of what was left out, so an
//! error stays one readable line whatever the input (a checkpoint listing
//! 20,000 tensor names, a class name of a megabyte, a 301-digit number).

use std::fmt::Write as _;

/// How many items [`list`] shows before `... and N more`.
pub const LIST_ITEMS: usize = 10;
/// How many characters of one item [`list`] shows.
pub const ITEM_CHARS: usize = 60;

/// `19,990`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `text` if it has at most `max` characters, else its first `max`, then
/// `... (N characters)`. Control characters (a newline in a name read from
/// a file) are escaped, so the result stays on one line.
pub fn text(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max {
            let _ = write!(out, "... ({} characters)", count(text.chars().count() as u64));
            return out;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The first `max` items joined with `, ` (each cut by [`text`] to
/// [`ITEM_CHARS`]), then `... and N more`.
pub fn list<S: AsRef<str>>(items: impl IntoIterator<Item = S>, max: usize) -> String {
    let mut out = String::new();
    let mut more = 0u64;
    for (i, item) in items.into_iter().enumerate() {
        if i >= max {
            more += 1;
            continue;
        }
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&text(item.as_ref(), ITEM_CHARS));
    }
    if more > 0 {
        let _ = write!(out, ", ... and {} more", count(more));
    }
    out
}

/// A number as the user would write it: `0.05`, `-1`, `inf`; in
/// scientific notation (`1e300`, `1e-60`) when the plain form is long.
pub fn number(v: f64) -> String {
    let plain = v.to_string();
    if plain.len() <= 12 {
        plain
    } else {
        format!("{v:e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_group_thousands() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(19_990), "19,990");
        assert_eq!(count(1_000_000), "1,000,000");
    }

    #[test]
    fn long_text_and_lists_are_cut_with_a_count() {
        assert_eq!(text("short", 10), "short");
        assert_eq!(text("abcdef", 3), "abc... (6 characters)");
        assert_eq!(text("a\nb", 10), "a\\nb");
        let names: Vec<String> = (0..20_000).map(|i| format!("t{i}")).collect();
        let l = list(&names, 3);
        assert_eq!(l, "t0, t1, t2, ... and 19,997 more");
        assert_eq!(list(["a", "b"], 3), "a, b");
        assert!(list([&"x".repeat(100_000)], 3).len() < 100);
    }

    #[test]
    fn numbers_stay_short() {
        assert_eq!(number(0.05), "0.05");
        assert_eq!(number(-1.0), "-1");
        assert_eq!(number(f64::INFINITY), "inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(1e300), "1e300");
        assert_eq!(number(1e-60), "1e-60");
        assert_eq!(number(3.5e38), "3.5e38");
    }
}
