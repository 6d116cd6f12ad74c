//! Escaping and formatting shared by the HTML, the SVG and the JUnit XML.

use mlci_core::ParamValue;

pub(crate) use mlci_core::escape_markup as esc;

/// `s` on one line (whitespace runs collapsed), at most `max` characters.
pub(crate) fn one_line(s: &str, max: usize) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() <= max {
        return joined;
    }
    let mut cut: String = joined.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A class name made of `[a-z0-9_-]` only, whatever `s` holds.
pub(crate) fn class_name(s: &str) -> String {
    s.chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `v` with `sig` significant digits, trailing zeros dropped; exponent
/// notation for very large or small magnitudes.
pub(crate) fn sig(v: f64, sig: usize) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if v == 0.0 {
        return "0".into();
    }
    let mag = v.abs().log10().floor() as i32;
    if !(-4..6).contains(&mag) {
        return format!("{:.*e}", sig.saturating_sub(1), v);
    }
    let decimals = (sig as i32 - 1 - mag).max(0) as usize;
    trim_zeros(format!("{v:.decimals$}"))
}

/// `v` with exactly `decimals` decimals (`-0` shown as `0`).
pub(crate) fn fixed(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_owned()
    } else {
        s
    }
}

fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// An objective value for people: 4 significant digits.
pub(crate) fn value(v: f64) -> String {
    sig(v, 4)
}

/// A parameter value for people: floats to 4 significant digits.
pub(crate) fn param(v: &ParamValue) -> String {
    match v {
        ParamValue::Float(f) => sig(*f, 4),
        other => other.to_string(),
    }
}

/// A duration for people: `0.4 s`, `12 s`, `4 min 05 s`, `2 h 03 min`.
pub(crate) fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "—".into();
    }
    if seconds < 10.0 {
        return format!("{} s", fixed(seconds, 1));
    }
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

/// Unix seconds as `2025-03-14 09:26:53 UTC`.
pub(crate) fn utc(unix: f64) -> String {
    let (date, time) = utc_parts(unix);
    if date.is_empty() {
        return "—".into();
    }
    format!("{date} {time} UTC")
}

/// Unix seconds as ISO 8601 without zone (`2025-03-14T09:26:53`), the
/// JUnit `timestamp` format.
pub(crate) fn iso(unix: f64) -> Option<String> {
    let (date, time) = utc_parts(unix);
    (!date.is_empty()).then(|| format!("{date}T{time}"))
}

fn utc_parts(unix: f64) -> (String, String) {
    if !unix.is_finite() || !(0.0..1e12).contains(&unix) {
        return (String::new(), String::new());
    }
    let secs = unix.floor() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02}", rem / 3600, (rem % 3600) / 60, rem % 60),
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_strips_what_xml_forbids() {
        assert_eq!(
            esc(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(esc("\u{1b}[31merror\u{1b}[0m: boom\u{0}\u{7}"), "error: boom");
        assert_eq!(esc("a\r\nb\rc\td"), "a\nb\nc\td");
        assert_eq!(esc("\u{ffff}\u{85}é"), "\u{fffd}é");
    }

    #[test]
    fn formats_numbers_durations_and_dates() {
        assert_eq!(sig(0.84125, 4), "0.8413");
        assert_eq!(sig(0.8, 4), "0.8");
        assert_eq!(sig(0.000316227766, 4), "0.0003162");
        assert_eq!(sig(1234.5678, 4), "1235");
        assert_eq!(sig(2.5e-7, 3), "2.50e-7");
        assert_eq!(sig(f64::NAN, 4), "NaN");
        assert_eq!(fixed(-0.0001, 2), "0.00");
        assert_eq!(duration(4.26), "4.3 s");
        assert_eq!(duration(245.0), "4 min 05 s");
        assert_eq!(duration(7380.0), "2 h 03 min");
        assert_eq!(utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_741_944_413.7), "2025-03-14 09:26:53 UTC");
        assert_eq!(iso(951_782_400.0).as_deref(), Some("2000-02-29T00:00:00"));
        assert_eq!(utc(f64::NAN), "—");
        assert_eq!(one_line("a\n  b\tc", 10), "a b c");
        assert_eq!(one_line("abcdefghijkl", 5), "abcd…");
        assert_eq!(class_name("Trial Failed!"), "trial_failed_");
    }
}
