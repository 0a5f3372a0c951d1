//! A small typed reader over a TOML table that records every problem instead of
//! stopping at the first, and reports keys it was never asked for as unknown.

use std::cell::RefCell;
use std::collections::BTreeSet;

use toml::{Table, Value};

use super::interp::{Lookup, interpolate};

/// One thing wrong with relay.toml: the dotted key and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path, e.g. `destinations.warehouse.url`.
    pub key: String,
    /// What is wrong; never contains a secret's value.
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// Collects problems across the whole file.
#[derive(Default)]
pub struct Problems(RefCell<Vec<Problem>>);

impl Problems {
    pub fn push(&self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.borrow_mut().push(Problem {
            key: key.into(),
            reason: reason.into(),
        });
    }
    pub fn into_vec(self) -> Vec<Problem> {
        self.0.into_inner()
    }
}

/// Reads typed values out of one table at `path`.
pub struct Reader<'a> {
    path: String,
    table: &'a Table,
    seen: RefCell<BTreeSet<&'a str>>,
    problems: &'a Problems,
    env: Lookup<'a>,
}

impl<'a> Reader<'a> {
    pub fn new(path: &str, table: &'a Table, problems: &'a Problems, env: Lookup<'a>) -> Self {
        Reader {
            path: path.to_string(),
            table,
            seen: RefCell::new(BTreeSet::new()),
            problems,
            env,
        }
    }

    pub fn key(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    /// Whether the key is present (does not mark it as read).
    pub fn has(&self, name: &str) -> bool {
        self.table.contains_key(name)
    }

    /// Marks a key as read without reading it (one reported otherwise).
    pub fn mark_read(&self, name: &str) {
        let _ = self.get(name);
    }

    pub fn problem(&self, name: &str, reason: impl Into<String>) {
        self.problems.push(self.key(name), reason);
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        let (k, v) = self.table.get_key_value(name)?;
        self.seen.borrow_mut().insert(k.as_str());
        Some(v)
    }

    /// A string, after `${VAR}` interpolation. A failed interpolation's problem names
    /// the variable, never a value, so a secret's value stays out of messages.
    pub fn string(&self, name: &str) -> Option<String> {
        let v = self.get(name)?;
        self.interp_value(&self.key(name), v)
    }

    fn interp_value(&self, key: &str, v: &Value) -> Option<String> {
        match v {
            Value::String(s) => match interpolate(s, self.env) {
                Ok(s) => Some(s),
                Err(e) => {
                    self.problems.push(key, e);
                    None
                }
            },
            other => {
                self.problems.push(
                    key,
                    format!("expected a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// A required string.
    pub fn required_string(&self, name: &str) -> Option<String> {
        if self.table.contains_key(name) {
            self.string(name)
        } else {
            self.problem(name, "is required");
            None
        }
    }

    /// Parses a string with `parse`; the error is reported under the key. The string
    /// may be a secret (a token, a password in a URL), so `parse`'s error must never
    /// echo the value it was given.
    pub fn parsed<T>(&self, name: &str, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        let s = self.string(name)?;
        match parse(&s) {
            Ok(v) => Some(v),
            Err(e) => {
                self.problem(name, e);
                None
            }
        }
    }

    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.get(name)? {
            Value::Boolean(b) => Some(*b),
            other => {
                self.problem(
                    name,
                    format!("expected true or false, found {}", other.type_str()),
                );
                None
            }
        }
    }

    pub fn integer(&self, name: &str, min: i64, max: i64) -> Option<i64> {
        match self.get(name)? {
            Value::Integer(i) if (min..=max).contains(i) => Some(*i),
            Value::Integer(i) => {
                self.problem(name, format!("{i} is out of range ({min} to {max})"));
                None
            }
            other => {
                self.problem(
                    name,
                    format!("expected an integer, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// An array of strings, each interpolated.
    pub fn strings(&self, name: &str) -> Option<Vec<String>> {
        match self.get(name)? {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, v) in items.iter().enumerate() {
                    match self.interp_value(&format!("{}[{i}]", self.key(name)), v) {
                        Some(s) => out.push(s),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }
            other => {
                self.problem(
                    name,
                    format!("expected an array of strings, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// A table of string values (e.g. `headers`), each interpolated, in file order.
    /// An entry that cannot be read is left out, its problem recorded, so the caller's
    /// own checks still run on the others (one run reports every problem).
    pub fn string_map(&self, name: &str) -> Option<Vec<(String, String)>> {
        match self.get(name)? {
            Value::Table(t) => {
                let mut out = Vec::with_capacity(t.len());
                for (k, v) in t {
                    if let Some(s) = self.interp_value(&format!("{}.{k}", self.key(name)), v) {
                        out.push((k.clone(), s));
                    }
                }
                Some(out)
            }
            other => {
                self.problem(
                    name,
                    format!("expected a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// A sub-table without marking it read or reporting a wrong type.
    pub fn peek_table(&self, name: &str) -> Option<&'a Table> {
        self.table.get(name).and_then(Value::as_table)
    }

    /// A sub-table, to read with its own reader.
    pub fn table(&self, name: &str) -> Option<&'a Table> {
        match self.get(name)? {
            Value::Table(t) => Some(t),
            other => {
                self.problem(
                    name,
                    format!("expected a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    pub fn child(&self, name: &str, table: &'a Table) -> Reader<'a> {
        Reader::new(&self.key(name), table, self.problems, self.env)
    }

    /// Reports every key of the table that no accessor asked for.
    pub fn finish(self) {
        let seen = self.seen.borrow();
        for k in self.table.keys() {
            if !seen.contains(k.as_str()) {
                self.problems.push(self.key(k), "unknown key");
            }
        }
    }
}
