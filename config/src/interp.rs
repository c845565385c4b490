//! `${VAR}` interpolation in string values, docker-compose style.
//!
//! - `${VAR}`: the variable's value; unset = empty string (a backend whose `api_key` is
//!   empty is then disabled by `enabled: auto`).
//! - `${VAR:-default}`: `default` when the variable is unset or empty
//!   (`${VAR-default}`: only when unset).
//! - `${VAR:?message}`: an error (with `message`) when the variable is unset or empty.
//! - `$$`: a literal `$`.
//!
//! Only values are interpolated, never keys. When a whole value is one `${...}` expression
//! and the result reads as a YAML number or boolean, it becomes one (so
//! `max_retries: ${RETRIES:-2}` is a number).

/// Interpolates one string. `Err` carries a message for the config error list.
pub fn interpolate(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if !s.contains('$') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(body_start) = after.strip_prefix('{') {
            let end = body_start
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in `{s}`"))?;
            out.push_str(&expand(&body_start[..end], env)?);
            rest = &body_start[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn expand(body: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let name_end = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    let (name, op) = body.split_at(name_end);
    if !valid_name(name) {
        return Err(format!("`${{{body}}}` is not a valid variable reference"));
    }
    let value = env(name);
    let set_nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
    if op.is_empty() {
        Ok(value.unwrap_or_default())
    } else if let Some(default) = op.strip_prefix(":-") {
        Ok(if set_nonempty {
            value.unwrap_or_default()
        } else {
            default.to_string()
        })
    } else if let Some(default) = op.strip_prefix('-') {
        Ok(value.unwrap_or_else(|| default.to_string()))
    } else if let Some(msg) = op.strip_prefix(":?") {
        if set_nonempty {
            Ok(value.unwrap_or_default())
        } else if msg.is_empty() {
            Err(format!("environment variable {name} must be set"))
        } else {
            Err(format!("environment variable {name} must be set: {msg}"))
        }
    } else {
        Err(format!(
            "`${{{body}}}`: expected `${{{name}}}`, `${{{name}:-default}}` or `${{{name}:?message}}`"
        ))
    }
}

/// True when `s` is exactly one `${...}` expression.
pub fn is_single_expression(s: &str) -> bool {
    s.starts_with("${") && s.ends_with('}') && s[2..].find('}') == Some(s.len() - 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn forms() {
        let i = |s| interpolate(s, &env);
        assert_eq!(i("plain").unwrap(), "plain");
        assert_eq!(i("${SET}").unwrap(), "value");
        assert_eq!(i("a-${SET}-b").unwrap(), "a-value-b");
        assert_eq!(i("${UNSET}").unwrap(), "");
        assert_eq!(i("${UNSET:-dflt}").unwrap(), "dflt");
        assert_eq!(i("${EMPTY:-dflt}").unwrap(), "dflt");
        assert_eq!(i("${EMPTY-dflt}").unwrap(), "");
        assert_eq!(i("${UNSET-dflt}").unwrap(), "dflt");
        assert_eq!(i("${SET:-dflt}").unwrap(), "value");
        assert_eq!(i("${UNSET:-http://x:1/v1}").unwrap(), "http://x:1/v1");
        assert_eq!(i("cost $$5 and $x").unwrap(), "cost $5 and $x");
        assert!(i("${UNSET:?needed for X}")
            .unwrap_err()
            .contains("needed for X"));
        assert!(i("${oops").unwrap_err().contains("unterminated"));
        assert!(i("${1BAD}").is_err());
        assert!(i("${A:+x}").is_err());
    }

    #[test]
    fn single_expression() {
        assert!(is_single_expression("${A:-1}"));
        assert!(!is_single_expression("${A}${B}"));
        assert!(!is_single_expression("x${A}"));
    }
}
