//! Tracetest's generator functions (`server/expression/functions`): fake
//! names, ids, card numbers, random integers and the date. Pure like the
//! rest of the engine: the moment and the seed come from the caller
//! ([`super::EvalContext`]), and each call of an evaluation draws from the
//! seed mixed with its place in the evaluation, so two calls differ
//! (`firstName() != firstName()`) while a test can fix what they give.

use super::value::Value;
use crate::civil::Utc;
use crate::model::builtins::Function;

/// What one call needs besides its arguments.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Draw {
    pub now_unix_nanos: u64,
    pub seed: u64,
    /// How many calls this evaluation made before this one.
    pub call: u64,
}

/// SplitMix64: a few operations per number, and good enough to make fake
/// data look random; nothing here needs more.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In `0..n` (the modulo bias is far below anything fake data shows).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    fn digit(&mut self) -> char {
        char::from(b'0' + self.below(10) as u8)
    }
}

/// 64 of each, so that a list index stepping by an odd stride visits every
/// entry before repeating one: consecutive calls never give the same name.
const FIRST_NAMES: [&str; 64] = [
    "Ada", "Alan", "Alice", "Amara", "Anton", "Aria", "Ben", "Bianca", "Carlos", "Chloe", "Dario",
    "Dmitri", "Elena", "Emil", "Farah", "Felix", "Grace", "Hana", "Hugo", "Ines", "Ivan", "Jade",
    "Jonas", "Kai", "Kira", "Leo", "Lina", "Luca", "Maya", "Milo", "Nadia", "Nico", "Nora", "Omar",
    "Olga", "Pablo", "Petra", "Quinn", "Rafael", "Rosa", "Sami", "Sofia", "Tariq", "Tessa", "Umar",
    "Uma", "Victor", "Vera", "Wes", "Wanda", "Xavier", "Ximena", "Yara", "Yusuf", "Zane", "Zoe",
    "Arjun", "Beatriz", "Cyrus", "Dalia", "Ezra", "Freya", "Goran", "Helga",
];

const LAST_NAMES: [&str; 64] = [
    "Abbott",
    "Barros",
    "Castillo",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Hartmann",
    "Ito",
    "Jensen",
    "Kowalski",
    "Larsen",
    "Moreau",
    "Nakamura",
    "Okafor",
    "Petrov",
    "Quist",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Uribe",
    "Varga",
    "Weber",
    "Xu",
    "Yilmaz",
    "Zimmer",
    "Almeida",
    "Brandt",
    "Costa",
    "Diaz",
    "Evans",
    "Ferreira",
    "Gomez",
    "Horvat",
    "Iqbal",
    "Jovanovic",
    "Khan",
    "Lopez",
    "Mendes",
    "Novak",
    "Olsen",
    "Pereira",
    "Ramos",
    "Silva",
    "Torres",
    "Ueda",
    "Vogel",
    "Walsh",
    "Young",
    "Zhang",
    "Bauer",
    "Chen",
    "Dahl",
    "Engel",
    "Fontaine",
    "Gallo",
    "Holm",
    "Ibarra",
    "Keller",
    "Lindqvist",
    "Meyer",
    "Nielsen",
    "Ortiz",
    "Park",
];

const DOMAINS: [&str; 8] = [
    "example",
    "mailbox",
    "postal",
    "inboxly",
    "letters",
    "quickmail",
    "courier",
    "webpost",
];

const TLDS: [&str; 4] = ["com", "net", "org", "io"];

impl Draw {
    fn rng(&self, salt: u64) -> Rng {
        let mut r = Rng(self.seed ^ salt.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next();
        r
    }

    /// The `call`-th entry of a walk through `list` that starts and strides
    /// where the seed says.
    fn pick(&self, list: &[&'static str; 64], salt: u64) -> &'static str {
        let mut r = self.rng(salt);
        let start = r.next();
        let stride = r.next() | 1;
        let at = start.wrapping_add(self.call.wrapping_mul(stride)) % 64;
        list.get(at as usize).copied().unwrap_or("Ada")
    }

    fn first_name(&self) -> &'static str {
        self.pick(&FIRST_NAMES, 1)
    }

    fn last_name(&self) -> &'static str {
        self.pick(&LAST_NAMES, 2)
    }

    /// Everything else draws from the seed and the call together.
    fn call_rng(&self) -> Rng {
        self.rng(self.call.wrapping_add(0x100))
    }
}

/// The value of `function(args)`; the error says which argument is wrong.
pub(crate) fn generate(function: Function, args: &[Value], draw: Draw) -> Result<Value, String> {
    let mut r = draw.call_rng();
    Ok(match function {
        Function::Uuid => {
            let (hi, lo) = (r.next(), r.next());
            // Version 4 (random), variant RFC 4122, as gofakeit makes them.
            let hi = (hi & !0xF000) | 0x4000;
            let lo = (lo & !(0b11 << 62)) | (0b10 << 62);
            Value::str(&format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                hi >> 32,
                (hi >> 16) & 0xFFFF,
                hi & 0xFFFF,
                lo >> 48,
                lo & 0xFFFF_FFFF_FFFF
            ))
        }
        Function::FirstName => Value::str(draw.first_name()),
        // Tracetest's `lastName` gives a first name (`functions.go`); a
        // last name is what every file calling it means.
        Function::LastName => Value::str(draw.last_name()),
        Function::FullName => Value::str(&format!("{} {}", draw.first_name(), draw.last_name())),
        Function::Email => {
            let domain = DOMAINS.get(r.below(DOMAINS.len() as u64) as usize);
            let tld = TLDS.get(r.below(TLDS.len() as u64) as usize);
            Value::str(&format!(
                "{}{}@{}.{}",
                draw.first_name().to_lowercase(),
                draw.last_name().to_lowercase(),
                domain.unwrap_or(&"example"),
                tld.unwrap_or(&"com")
            ))
        }
        // gofakeit's `Phone`: ten digits, no punctuation.
        Function::Phone => Value::str(&(0..10).map(|_| r.digit()).collect::<String>()),
        Function::CreditCard => Value::str(&card_number(&mut r)),
        Function::CreditCardCvv => Value::str(&(0..3).map(|_| r.digit()).collect::<String>()),
        // gofakeit's `CreditCardExp`: MM/YY, a year from 1 to 10 ahead.
        Function::CreditCardExpDate => {
            let year = Utc::from_unix_nanos(draw.now_unix_nanos).year % 100;
            Value::str(&format!(
                "{:02}/{:02}",
                1 + r.below(12),
                (year + 1 + r.below(10) as i64) % 100
            ))
        }
        Function::RandomInt => {
            let (a, b) = (int_arg(function, args, 0)?, int_arg(function, args, 1)?);
            let (lo, hi) = (a.min(b), a.max(b));
            let span = (i128::from(hi) - i128::from(lo) + 1) as u128;
            let off = (u128::from(r.next()) << 64 | u128::from(r.next())) % span;
            Value::Int((i128::from(lo) + off as i128) as i64)
        }
        Function::Date => Value::str(&format_date(args, draw, "YYYY-MM-DD")),
        // RFC 3339 without a fraction, as Go's `time.RFC3339`.
        Function::DateTime => Value::str(&format_date(args, draw, "YYYY-MM-DDThh:mm:ssZZ")),
    })
}

fn int_arg(function: Function, args: &[Value], n: usize) -> Result<i64, String> {
    let v = args.get(n);
    let int = match v {
        Some(Value::Int(i)) => Some(*i),
        Some(Value::Float(x)) if x.is_finite() => Some(x.trunc() as i64),
        Some(Value::Str(s)) => s.trim().parse().ok(),
        _ => None,
    };
    int.ok_or_else(|| {
        format!(
            "{}(): argument {} is not an integer: {}",
            function.name(),
            n + 1,
            v.map_or_else(|| "missing".to_string(), Value::to_string)
        )
    })
}

/// Sixteen digits for Visa and Mastercard, fifteen for American Express,
/// the last one Luhn's check digit, as gofakeit's `CreditCardNumber`.
fn card_number(r: &mut Rng) -> String {
    let (prefix, len) = match r.below(3) {
        0 => ("4".to_string(), 16),
        1 => (format!("5{}", 1 + r.below(5)), 16),
        _ => (if r.below(2) == 0 { "34" } else { "37" }.to_string(), 15),
    };
    let mut digits: Vec<u32> = prefix.chars().filter_map(|c| c.to_digit(10)).collect();
    while digits.len() < len - 1 {
        digits.push(r.below(10) as u32);
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| match (i % 2 == 0, d * 2) {
            (true, d2) if d2 > 9 => d2 - 9,
            (true, d2) => d2,
            (false, _) => d,
        })
        .sum();
    digits.push((10 - sum % 10) % 10);
    digits
        .iter()
        .filter_map(|&d| char::from_digit(d, 10))
        .collect()
}

/// `date`/`dateTime`: the format as Tracetest reads it, its placeholders
/// (`metakeule/fmtdate`'s `YYYY`, `MM`, `DD`, `hh`, ...) turned into Go's
/// layout, which then formats the moment, in UTC.
fn format_date(args: &[Value], draw: Draw, default: &str) -> String {
    let format = args
        .first()
        .map_or_else(|| default.to_string(), Value::to_string);
    go_format(&fmtdate_layout(&format), draw.now_unix_nanos)
}

/// fmtdate's placeholders, longest first where one begins another.
const FMTDATE: [(&str, &str); 18] = [
    ("YYYY", "2006"),
    ("YY", "06"),
    ("MMMM", "January"),
    ("MMM", "Jan"),
    ("MM", "01"),
    ("M", "1"),
    ("DDDD", "Monday"),
    ("DDD", "Mon"),
    ("DD", "02"),
    ("D", "2"),
    ("hh", "15"),
    ("h", "03"),
    ("mm", "04"),
    ("ss", "05"),
    ("pm", "PM"),
    ("ZZZZ", "-0700"),
    ("ZZZ", "MST"),
    ("ZZ", "Z07:00"),
];

fn fmtdate_layout(format: &str) -> String {
    let mut out = String::with_capacity(format.len() + 8);
    let mut rest = format;
    'scan: while let Some(c) = rest.chars().next() {
        for (from, to) in FMTDATE {
            if let Some(after) = rest.strip_prefix(from) {
                out.push_str(to);
                rest = after;
                continue 'scan;
            }
        }
        out.push(c);
        rest = rest.get(c.len_utf8()..).unwrap_or("");
    }
    out
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Go's `time.Format` for a moment in UTC: its layout chunks (`2006`,
/// `01`, `Jan`, `15`, `PM`, `Z07:00`, `.000`, ...) replaced, anything else
/// kept as written.
fn go_format(layout: &str, unix_nanos: u64) -> String {
    let t = Utc::from_unix_nanos(unix_nanos);
    let weekday = ((unix_nanos / 1_000_000_000 / 86_400 + 4) % 7) as usize;
    let month = MONTHS
        .get(t.month.saturating_sub(1) as usize)
        .unwrap_or(&"");
    let day_name = WEEKDAYS.get(weekday).unwrap_or(&"");
    let hour12 = match t.hour % 12 {
        0 => 12,
        h => h,
    };
    let lower_follows = |rest: &str| rest.starts_with(|c: char| c.is_ascii_lowercase());
    let mut out = String::with_capacity(layout.len() + 8);
    let mut rest = layout;
    while let Some(c) = rest.chars().next() {
        // (chunk length, its text)
        let chunk: Option<(usize, String)> = match c {
            'J' if rest.starts_with("January") => Some((7, month.to_string())),
            'J' if rest.starts_with("Jan") && !lower_follows(rest.get(3..).unwrap_or("")) => {
                Some((3, month.chars().take(3).collect()))
            }
            'M' if rest.starts_with("Monday") => Some((6, day_name.to_string())),
            'M' if rest.starts_with("Mon") && !lower_follows(rest.get(3..).unwrap_or("")) => {
                Some((3, day_name.chars().take(3).collect()))
            }
            'M' if rest.starts_with("MST") => Some((3, "UTC".to_string())),
            '0' => match rest.as_bytes().get(1) {
                Some(b'1') => Some((2, format!("{:02}", t.month))),
                Some(b'2') => Some((2, format!("{:02}", t.day))),
                Some(b'3') => Some((2, format!("{hour12:02}"))),
                Some(b'4') => Some((2, format!("{:02}", t.minute))),
                Some(b'5') => Some((2, format!("{:02}", t.second))),
                Some(b'6') => Some((2, format!("{:02}", t.year.rem_euclid(100)))),
                _ => None,
            },
            '1' if rest.starts_with("15") => Some((2, format!("{:02}", t.hour))),
            '1' => Some((1, t.month.to_string())),
            '2' if rest.starts_with("2006") => Some((4, format!("{:04}", t.year))),
            '2' => Some((1, t.day.to_string())),
            '_' if rest.starts_with("_2006") => Some((5, format!("_{:04}", t.year))),
            '_' if rest.starts_with("_2") => Some((2, format!("{:>2}", t.day))),
            '3' => Some((1, hour12.to_string())),
            '4' => Some((1, t.minute.to_string())),
            '5' => Some((1, t.second.to_string())),
            'P' if rest.starts_with("PM") => {
                Some((2, if t.hour >= 12 { "PM" } else { "AM" }.to_string()))
            }
            'p' if rest.starts_with("pm") => {
                Some((2, if t.hour >= 12 { "pm" } else { "am" }.to_string()))
            }
            '-' | 'Z' => {
                let zulu = c == 'Z';
                [
                    ("070000", "+000000"),
                    ("07:00:00", "+00:00:00"),
                    ("0700", "+0000"),
                    ("07:00", "+00:00"),
                    ("07", "+00"),
                ]
                .iter()
                .find(|(z, _)| rest.get(1..).is_some_and(|r| r.starts_with(z)))
                .map(|(z, utc)| (1 + z.len(), if zulu { "Z" } else { utc }.to_string()))
            }
            '.' | ',' => fraction(rest, t.nanos),
            _ => None,
        };
        match chunk {
            Some((len, text)) => {
                out.push_str(&text);
                rest = rest.get(len..).unwrap_or("");
            }
            None => {
                out.push(c);
                rest = rest.get(c.len_utf8()..).unwrap_or("");
            }
        }
    }
    out
}

/// `.000` (fixed digits) or `.999` (trailing zeros dropped, and the point
/// too on a whole second), when no digit follows the run, as in Go.
fn fraction(rest: &str, nanos: u32) -> Option<(usize, String)> {
    let bytes = rest.as_bytes();
    let digit = *bytes.get(1)?;
    if digit != b'0' && digit != b'9' {
        return None;
    }
    let run = bytes.iter().skip(1).take_while(|&&b| b == digit).count();
    if bytes.get(1 + run).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let all = format!("{nanos:09}");
    let digits = all.get(..run.min(9)).unwrap_or("");
    let sep = rest.get(..1).unwrap_or(".");
    let text = if digit == b'0' {
        format!("{sep}{digits}")
    } else {
        let trimmed = digits.trim_end_matches('0');
        if trimmed.is_empty() {
            String::new()
        } else {
            format!("{sep}{trimmed}")
        }
    };
    Some((1 + run, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-03-07T09:05:03.120Z, a Saturday.
    const AT: u64 = 1_772_874_303_120_000_000;

    #[test]
    fn go_layouts_and_fmtdate_placeholders() {
        for (format, want) in [
            ("2006-01-02", "2026-03-07"),
            ("2006-01-02T15:04:05Z07:00", "2026-03-07T09:05:03Z"),
            ("DD/MM/YYYY hh:mm", "07/03/2026 09:05"),
            ("DD/MM/YYYY", "07/03/2026"),
            ("DDDD, D MMMM YY", "Saturday, 7 March 26"),
            ("DDD MMM h:mm:sspm ZZZ", "Sat Mar 09:05:03AM UTC"),
            ("YYYY-MM-DD hh:mm:ss ZZZZ", "2026-03-07 09:05:03 +0000"),
            ("15:04:05.000", "09:05:03.120"),
            ("15:04:05.999", "09:05:03.12"),
            // fmtdate reads `M` and `h` anywhere, Go a month name only before
            // a capital or a non-letter.
            ("Month", "3ont09"),
            ("Janx Jan.", "Janx Mar."),
        ] {
            assert_eq!(
                go_format(&fmtdate_layout(format), AT),
                want,
                "format {format:?}"
            );
        }
    }

    #[test]
    fn card_numbers_pass_luhn() {
        let mut r = Rng(7);
        for _ in 0..200 {
            let n = card_number(&mut r);
            let sum: u32 = n
                .chars()
                .rev()
                .filter_map(|c| c.to_digit(10))
                .enumerate()
                .map(|(i, d)| {
                    if i % 2 == 1 {
                        (d * 2) % 9 + u32::from(d == 9) * 9
                    } else {
                        d
                    }
                })
                .sum();
            assert_eq!(sum % 10, 0, "{n}");
        }
    }
}
