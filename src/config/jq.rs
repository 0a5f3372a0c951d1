//! jq programs in relay.toml (`filter`, `transform`), compiled once with jaq
//! when the file is read, so `check` and `serve` refuse one that does not
//! compile, naming where in the program the error is. Running one is
//! [`JqProgram::run`]; what its outputs mean is `crate::rules`' business.
//!
//! The language is jaq's: jq's core and standard library (`map`, `select`,
//! `test`, `ascii_downcase`, `del`, `any`, …), with two changes for a relay:
//! `env` and `$ENV` do not exist (the environment holds the relay's secrets,
//! and a program's output leaves the machine), and `halt` is an error instead
//! of ending the process.

use std::fmt;
use std::sync::Arc;

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Ctx, Vars, data::JustLut};
use jaq_json::Val;

type Data = JustLut<Val>;

/// A compiled jq program and the text it came from.
#[derive(Clone)]
pub struct JqProgram {
    /// The program as written (after `${VAR}` interpolation), for `check`,
    /// `preview` and Debug.
    source: String,
    /// Compiled once; shared by every lane that runs it.
    filter: Arc<jaq_core::Filter<Data>>,
}

impl fmt::Debug for JqProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JqProgram").field(&self.source).finish()
    }
}

impl PartialEq for JqProgram {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// Why a program is refused: what jaq expected or did not know, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileError {
    /// What is wrong, e.g. `expected term` or `undefined filter \`foo/0\``.
    pub message: String,
    /// 1-based line of the offending text in the program.
    pub line: usize,
    /// 1-based column (in characters) on that line.
    pub column: usize,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "jq program does not compile: {} at line {}, column {}",
            self.message, self.line, self.column
        )
    }
}

/// One output of a run: a value, or the run-time error's message.
pub type Output = Result<Val, String>;

impl JqProgram {
    /// Parses and compiles `source`; the first error found is reported.
    pub fn compile(source: &str) -> Result<JqProgram, CompileError> {
        let arena = Arena::default();
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let loader = Loader::new(defs);
        let file = File {
            code: source,
            path: (),
        };
        let modules = loader
            .load(&arena, file)
            .map_err(|errs| load_error(source, errs))?;
        let filter = jaq_core::Compiler::default()
            .with_funs(funs())
            .compile(modules)
            .map_err(|errs| compile_error(source, errs))?;
        Ok(JqProgram {
            source: source.to_string(),
            filter: Arc::new(filter),
        })
    }

    /// The program's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Runs the program on `input`; `f` sees each output in turn and returns
    /// false to stop early (a filter needs only its first true, a transform
    /// at most two outputs). Lazy: nothing past the last output asked for is
    /// computed.
    pub fn run(&self, input: Val, mut f: impl FnMut(Output) -> bool) {
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([]));
        for out in self.filter.id.run((ctx, input)) {
            let out = out.map_err(|e| match e.get_err() {
                // `error("text")` reads as the text, like jq prints it.
                Ok(err) => match err.into_val() {
                    Val::TStr(s) => String::from_utf8_lossy(&s).into_owned(),
                    other => other.to_string(),
                },
                Err(exn) => match exn.get_halt() {
                    Ok(code) => format!("halt({code}) is not allowed in a relay rule"),
                    // Break/tail-call leaking out would be a jaq bug.
                    Err(_) => "the program stopped abnormally".to_string(),
                },
            });
            if !f(out) {
                return;
            }
        }
    }
}

/// jaq's native filters, without `env` (it would hand the relay's secrets to
/// a program whose output is sent away).
fn funs() -> impl Iterator<Item = jaq_core::native::Fun<Data>> {
    jaq_core::funs::<Data>()
        .chain(jaq_std::funs::<Data>())
        .chain(jaq_json::funs::<Data>())
        .filter(|(name, _, _)| *name != "env")
}

/// Line and column (1-based; columns in characters) of `part`, a slice of `code`.
fn position(code: &str, part: &str) -> (usize, usize) {
    let start = jaq_core::load::span(code, part).start.min(code.len());
    let before = code.get(..start).unwrap_or(code);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn at(code: &str, part: &str, message: String) -> CompileError {
    let (line, column) = position(code, part);
    CompileError {
        message,
        line,
        column,
    }
}

/// What was found where something else was expected: `end of input`, or
/// the start of the offending text.
fn found(text: &str) -> String {
    let first: String = text.chars().take(12).collect();
    match first.trim_end() {
        "" => "end of input".to_string(),
        t if text.chars().count() > 12 => format!("`{t}…`"),
        t => format!("`{t}`"),
    }
}

fn load_error(code: &str, errs: jaq_core::load::Errors<&str, ()>) -> CompileError {
    use jaq_core::load::{Error, lex, parse};
    let first = errs.into_iter().find_map(|(_, e)| match e {
        Error::Io(v) => v.into_iter().next().map(|(path, why)| {
            at(
                code,
                path,
                format!("cannot load module `{path}`: {why} (modules are not supported)"),
            )
        }),
        Error::Lex(v) => v.into_iter().next().map(|(expect, rest)| {
            let expected = match expect {
                lex::Expect::Delim(open) => format!("a closing delimiter for `{open}`"),
                lex::Expect::Digit => "a digit".into(),
                lex::Expect::Ident => "an identifier".into(),
                lex::Expect::Escape => "a string escape sequence".into(),
                lex::Expect::Unicode => "a 4-digit hexadecimal code point".into(),
                _ => "a token".into(),
            };
            at(
                code,
                rest,
                format!("expected {expected}, found {}", found(rest)),
            )
        }),
        Error::Parse(v) => v
            .into_iter()
            .next()
            .map(|(expect, rest): parse::Error<&str>| {
                at(
                    code,
                    rest,
                    format!("expected {}, found {}", expect.as_str(), found(rest)),
                )
            }),
    });
    first.unwrap_or_else(|| CompileError {
        message: "does not parse".into(),
        line: 1,
        column: 1,
    })
}

fn compile_error(code: &str, errs: jaq_core::compile::Errors<&str, ()>) -> CompileError {
    use jaq_core::compile::Undefined;
    let first = errs.into_iter().flat_map(|(_, v)| v).next();
    match first {
        Some((name, undefined)) => {
            let what = match undefined {
                Undefined::Filter(arity) if name == "env" => {
                    format!("`env/{arity}` is not available in relay rules")
                }
                Undefined::Var if name == "$ENV" => {
                    "`$ENV` is not available in relay rules".to_string()
                }
                Undefined::Filter(arity) => format!("undefined filter `{name}/{arity}`"),
                other => format!("undefined {} `{name}`", other.as_str()),
            };
            at(code, name, what)
        }
        None => CompileError {
            message: "does not compile".into(),
            line: 1,
            column: 1,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs(p: &JqProgram, input: &str) -> Vec<Output> {
        let v = jaq_json::read::parse_single(input.as_bytes()).expect("json");
        let mut out = Vec::new();
        p.run(v, |o| {
            out.push(o);
            true
        });
        out
    }

    #[test]
    fn compiled_programs_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<JqProgram>();
    }

    #[test]
    fn runs_the_standard_library() {
        let p = JqProgram::compile(r#"[.a[] | select(. > 1)] | map(. * 2) | add"#).unwrap();
        let out = outputs(&p, r#"{"a":[1,2,3]}"#);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_ref().unwrap().to_string(), "10");
        let p =
            JqProgram::compile(r#".s | test("^ab"; "i") and (ascii_downcase == "abc")"#).unwrap();
        assert_eq!(
            outputs(&p, r#"{"s":"ABC"}"#)[0]
                .as_ref()
                .unwrap()
                .to_string(),
            "true"
        );
    }

    #[test]
    fn errors_name_the_position() {
        let table: &[(&str, &str, usize, usize)] = &[
            (".a |", "expected term, found end of input", 1, 5),
            (". as", "expected pattern", 1, 5),
            ("(.a", "expected a closing delimiter for `(`", 1, 4),
            (".a | nosuch(1)", "undefined filter `nosuch/1`", 1, 6),
            (".a\n| $x", "undefined variable `$x`", 2, 3),
            ("if . then 1", "expected else or end", 1, 12),
            ("env.HOME", "`env/0` is not available", 1, 1),
            ("$ENV.HOME", "`$ENV` is not available", 1, 1),
            (".a == \"x", "expected a closing delimiter for `\"`", 1, 9),
            ("", "expected term, found end of input", 1, 1),
        ];
        for (program, message, line, column) in table {
            let e = JqProgram::compile(program).expect_err(program);
            assert!(
                e.message.contains(message),
                "{program:?}: {} does not contain {message:?}",
                e.message
            );
            assert_eq!((e.line, e.column), (*line, *column), "{program:?}: {e}");
        }
    }

    #[test]
    fn run_time_errors_are_messages_and_halt_does_not_exit() {
        let p = JqProgram::compile(r#".a.b"#).unwrap();
        let out = outputs(&p, r#"{"a":"text"}"#);
        assert!(
            matches!(&out[..], [Err(m)] if m.contains("cannot index")),
            "{out:?}"
        );
        let p = JqProgram::compile(r#"error("no total")"#).unwrap();
        assert_eq!(outputs(&p, "{}"), [Err("no total".to_string())]);
        let p = JqProgram::compile("halt").unwrap();
        assert!(matches!(&outputs(&p, "{}")[..], [Err(m)] if m.contains("halt(0)")));
        let p = JqProgram::compile(r#"halt_error"#).unwrap();
        assert!(matches!(&outputs(&p, "{}")[..], [Err(m)] if m.contains("halt(5)")));
    }

    #[test]
    fn stops_when_asked() {
        let p = JqProgram::compile("range(1; 1000000000)").unwrap();
        let mut n = 0;
        p.run(Val::Null, |_| {
            n += 1;
            n < 2
        });
        assert_eq!(n, 2);
    }
}
