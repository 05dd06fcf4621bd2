//! How go-yaml resolves a plain scalar, where YAML 1.2 agrees with it, and a refusal where
//! they part.

/// A plain scalar as Kubernetes' reader resolves it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Plain {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str,
    Merge,
}

/// Resolve a plain scalar the way go-yaml v2 does, where YAML 1.2 readers (go-yaml v3,
/// kustomize's kyaml) agree; `Err` says what go-yaml would make of the rest.
pub(crate) fn resolve_plain(s: &str) -> Result<Plain, &'static str> {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Plain::Null),
        "true" | "True" | "TRUE" => return Ok(Plain::Bool(true)),
        "false" | "False" | "FALSE" => return Ok(Plain::Bool(false)),
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "n" | "N" | "no" | "No" | "NO"
        | "off" | "Off" | "OFF" => {
            return Err(
                "a boolean to Kubernetes' reader (YAML 1.1) and a string to YAML 1.2 readers",
            );
        }
        ".nan" | ".NaN" | ".NAN" | ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF"
        | "-.inf" | "-.Inf" | "-.INF" => {
            return Err("a number JSON cannot carry (infinity or NaN)");
        }
        "<<" => return Ok(Plain::Merge),
        _ => {}
    }
    let first = s.as_bytes()[0];
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return Ok(Plain::Str);
    }
    // Every Kubernetes reader ends in go-yaml v2 (kustomize's kyaml writes plain scalars back
    // as they were written), so its resolution is the one to follow: `_` dropped, then Go's
    // integer syntax (`0x1F`, `0o17`, `0b101`, `0755` octal), then its float syntax.
    let plain = s.replace('_', "");
    if first != b'.' && go_parses_as_int(&plain) {
        return match go_int(&plain) {
            Some(i) => Ok(Plain::Int(i)),
            None => Err("an integer too large for 64 bits"),
        };
    }
    if is_yaml_float(&plain) {
        return match plain.parse::<f64>() {
            Ok(f) if f == 0.0 && f.is_sign_negative() => {
                Err("a negative zero, 0 or -0 to Kubernetes depending on the file: write 0")
            }
            Ok(f) if f.is_finite() => Ok(Plain::Float(f)),
            _ => Err("a number out of range: a string to Kubernetes' reader, infinity to others"),
        };
    }
    Ok(Plain::Str)
}

/// The value of a numeral [`go_parses_as_int`] accepts, when it fits an i64.
fn go_int(s: &str) -> Option<i64> {
    let (negative, digits) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(d) = digits.strip_prefix("0x").or(digits.strip_prefix("0X")) {
        (16, d)
    } else if let Some(d) = digits.strip_prefix("0o").or(digits.strip_prefix("0O")) {
        (8, d)
    } else if let Some(d) = digits.strip_prefix("0b").or(digits.strip_prefix("0B")) {
        (2, d)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    let magnitude = i128::from_str_radix(digits, radix).ok()?;
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// Go's `strconv.ParseInt(s, 0, 64)` syntax (range aside): sign, then a decimal, `0x`, `0o`,
/// `0b` or leading-zero octal numeral.
fn go_parses_as_int(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let all =
        |digits: &str, ok: fn(&u8) -> bool| !digits.is_empty() && digits.bytes().all(|b| ok(&b));
    if let Some(rest) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return all(rest, u8::is_ascii_hexdigit);
    }
    if let Some(rest) = s.strip_prefix("0o").or_else(|| s.strip_prefix("0O")) {
        return all(rest, |b| (b'0'..=b'7').contains(b));
    }
    if let Some(rest) = s.strip_prefix("0b").or_else(|| s.strip_prefix("0B")) {
        return all(rest, |b| matches!(b, b'0' | b'1'));
    }
    if let Some(rest) = s.strip_prefix('0') {
        // Go takes a leading 0 as octal; `09` is no int there (it becomes a float).
        return rest.bytes().all(|b| (b'0'..=b'7').contains(&b));
    }
    all(s, u8::is_ascii_digit)
}

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`: go-yaml's float syntax (and
/// YAML 1.2's).
fn is_yaml_float(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exponent) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e.strip_prefix(['-', '+']).unwrap_or(e))),
        None => (s, None),
    };
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => !frac.is_empty() && digits(frac),
        Some((int, frac)) => digits(int) && digits(frac),
        None => !mantissa.is_empty() && digits(mantissa),
    };
    mantissa_ok && exponent.is_none_or(|e| !e.is_empty() && digits(e))
}
