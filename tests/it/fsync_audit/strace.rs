//! Reading strace's lines (`-f -yy -x -s 1024`): calls and their ends, fd
//! paths, escaped strings, iov arrays, and the log records in them.

use std::path::{Component, Path, PathBuf};

/// How a call ended.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Ret {
    Ok(String),
    Err,
    /// `= ?`: the process went away mid-call; nothing is assumed to have happened.
    Unknown,
}

/// One line of `strace -f -o` output.
#[derive(Debug, PartialEq)]
pub(super) enum Line<'a> {
    /// `PID name(args) = ret`
    Whole {
        pid: u32,
        name: &'a str,
        args: &'a str,
        ret: Ret,
    },
    /// `PID name(args <unfinished ...>`
    Start {
        pid: u32,
        name: &'a str,
        args: &'a str,
    },
    /// `PID <... name resumed>...) = ret`
    Resumed { pid: u32, ret: Ret },
    /// Signals, exits, anything else.
    Other,
}

pub(super) fn parse_ret(s: &str) -> Ret {
    let s = s.trim();
    if s.starts_with('?') {
        Ret::Unknown
    } else if s.starts_with("-1 ") || s == "-1" {
        Ret::Err
    } else {
        Ret::Ok(s.to_string())
    }
}

/// Splits `text) = ret` at the last `)`-then-spaces-then-`= ` (strace pads
/// short calls with spaces before the `=`).
pub(super) fn split_ret(s: &str) -> Option<(&str, Ret)> {
    let mut end = s.len();
    while let Some(eq) = s[..end].rfind(" = ") {
        let before = s[..eq].trim_end();
        if let Some(args) = before.strip_suffix(')') {
            return Some((args, parse_ret(&s[eq + 3..])));
        }
        end = eq;
    }
    None
}

pub(super) fn parse_line(line: &str) -> Line<'_> {
    let line = line.trim_end();
    let Some((pid, rest)) = line.split_once(' ') else {
        return Line::Other;
    };
    let Ok(pid) = pid.trim().parse::<u32>() else {
        return Line::Other;
    };
    let rest = rest.trim_start();
    if let Some(resumed) = rest.strip_prefix("<... ") {
        return match split_ret(resumed) {
            Some((_, ret)) => Line::Resumed { pid, ret },
            None => Line::Other,
        };
    }
    let Some(open) = rest.find('(') else {
        return Line::Other;
    };
    let name = &rest[..open];
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Line::Other;
    }
    let after = &rest[open + 1..];
    if let Some(args) = after.strip_suffix("<unfinished ...>") {
        return Line::Start {
            pid,
            name,
            args: args.trim_end().trim_end_matches(',').trim_end(),
        };
    }
    match split_ret(after) {
        Some((args, ret)) => Line::Whole {
            pid,
            name,
            args,
            ret,
        },
        None => Line::Other,
    }
}

/// Splits an argument list at its top-level commas, keeping strings, `[]`,
/// `{}`, `()` and `-yy` annotations (`3</path>`, `9<TCP:[a->b]>`,
/// `0</dev/null<char 1:3>>`) whole.
pub(super) fn split_args(args: &str) -> Vec<&str> {
    let b = args.as_bytes();
    let (mut out, mut start, mut depth) = (Vec::new(), 0, 0i32);
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => i = string_end(b, i),
            b'[' | b'{' | b'(' => depth += 1,
            b']' | b'}' | b')' => depth -= 1,
            // An annotation opens right after an fd number or AT_FDCWD.
            b'<' if i > 0 && b[i - 1].is_ascii_alphanumeric() => i = annotation_end(b, i),
            b',' if depth == 0 => {
                out.push(args[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    let last = args[start..].trim();
    if !last.is_empty() {
        out.push(last);
    }
    out
}

/// The index of the quote closing the string opened at `open`.
pub(super) fn string_end(b: &[u8], open: usize) -> usize {
    let mut i = open + 1;
    while i < b.len() && b[i] != b'"' {
        i += if b[i] == b'\\' { 2 } else { 1 };
    }
    i
}

/// The index of the `>` closing the annotation opened at `open`; brackets
/// inside it (`[a->b]`) are skipped, nested annotations counted.
pub(super) fn annotation_end(b: &[u8], open: usize) -> usize {
    let (mut level, mut bracket) = (1, 0);
    let mut i = open + 1;
    while i < b.len() {
        match b[i] {
            b'[' => bracket += 1,
            b']' => bracket -= 1,
            b'<' if bracket == 0 => level += 1,
            b'>' if bracket == 0 => {
                level -= 1;
                if level == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// The path in an fd argument's annotation: `3</a/b>` gives `/a/b`.
pub(super) fn annotation(arg: &str) -> Option<&str> {
    let open = arg.find('<')?;
    arg[open + 1..].strip_suffix('>')
}

/// Decodes strace's escapes in `b` up to an unescaped `"` (if `quoted`) or
/// the end; returns the bytes and where decoding stopped (the closing quote's
/// index). `-x` prints a string holding any non-printable byte all as `\xNN`;
/// without it, non-printable bytes are `\n`-style or octal escapes.
pub(super) fn unescape(b: &[u8], quoted: bool) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' if quoted => return Some((out, i)),
            b'\\' => {
                i += 1;
                match *b.get(i)? {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'v' => out.push(0x0b),
                    b'f' => out.push(0x0c),
                    b'x' => {
                        let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                        out.push(u8::from_str_radix(hex, 16).ok()?);
                        i += 2;
                    }
                    b'0'..=b'7' => {
                        // One to three octal digits (strace pads to three
                        // when a digit follows).
                        let n = b[i..]
                            .iter()
                            .take(3)
                            .take_while(|c| (b'0'..=b'7').contains(c))
                            .count();
                        let oct = std::str::from_utf8(&b[i..i + n]).ok()?;
                        out.push(u8::from_str_radix(oct, 8).ok()?);
                        i += n - 1;
                    }
                    other => out.push(other),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    (!quoted).then_some((out, i))
}

/// A quoted string's bytes as strace prints them (a truncated string, `"ab"...`,
/// gives the bytes printed).
pub(super) fn unquote_bytes(arg: &str) -> Option<Vec<u8>> {
    let b = arg.strip_prefix('"')?.as_bytes();
    unescape(b, true).map(|(out, _)| out)
}

/// A quoted C string (file names are never truncated).
pub(super) fn unquote(arg: &str) -> Option<String> {
    unquote_bytes(arg).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Every quoted string in `arg`, decoded and joined: the data of a `write`'s
/// buffer, a `writev`'s iovs or a `sendmsg`'s `msg_iov`.
pub(super) fn strings(arg: &str) -> Vec<u8> {
    let b = arg.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'"' {
            match unescape(&b[i + 1..], true) {
                Some((s, end)) => {
                    out.extend(s);
                    i += end + 1;
                }
                None => break,
            }
        }
        i += 1;
    }
    out
}

/// A printed iovec array as (the bytes printed of each iov's base, its
/// `iov_len`); `None` if strace abbreviated the array (`...`) or printed a
/// base it could not read.
pub(super) fn iovs(arg: &str) -> Option<Vec<(Vec<u8>, u64)>> {
    let inner = arg.strip_prefix('[')?.strip_suffix(']')?;
    let mut out = Vec::new();
    for el in split_args(inner) {
        let fields = el.strip_prefix('{')?.strip_suffix('}')?;
        let (mut base, mut len) = (None, None);
        for f in split_args(fields) {
            if let Some(v) = f.strip_prefix("iov_base=") {
                base = unquote_bytes(v);
            } else if let Some(v) = f.strip_prefix("iov_len=") {
                len = v.parse().ok();
            }
        }
        out.push((base?, len?));
    }
    Some(out)
}

/// The first bytes of a record's head iov: magic, length, crc, version.
pub(super) const MAGIC: &[u8] = b"SRL1";
pub(super) const VERSION: u8 = 0x01;
pub(super) const ID_AT: usize = 13;

/// The records whose heads a write's buffers carry: (webhook id, the byte
/// offset in the write where the record ends: the next head, or the end).
pub(super) fn records_in(bufs: &[(Vec<u8>, u64)]) -> Result<Vec<(u64, u64)>, String> {
    let total: u64 = bufs.iter().map(|b| b.1).sum();
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut at = 0;
    for (bytes, len) in bufs {
        if bytes.starts_with(MAGIC) {
            if let Some(last) = out.last_mut() {
                last.1 = at;
            }
            let id = bytes
                .get(ID_AT..ID_AT + 8)
                .filter(|_| bytes[12] == VERSION)
                .ok_or_else(|| {
                    format!(
                        "a record head that does not read as version {VERSION} then a webhook id: {bytes:02x?}"
                    )
                })?;
            out.push((u64::from_le_bytes(id.try_into().unwrap()), total));
        }
        at += len;
    }
    Ok(out)
}

/// The webhook id an answer's body names: `"id":"<16 hex digits>"`.
pub(super) fn webhook_id(data: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"id\":\"";
    let at = data.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let hex = data.get(at..at + 16)?;
    if data.get(at + 16) != Some(&b'"') || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}
/// `.` and `..` resolved without touching the disk.
pub(super) fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}
