//! Checksums and structural checks used by the PII detector, public so that callers (and
//! tests) can validate single values.

/// Returns true if and only if `digits` is all ASCII digits, at least 2 long, and passes the
/// Luhn (mod 10) check used by payment cards.
pub fn luhn_valid(digits: &str) -> bool {
    if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The IBAN length registered for a country code (ISO 13616 registry), if IBANs exist there.
pub fn iban_length(country: &str) -> Option<usize> {
    let n = match country {
        "AD" => 24,
        "AE" => 23,
        "AL" => 28,
        "AT" => 20,
        "AZ" => 28,
        "BA" => 20,
        "BE" => 16,
        "BG" => 22,
        "BH" => 22,
        "BI" => 27,
        "BR" => 29,
        "BY" => 28,
        "CH" => 21,
        "CR" => 22,
        "CY" => 28,
        "CZ" => 24,
        "DE" => 22,
        "DJ" => 27,
        "DK" => 18,
        "DO" => 28,
        "EE" => 20,
        "EG" => 29,
        "ES" => 24,
        "FI" => 18,
        "FK" => 18,
        "FO" => 18,
        "FR" => 27,
        "GB" => 22,
        "GE" => 22,
        "GI" => 23,
        "GL" => 18,
        "GR" => 27,
        "GT" => 28,
        "HN" => 28,
        "HR" => 21,
        "HU" => 28,
        "IE" => 22,
        "IL" => 23,
        "IQ" => 23,
        "IS" => 26,
        "IT" => 27,
        "JO" => 30,
        "KW" => 30,
        "KZ" => 20,
        "LB" => 28,
        "LC" => 32,
        "LI" => 21,
        "LT" => 20,
        "LU" => 20,
        "LV" => 21,
        "LY" => 25,
        "MC" => 27,
        "MD" => 24,
        "ME" => 22,
        "MK" => 19,
        "MN" => 20,
        "MR" => 27,
        "MT" => 31,
        "MU" => 30,
        "NI" => 28,
        "NL" => 18,
        "NO" => 15,
        "OM" => 23,
        "PK" => 24,
        "PL" => 28,
        "PS" => 29,
        "PT" => 25,
        "QA" => 29,
        "RO" => 24,
        "RS" => 22,
        "RU" => 33,
        "SA" => 24,
        "SC" => 31,
        "SD" => 18,
        "SE" => 24,
        "SI" => 19,
        "SK" => 24,
        "SM" => 27,
        "SO" => 23,
        "ST" => 25,
        "SV" => 28,
        "TL" => 23,
        "TN" => 24,
        "TR" => 26,
        "UA" => 29,
        "VA" => 22,
        "VG" => 24,
        "XK" => 20,
        "YE" => 30,
        _ => return None,
    };
    Some(n)
}

/// Returns true if and only if `s` (spaces ignored) is an IBAN: an upper-case country code
/// with a registered length, two check digits, an upper-case alphanumeric BBAN, and the
/// ISO 7064 mod-97 remainder 1.
pub fn iban_valid(s: &str) -> bool {
    let compact: Vec<u8> = s.bytes().filter(|b| *b != b' ').collect();
    if compact.len() < 5
        || !compact[..2].iter().all(u8::is_ascii_uppercase)
        || !compact[2..4].iter().all(u8::is_ascii_digit)
        || !compact[4..]
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return false;
    }
    let country = std::str::from_utf8(&compact[..2]).unwrap_or("");
    if iban_length(country) != Some(compact.len()) {
        return false;
    }
    iban_mod97(&compact) == 1
}

/// The mod-97 remainder of an IBAN's rearranged numeric form (first four characters moved to
/// the end, letters as 10–35). `compact` must be upper-case alphanumeric.
pub(crate) fn iban_mod97(compact: &[u8]) -> u32 {
    let (head, tail) = compact.split_at(4.min(compact.len()));
    let mut rem: u32 = 0;
    for &b in tail.iter().chain(head) {
        if b.is_ascii_digit() {
            rem = (rem * 10 + u32::from(b - b'0')) % 97;
        } else {
            let v = u32::from(b.to_ascii_uppercase().wrapping_sub(b'A')) + 10;
            rem = (rem * 100 + v) % 97;
        }
    }
    rem
}

/// Returns true if and only if area/group/serial can form an issued-format US SSN: area not
/// 000, 666 or 900–999, group not 00, serial not 0000. Inputs must be 3, 2 and 4 ASCII digits.
pub fn ssn_parts_valid(area: &str, group: &str, serial: &str) -> bool {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    digits(area, 3)
        && digits(group, 2)
        && digits(serial, 4)
        && area != "000"
        && area != "666"
        && !area.starts_with('9')
        && group != "00"
        && serial != "0000"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn() {
        assert!(luhn_valid("4111111111111111"));
        assert!(luhn_valid("79927398713"));
        assert!(!luhn_valid("4111111111111112"));
        assert!(!luhn_valid("41111a1111111111"));
        assert!(!luhn_valid(""));
    }

    #[test]
    fn iban() {
        assert!(iban_valid("DE89 3704 0044 0532 0130 00"));
        assert!(iban_valid("GB82WEST12345698765432"));
        assert!(iban_valid("NO9386011117947"));
        assert!(!iban_valid("DE89 3704 0044 0532 0130 01"));
        assert!(!iban_valid("XX89370400440532013000"));
        assert!(!iban_valid("DE8937040044053201300"));
        assert!(!iban_valid("de89370400440532013000"));
    }

    #[test]
    fn ssn() {
        assert!(ssn_parts_valid("123", "45", "6789"));
        assert!(!ssn_parts_valid("000", "45", "6789"));
        assert!(!ssn_parts_valid("666", "45", "6789"));
        assert!(!ssn_parts_valid("901", "45", "6789"));
        assert!(!ssn_parts_valid("123", "00", "6789"));
        assert!(!ssn_parts_valid("123", "45", "0000"));
    }
}
