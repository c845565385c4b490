//! PII detector precision and recall on a fixed list: every positive must be found as
//! exactly the expected kind and value, every negative must yield nothing.

use slmgate_policies::pii::{CustomPii, PiiConfig, PiiDetector, PiiKind};

fn detector() -> PiiDetector {
    let cfg = PiiConfig {
        // Two patterns: the detector asks one set of both first (see `PiiDetector::detect`).
        custom: vec![
            CustomPii {
                name: "employee_id".into(),
                regex: r"\bEMP-\d{6}\b".into(),
            },
            CustomPii {
                name: "ticket".into(),
                regex: r"\bTCK-[A-Z]{3}-\d{4}\b".into(),
            },
        ],
        ..PiiConfig::default()
    };
    match PiiDetector::new(&cfg) {
        Ok(d) => d,
        Err(e) => panic!("{e:?}"),
    }
}

/// (text, kind, the exact value that must be found).
/// (text, kind name, the exact value that must be found).
const POSITIVES: &[(&str, &str, &str)] = &[
    (
        "Contact me at john.doe@example.com please",
        "email",
        "john.doe@example.com",
    ),
    (
        "mailto:First_Last+tag@sub.example.co.uk.",
        "email",
        "First_Last+tag@sub.example.co.uk",
    ),
    ("(reach: a.b-c@my-domain.io)", "email", "a.b-c@my-domain.io"),
    ("Email: ANNA@EXAMPLE.ORG", "email", "ANNA@EXAMPLE.ORG"),
    ("Call +1 (555) 123-4567 today", "phone", "+1 (555) 123-4567"),
    ("UK office: +44 20 7946 0958.", "phone", "+44 20 7946 0958"),
    ("Mobile +33 6 12 34 56 78", "phone", "+33 6 12 34 56 78"),
    ("ring +4915112345678 now", "phone", "+4915112345678"),
    ("India: +91-98765-43210", "phone", "+91-98765-43210"),
    ("my number is (555) 867-5309", "phone", "(555) 867-5309"),
    ("call 212-555-0147 after 5", "phone", "212-555-0147"),
    ("phone 415.555.2671", "phone", "415.555.2671"),
    ("Tel. 020 7946 0958", "phone", "020 7946 0958"),
    ("appelez le 06 12 34 56 78", "phone", "06 12 34 56 78"),
    ("Telefon: 030 12345678", "phone", "030 12345678"),
    (
        "Card: 4111 1111 1111 1111",
        "credit_card",
        "4111 1111 1111 1111",
    ),
    (
        "pay with 5500-0000-0000-0004 ok",
        "credit_card",
        "5500-0000-0000-0004",
    ),
    ("amex 3782 822463 10005", "credit_card", "3782 822463 10005"),
    ("number 6011000990139424", "credit_card", "6011000990139424"),
    (
        "card 4111 1111 1111 1111 expires 2027",
        "credit_card",
        "4111 1111 1111 1111",
    ),
    (
        "IBAN DE89 3704 0044 0532 0130 00.",
        "iban",
        "DE89 3704 0044 0532 0130 00",
    ),
    (
        "to GB82WEST12345698765432 please",
        "iban",
        "GB82WEST12345698765432",
    ),
    (
        "FR14 2004 1010 0505 0001 3M02 606 is mine",
        "iban",
        "FR14 2004 1010 0505 0001 3M02 606",
    ),
    ("NL91ABNA0417164300", "iban", "NL91ABNA0417164300"),
    ("SSN 123-45-6789.", "ssn", "123-45-6789"),
    ("ssn: 078 05 1120", "ssn", "078 05 1120"),
    ("server at 192.168.1.10 is down", "ipv4", "192.168.1.10"),
    ("ping 8.8.8.8.", "ipv4", "8.8.8.8"),
    ("host 10.0.0.1:8080", "ipv4", "10.0.0.1"),
    (
        "addr 2001:db8::ff00:42:8329 up",
        "ipv6",
        "2001:db8::ff00:42:8329",
    ),
    (
        "full 2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "ipv6",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
    ),
    ("loopback ::1.", "ipv6", "::1"),
    (
        "link-local fe80::1ff:fe23:4567:890a",
        "ipv6",
        "fe80::1ff:fe23:4567:890a",
    ),
    (
        "mapped ::ffff:192.0.2.128 here",
        "ipv6",
        "::ffff:192.0.2.128",
    ),
    ("badge EMP-004211 lost", "employee_id", "EMP-004211"),
    ("see TCK-ABC-1234 (reopened)", "ticket", "TCK-ABC-1234"),
];

/// Texts with no PII: dates, prices, versions, timestamps, order numbers, measurements,
/// code, and digit runs that fail Luhn or mod-97.
const NEGATIVES: &[&str] = &[
    "The meeting is on 2024-03-15 at 10:30.",
    "Born 03/15/1987 in Ohio",
    "Invoice date: 15.03.2024",
    "Posted 01-02-2023 by admin",
    "Timestamp 2024-01-15T10:30:45Z",
    "log: 2024-01-15 10:30:45.123 started",
    "uptime 12:30:45",
    "Price: $1,234.56",
    "Total 1.234.567,89 EUR",
    "costs USD 1 234 567",
    "It costs $555-123-4567?",
    "Version 1.2.3 released",
    "upgrade to v2.10.4.1 now",
    "Windows build 10.0.19041.1",
    "release 1.2.3.4.5",
    "python 3.11.4",
    "Order #123456789 shipped",
    "order #555-123-4567",
    "Amazon order 113-4567890-1234567",
    "Tracking 1Z999AA10123456784",
    "random 4111 1111 1111 1112 digits",
    "id 1234567890123456",
    "0000 0000 0000 0000",
    "DE89 3704 0044 0532 0130 01",
    "XX12 3456 7890 1234 5678",
    "SSN 000-12-3456 is invalid",
    "area 666-12-3456",
    "ITIN 912-34-5678",
    "group 123-00-4567",
    "serial 123-45-0000",
    "IP 256.1.1.1 is invalid",
    "octets 01.02.03.04",
    "MAC 00:1A:2B:3C:4D:5E",
    "use std::collections::HashMap;",
    "dead::beef is not an address",
    "ratio 3:2 and 16:9",
    "image@2x.png and logo@3x.jpg",
    "user@localhost",
    "npm i react@18.2.0",
    "email me at john at example dot com",
    "call 123-456-7890",
    "score +15.5 points",
    "+100 votes",
    "ISBN 978-3-16-148410-0",
    "pi is 3.14159265358979",
    "coordinates 48.8566, 2.3522",
    "phone 555-1234",
    "the year 2024 had 366 days",
    "C++11 and C++17",
    "weights 90/10 split",
];

#[test]
fn positives_are_found_exactly() {
    let det = detector();
    let mut failures = Vec::new();
    for (text, kind, value) in POSITIVES {
        let found: Vec<(String, &str)> = det
            .detect(text)
            .into_iter()
            .map(|f| (f.kind.name().to_string(), &text[f.span]))
            .collect();
        if found != [(kind.to_string(), *value)] {
            failures.push(format!(
                "{text:?}: expected {kind} {value:?}, found {found:?}"
            ));
        }
    }
    assert!(POSITIVES.len() >= 30);
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn negatives_yield_nothing() {
    let det = detector();
    let mut failures = Vec::new();
    for text in NEGATIVES {
        let found: Vec<(PiiKind, &str)> = det
            .detect(text)
            .into_iter()
            .map(|f| (f.kind, &text[f.span]))
            .collect();
        if !found.is_empty() {
            failures.push(format!("{text:?}: found {found:?}"));
        }
    }
    assert!(NEGATIVES.len() >= 30);
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn mixed_text_finds_each_in_order() {
    let det = detector();
    let text = "From bob@example.com (tel +44 20 7946 0958) on 2024-03-15: pay DE89 3704 0044 0532 0130 00, \
                card 4111-1111-1111-1111, ssn 123-45-6789, from 10.1.2.3 / 2001:db8::1, v1.2.3, $12.50.";
    let kinds: Vec<PiiKind> = det.detect(text).into_iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        [
            PiiKind::Email,
            PiiKind::Phone,
            PiiKind::Iban,
            PiiKind::CreditCard,
            PiiKind::Ssn,
            PiiKind::Ipv4,
            PiiKind::Ipv6
        ]
    );
}

#[test]
fn redaction_placeholders_are_stable() {
    let det = detector();
    let text = "a@x.io wrote to b@y.io, then a@x.io again; card 4111 1111 1111 1111.";
    let (red, r) = det.redact(text);
    assert_eq!(
        red,
        "[EMAIL_1] wrote to [EMAIL_2], then [EMAIL_1] again; card [CREDIT_CARD_1]."
    );
    assert_eq!(r.len(), 3);
    assert_eq!(r.restore(&red), text);
    // Placeholders are shared across the texts of one request.
    let mut shared = r.clone();
    let second = det.redact_into("cc b@y.io and c@z.io", &mut shared);
    assert_eq!(second, "cc [EMAIL_2] and [EMAIL_3]");
}

#[test]
fn disabled_kinds_are_not_reported() {
    let cfg = PiiConfig {
        kinds: vec![slmgate_policies::pii::BuiltinPii::Email],
        custom: Vec::new(),
    };
    let det = match PiiDetector::new(&cfg) {
        Ok(d) => d,
        Err(e) => panic!("{e:?}"),
    };
    let kinds = det.kinds_in("x@y.com 4111 1111 1111 1111 8.8.8.8");
    assert_eq!(kinds, [PiiKind::Email]);
    assert!(!det.detects(&PiiKind::Phone));
}

#[test]
fn several_custom_patterns_in_one_text() {
    let d = detector();
    let text = "EMP-123456 filed TCK-XYZ-0001 and EMP-654321";
    let found: Vec<(String, &str)> = d
        .detect(text)
        .into_iter()
        .map(|f| (f.kind.name().to_string(), &text[f.span]))
        .collect();
    assert_eq!(
        found,
        [
            ("employee_id".to_string(), "EMP-123456"),
            ("ticket".to_string(), "TCK-XYZ-0001"),
            ("employee_id".to_string(), "EMP-654321"),
        ]
    );
    // Neither pattern: the one set search says no, nothing is reported.
    assert!(d.detect("EMP-12345 and TCK-AB-0001 are not ids").is_empty());
}
