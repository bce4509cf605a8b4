//! Measuring and wrapping text by terminal columns: wide characters (CJK, most emoji) take
//! two columns, combining marks none, and a grapheme cluster is never split.

use unicode_segmentation::UnicodeSegmentation as _;
use unicode_width::UnicodeWidthStr as _;

/// The columns `s` takes on a terminal.
pub fn width(s: &str) -> usize {
    s.graphemes(true).map(grapheme_width).sum()
}

fn grapheme_width(g: &str) -> usize {
    // A control character (a tab, a stray escape) would move the cursor: it is shown as one
    // replacement column by `sanitize`, so it never reaches here in rendered text.
    g.width()
}

/// Replaces control characters (tabs, escapes, carriage returns) that would move the
/// terminal's cursor; a tab becomes four spaces. Newlines are kept.
pub fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push('\n'),
            '\t' => out.push_str("    "),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Wraps `text` into lines of at most `cols` columns: at spaces where possible, inside a
/// word only when the word alone is longer than a line. Explicit newlines are kept. An
/// empty text is one empty line.
pub fn wrap(text: &str, cols: usize) -> Vec<String> {
    let cols = cols.max(1);
    let mut out = Vec::new();
    for para in text.split('\n') {
        wrap_paragraph(para, cols, &mut out);
    }
    out
}

fn wrap_paragraph(para: &str, cols: usize, out: &mut Vec<String>) {
    let mut line = String::new();
    let mut line_w = 0;
    // Words keep their trailing spaces; a line break drops the spaces at its end.
    for word in para.split_word_bounds() {
        let w = width(word);
        if line_w + w <= cols {
            line.push_str(word);
            line_w += w;
            continue;
        }
        if word.trim().is_empty() {
            // Spaces that do not fit end the line.
            out.push(std::mem::take(&mut line).trim_end().to_owned());
            line_w = 0;
            continue;
        }
        if line_w > 0 && w <= cols {
            out.push(std::mem::take(&mut line).trim_end().to_owned());
            line.push_str(word);
            line_w = w;
            continue;
        }
        // A word longer than the room left: break it between grapheme clusters.
        for g in word.graphemes(true) {
            let gw = grapheme_width(g);
            if line_w + gw > cols && line_w > 0 {
                out.push(std::mem::take(&mut line));
                line_w = 0;
            }
            line.push_str(g);
            line_w += gw;
        }
    }
    out.push(line.trim_end().to_owned());
}

/// `s` cut to at most `cols` columns, with `…` when cut.
pub fn truncate(s: &str, cols: usize) -> String {
    if width(s) <= cols {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut w = 0;
    for g in s.graphemes(true) {
        let gw = grapheme_width(g);
        if w + gw + 1 > cols {
            break;
        }
        out.push_str(g);
        w += gw;
    }
    if cols > 0 {
        out.push('…');
    }
    out
}

/// The first line of `s`, control characters replaced, for one-line previews.
pub fn one_line(s: &str) -> String {
    sanitize(s.lines().next().unwrap_or("")).replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_of_wide_and_combining_characters() {
        assert_eq!(width("abc"), 3);
        assert_eq!(width("日本語"), 6);
        assert_eq!(width("e\u{301}"), 1, "e + combining acute is one column");
        assert_eq!(width("👍"), 2);
    }

    #[test]
    fn wraps_at_spaces_and_breaks_long_words() {
        assert_eq!(wrap("hello world foo", 11), vec!["hello world", "foo"]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("a\nb", 10), vec!["a", "b"]);
        assert_eq!(wrap("", 10), vec![""]);
    }

    #[test]
    fn never_splits_a_wide_character_across_the_edge() {
        // 5 columns: two wide chars (4) then the third does not fit.
        assert_eq!(wrap("日本語", 5), vec!["日本", "語"]);
        for line in wrap("日本語の文章はとても長いです", 7) {
            assert!(width(&line) <= 7, "{line:?}");
        }
        // The combining mark stays with its base.
        assert_eq!(
            wrap("cafe\u{301}cafe\u{301}", 4),
            vec!["cafe\u{301}", "cafe\u{301}"]
        );
    }

    #[test]
    fn truncates_by_columns() {
        assert_eq!(truncate("hello", 10), "hello");
        assert_eq!(truncate("hello world", 6), "hello…");
        assert_eq!(truncate("日本語", 4), "日…");
    }

    #[test]
    fn control_characters_cannot_move_the_cursor() {
        assert_eq!(sanitize("a\x1b[2Jb\tc"), "a\u{fffd}[2Jb    c");
        assert_eq!(one_line("first\nsecond"), "first");
    }
}
