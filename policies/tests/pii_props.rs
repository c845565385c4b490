//! Property tests of the PII checksums (against independent reference implementations) and of
//! redaction: redact → restore is the identity, also when the response streams in chunks.

use proptest::prelude::*;
use slmgate_policies::pii::checks::{iban_length, iban_valid, luhn_valid};
use slmgate_policies::pii::{PiiConfig, PiiDetector, PiiKind};

/// Luhn the textbook way: double every second digit from the right and add the digits of
/// the products.
fn luhn_ref(s: &str) -> bool {
    if s.len() < 2 || !s.chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
    let mut total = 0u64;
    for (i, c) in s.chars().rev().enumerate() {
        let d = c.to_digit(10).unwrap_or(0) as u64;
        let v = if i % 2 == 1 { d * 2 } else { d };
        total += v
            .to_string()
            .chars()
            .map(|c| c.to_digit(10).unwrap_or(0) as u64)
            .sum::<u64>();
    }
    total.is_multiple_of(10)
}

/// The Luhn check digit that completes `payload`.
fn luhn_check_digit(payload: &str) -> char {
    (b'0'..=b'9')
        .map(char::from)
        .find(|d| luhn_ref(&format!("{payload}{d}")))
        .unwrap_or('0')
}

/// ISO 13616 as the standard describes it: rearrange, expand letters to two digits, then
/// reduce the decimal string 9 digits at a time.
fn iban_mod97_ref(iban: &str) -> u64 {
    let compact: String = iban.chars().filter(|c| *c != ' ').collect();
    let rearranged = format!("{}{}", &compact[4..], &compact[..4]);
    let digits: String = rearranged
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                c.to_string()
            } else {
                (c as u32 - 'A' as u32 + 10).to_string()
            }
        })
        .collect();
    let mut rem = String::new();
    let mut rest = digits.as_str();
    while !rest.is_empty() {
        let take = (9 - rem.len()).min(rest.len());
        let chunk = format!("{rem}{}", &rest[..take]);
        rest = &rest[take..];
        rem = (chunk.parse::<u64>().unwrap_or(0) % 97).to_string();
    }
    rem.parse().unwrap_or(0)
}

fn iban_ref(s: &str) -> bool {
    let compact: String = s.chars().filter(|c| *c != ' ').collect();
    let b = compact.as_bytes();
    compact.len() >= 5
        && b[..2].iter().all(u8::is_ascii_uppercase)
        && b[2..4].iter().all(u8::is_ascii_digit)
        && b[4..]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        && iban_length(&compact[..2]) == Some(compact.len())
        && iban_mod97_ref(&compact) == 1
}

/// A valid IBAN for `country` with `bban`, check digits computed by the reference.
fn make_iban(country: &str, bban: &str) -> String {
    let check = 98 - iban_mod97_ref(&format!("{country}00{bban}"));
    format!("{country}{check:02}{bban}")
}

const COUNTRIES: [&str; 10] = ["DE", "GB", "FR", "NL", "NO", "IT", "ES", "CH", "PL", "MT"];

fn bban_for(country: &'static str) -> impl Strategy<Value = (String, String)> {
    let n = iban_length(country).unwrap_or(22) - 4;
    prop::collection::vec(
        prop::sample::select(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ".to_vec()),
        n,
    )
    .prop_map(move |v| (country.to_string(), v.into_iter().map(char::from).collect()))
}

fn iban_parts() -> impl Strategy<Value = (String, String)> {
    prop::sample::select(COUNTRIES.to_vec()).prop_flat_map(bban_for)
}

fn detector() -> PiiDetector {
    match PiiDetector::new(&PiiConfig::default()) {
        Ok(d) => d,
        Err(e) => panic!("{e:?}"),
    }
}

/// A plausible e-mail address.
fn email() -> impl Strategy<Value = String> {
    (
        "[a-z][a-z0-9]{0,8}(\\.[a-z0-9]{1,5})?",
        "[a-z]{1,10}",
        prop::sample::select(vec!["com", "org", "io", "de", "co.uk"]),
    )
        .prop_map(|(l, d, t)| format!("{l}@{d}.{t}"))
}

/// A Luhn-valid 16-digit Visa/Mastercard-like number, grouped by spaces, dashes or nothing.
fn card() -> impl Strategy<Value = String> {
    ("[45][0-9]{14}", prop::sample::select(vec!["", " ", "-"])).prop_map(|(payload, sep)| {
        let digits = format!("{payload}{}", luhn_check_digit(&payload));
        digits
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(sep)
    })
}

/// Arbitrary filler, including brackets and placeholder-looking text.
fn filler() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,20}",
        "[a-zA-Z .,é€\\[\\]_0-9]{0,20}",
        Just("[EMAIL_1]".to_string()),
        Just("[CREDIT_CARD_2".to_string()),
        Just("]".to_string()),
    ]
}

#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Email(String),
    Card(String),
}

fn pieces() -> impl Strategy<Value = Vec<Piece>> {
    prop::collection::vec(
        prop_oneof![
            filler().prop_map(Piece::Text),
            email().prop_map(Piece::Email),
            card().prop_map(Piece::Card),
        ],
        0..10,
    )
}

fn join(ps: &[Piece]) -> String {
    // PII is set off by spaces, as in prose.
    ps.iter()
        .map(|p| match p {
            Piece::Text(t) => t.clone(),
            Piece::Email(e) | Piece::Card(e) => format!(" {e} "),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn luhn_agrees_with_reference(s in "[0-9]{0,25}") {
        prop_assert_eq!(luhn_valid(&s), luhn_ref(&s));
    }

    #[test]
    fn luhn_accepts_completed_numbers_and_rejects_one_digit_changes(payload in "[0-9]{12,18}", pos in any::<prop::sample::Index>(), delta in 1u8..10) {
        let full = format!("{payload}{}", luhn_check_digit(&payload));
        prop_assert!(luhn_valid(&full));
        // Changing one digit always breaks Luhn.
        let i = pos.index(full.len());
        let mut b = full.into_bytes();
        b[i] = b'0' + (b[i] - b'0' + delta) % 10;
        let changed = String::from_utf8(b).unwrap_or_default();
        prop_assert!(!luhn_valid(&changed));
    }

    #[test]
    fn iban_agrees_with_reference((country, bban) in iban_parts(), check in 0u32..100, spaced in any::<bool>()) {
        let valid = make_iban(&country, &bban);
        prop_assert!(iban_valid(&valid), "{}", valid);
        let arbitrary = format!("{country}{check:02}{bban}");
        prop_assert_eq!(iban_valid(&arbitrary), iban_ref(&arbitrary));
        if spaced {
            let grouped = valid.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(" ");
            prop_assert!(iban_valid(&grouped));
        }
    }

    #[test]
    fn iban_rejects_transpositions_like_reference((country, bban) in iban_parts(), pos in any::<prop::sample::Index>()) {
        let valid = make_iban(&country, &bban);
        let i = 4 + pos.index(valid.len() - 5);
        let mut b = valid.into_bytes();
        b.swap(i, i + 1);
        let swapped = String::from_utf8(b).unwrap_or_default();
        prop_assert_eq!(iban_valid(&swapped), iban_ref(&swapped));
    }

    #[test]
    fn iban_arbitrary_strings_agree(s in "[A-Z]{2}[0-9]{2}[A-Z0-9]{10,30}") {
        prop_assert_eq!(iban_valid(&s), iban_ref(&s));
    }

    /// redact → restore gives back the original text, whatever surrounds the PII.
    #[test]
    fn redact_restore_round_trips(ps in pieces()) {
        let det = detector();
        let text = join(&ps);
        let (redacted, red) = det.redact(&text);
        prop_assert_eq!(red.restore(&redacted), text);
    }

    /// With letters-only filler, every generated e-mail and card is found and replaced.
    #[test]
    fn generated_pii_is_redacted(ps in pieces(), words in prop::collection::vec("[a-z]{1,8}", 0..10)) {
        let det = detector();
        let ps: Vec<Piece> = ps.into_iter().zip(words.iter().cycle()).map(|(p, w)| match p {
            Piece::Text(_) => Piece::Text(w.clone()),
            other => other,
        }).collect();
        let text = join(&ps);
        let (redacted, red) = det.redact(&text);
        for p in &ps {
            match p {
                Piece::Email(v) | Piece::Card(v) => prop_assert!(!redacted.contains(v.as_str()), "{} left in {}", v, redacted),
                Piece::Text(_) => {}
            }
        }
        let kinds: Vec<PiiKind> = det.detect(&text).into_iter().map(|f| f.kind).collect();
        let wanted = ps.iter().filter(|p| !matches!(p, Piece::Text(_))).count();
        prop_assert_eq!(kinds.len(), wanted);
        prop_assert_eq!(red.restore(&redacted), text);
    }

    /// Restoring a stream chunk by chunk gives the same text as restoring it whole.
    #[test]
    fn streaming_restore_matches_whole(ps in pieces(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12), model_text in filler()) {
        let det = detector();
        let (redacted, red) = det.redact(&join(&ps));
        // A response that echoes the placeholders among other text.
        let response = format!("{model_text}{redacted}{model_text}");
        let whole = red.restore(&response);
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(response.len() + 1)).filter(|i| response.is_char_boundary(*i)).collect();
        points.sort_unstable();
        points.dedup();
        let mut r = red.stream_restorer();
        let mut out = String::new();
        let mut last = 0;
        for p in points {
            out += &r.push(&response[last..p]);
            last = p;
        }
        out += &r.push(&response[last..]);
        out += &r.finish();
        prop_assert_eq!(out, whole);
    }
}
