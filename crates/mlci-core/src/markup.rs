//! Escaping text for HTML and XML (the report, the JUnit XML, the mail): one function,
//! pure, for every renderer.

/// Escape `s` for HTML or XML text and attribute values.
///
/// Also makes it legal in both: ANSI colour sequences (common in crash
/// output) and control characters other than tab and newline (which XML 1.0
/// forbids and HTML calls a parse error) are dropped; noncharacters become
/// U+FFFD.
pub fn escape_markup(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            '\r' => {
                if chars.peek() != Some(&'\n') {
                    out.push('\n');
                }
            }
            '\u{1b}' => {
                // CSI: ESC [ parameter and intermediate bytes, then one final byte in @..~.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
            }
            c if is_control(c) => {}
            c if is_nonchar(c) => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn is_control(c: char) -> bool {
    let u = c as u32;
    u < 0x20 || (0x7f..=0x9f).contains(&u)
}

fn is_nonchar(c: char) -> bool {
    let u = c as u32;
    (0xfdd0..=0xfdef).contains(&u) || (u & 0xfffe) == 0xfffe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped_and_made_legal() {
        assert_eq!(escape_markup("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
        assert_eq!(escape_markup("red\u{1b}[31mtext\u{1b}[0m"), "redtext");
        assert_eq!(escape_markup("x\r\ny\u{7}"), "x\ny");
    }
}
