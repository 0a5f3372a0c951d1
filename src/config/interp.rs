//! `${VAR}` and `${VAR:-default}` interpolation in relay.toml string values.
//!
//! Runs after TOML parsing, on string values only, so a variable's value can
//! never change the structure of the file (no quoting or injection issues).

/// Where a value is looked up; a function so tests need not touch the process env.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Replaces every `${VAR}` / `${VAR:-default}` in `input`. `$${` is a literal `${`.
/// Errors name the variable (never its value).
pub fn interpolate(input: &str, lookup: Lookup<'_>) -> Result<String, String> {
    if !input.contains('$') {
        return Ok(input.to_string());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after
                .find('}')
                .ok_or_else(|| "unclosed `${` (write `$${` for a literal `${`)".to_string())?;
            let expr = &after[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if !is_var_name(name) {
                return Err(format!("`${{{name}}}` is not a valid variable name"));
            }
            match (lookup(name), default) {
                (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(format!("environment variable {name} is not set")),
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
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
    fn table() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("plain", Ok("plain")),
            ("${SET}", Ok("value")),
            ("a-${SET}-b", Ok("a-value-b")),
            ("${UNSET:-fallback}", Ok("fallback")),
            ("${SET:-fallback}", Ok("value")),
            ("${EMPTY:-fallback}", Ok("fallback")),
            ("${EMPTY}", Ok("")),
            ("${UNSET:-}", Ok("")),
            ("$${SET}", Ok("${SET}")),
            ("cost $5", Ok("cost $5")),
            ("${UNSET}", Err("environment variable UNSET is not set")),
            (
                "${SET",
                Err("unclosed `${` (write `$${` for a literal `${`)"),
            ),
            ("${1BAD}", Err("`${1BAD}` is not a valid variable name")),
        ];
        for (input, want) in cases {
            let got = interpolate(input, &env);
            assert_eq!(
                got.as_deref(),
                want.map_err(|e| e.to_string()).as_deref(),
                "{input}"
            );
        }
    }
}
