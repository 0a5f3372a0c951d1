//! A `postgres://` URL as the PostgreSQL store reads it: libpq's `sslmode`
//! and `sslrootcert`, then tokio-postgres for the rest. Here, in config,
//! so that `check` and `serve` refuse a bad URL with every other problem;
//! the TLS connector built from it is the store's (`queue/postgres/tls.rs`).
//!
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `allow`, `prefer` (the default) | when the server offers it | not checked; checked against `sslrootcert` when given |
//! | `require` | always | not checked; checked against `sslrootcert` when given (libpq: as `verify-ca`) |
//! | `verify-ca` | always | signed by `sslrootcert`, or by the system's roots |
//! | `verify-full` | always | as `verify-ca`, and issued for the host in the URL |
//!
//! `sslrootcert` is a PEM file of CA certificates, or `system` (the system's
//! roots; as in libpq 16 it makes `verify-full` the default and refuses a
//! weaker mode). Where libpq would read `~/.postgresql/root.crt`, `verify-*`
//! without `sslrootcert` uses the system's roots. Client certificates
//! (`sslcert`, `sslkey`) are refused: not supported. tokio-postgres reads
//! every other parameter; both keys are taken out of the URL before it does.

use std::str::FromStr;

use percent_encoding::percent_decode_str;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres::config::SslMode;

/// What the URL asks of the server's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Encrypt, but take any certificate (`prefer`, `require`).
    Nothing,
    /// Signed by a trusted root, for whichever name (`verify-ca`).
    Chain,
    /// Signed by a trusted root and issued for the host (`verify-full`).
    Full,
}

/// Where trusted roots come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Roots {
    System,
    File(String),
}

/// How to connect: tokio-postgres's config (with `ssl_mode` set) and what
/// the TLS side checks.
#[derive(Clone)]
pub struct Target {
    pub pg: tokio_postgres::Config,
    pub verify: Verify,
    pub roots: Roots,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config holds the password: not shown.
        f.debug_struct("Target")
            .field("ssl_mode", &self.pg.get_ssl_mode())
            .field("verify", &self.verify)
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

const SSLMODES: &str = "disable, allow, prefer, require, verify-ca or verify-full";

/// Reads a `postgres://` URL. An error never repeats the URL or a value
/// from it other than `sslrootcert`'s path.
pub fn parse(raw: &str) -> Result<Target, String> {
    let (base, query) = match raw.split_once('?') {
        Some((b, q)) => (b, q),
        None => (raw, ""),
    };
    let mut rest = Vec::new();
    let (mut mode, mut rootcert) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode_str(k).decode_utf8_lossy();
        let value = || percent_decode_str(v).decode_utf8_lossy().into_owned();
        match &*key {
            "sslmode" => mode = Some(value()),
            "sslrootcert" => rootcert = Some(value()),
            "sslcert" | "sslkey" | "sslpassword" => {
                return Err(format!(
                    "`{key}`: client certificates are not supported (sslmode and sslrootcert are)"
                ));
            }
            "sslcrl" | "sslcrldir" => {
                return Err(format!("`{key}`: not supported"));
            }
            // Kept as written: tokio-postgres decodes it (a `+` stays a `+`).
            _ => rest.push(pair),
        }
    }
    let stripped = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let mut pg = tokio_postgres::Config::from_str(&stripped)
        .map_err(|_| "not a valid PostgreSQL URL".to_string())?;
    let system = rootcert.as_deref() == Some("system");
    let mode = match (mode.as_deref(), system) {
        (None, true) => "verify-full",
        (None, false) => "prefer",
        (Some(m), true) if m != "verify-full" => {
            return Err(format!(
                "sslrootcert=system needs sslmode=verify-full (a weaker sslmode, `{m}`, would not use the roots)"
            ));
        }
        (Some(m), _) => m,
    };
    let roots = match rootcert {
        Some(path) if path != "system" => Roots::File(path),
        _ => Roots::System,
    };
    let given = matches!(roots, Roots::File(_));
    let (ssl, verify) = match mode {
        "disable" => (SslMode::Disable, Verify::Nothing),
        // As libpq: a root file, when given, is checked in every TLS mode.
        "allow" | "prefer" if given => (SslMode::Prefer, Verify::Chain),
        "allow" | "prefer" => (SslMode::Prefer, Verify::Nothing),
        "require" if given => (SslMode::Require, Verify::Chain),
        "require" => (SslMode::Require, Verify::Nothing),
        "verify-ca" => (SslMode::Require, Verify::Chain),
        "verify-full" => (SslMode::Require, Verify::Full),
        _ => return Err(format!("sslmode must be one of {SSLMODES}")),
    };
    pg.ssl_mode(ssl);
    Ok(Target { pg, verify, roots })
}

impl Target {
    /// The roots the certificate is checked against: the `sslrootcert` file
    /// (which must hold a CA certificate), or the system's.
    pub fn load_roots(&self) -> Result<RootCertStore, String> {
        let mut store = RootCertStore::empty();
        match &self.roots {
            Roots::File(path) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("sslrootcert {path}: {e}"))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("sslrootcert {path}: {e}"))?;
                let (added, _) = store.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(format!("sslrootcert {path}: holds no CA certificate"));
                }
            }
            Roots::System => {
                let found = rustls_native_certs::load_native_certs();
                store.add_parsable_certificates(found.certs);
                if store.is_empty() {
                    return Err(
                        "no trusted root certificates on this system (install ca-certificates, \
                         or name the server's CA with sslrootcert=/path/to/ca.pem)"
                            .into(),
                    );
                }
            }
        }
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> Target {
        parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn sslmode_as_libpq_reads_it() {
        let t = ok("postgres://u:pw@h/db");
        assert_eq!(
            (t.pg.get_ssl_mode(), t.verify),
            (SslMode::Prefer, Verify::Nothing)
        );
        let t = ok("postgres://u:pw@h/db?sslmode=disable");
        assert_eq!(t.pg.get_ssl_mode(), SslMode::Disable);
        let t = ok("postgres://u:pw@h/db?sslmode=require");
        assert_eq!(
            (t.pg.get_ssl_mode(), t.verify),
            (SslMode::Require, Verify::Nothing)
        );
        let t = ok("postgres://h/db?sslmode=require&sslrootcert=/etc/ca.pem");
        assert_eq!(
            (t.verify, t.roots.clone()),
            (Verify::Chain, Roots::File("/etc/ca.pem".into()))
        );
        let t = ok("postgres://h/db?sslmode=verify-ca");
        assert_eq!(
            (t.pg.get_ssl_mode(), t.verify, t.roots),
            (SslMode::Require, Verify::Chain, Roots::System)
        );
        let t = ok("postgres://h/db?sslmode=verify-full&sslrootcert=%2Fa%20b%2Fca.pem");
        assert_eq!(
            (t.verify, t.roots),
            (Verify::Full, Roots::File("/a b/ca.pem".into()))
        );
        let t = ok("postgres://h/db?sslrootcert=system");
        assert_eq!(
            (t.pg.get_ssl_mode(), t.verify),
            (SslMode::Require, Verify::Full)
        );
    }

    #[test]
    fn the_other_parameters_reach_tokio_postgres_as_written() {
        let t = ok(
            "postgres://u@h/db?sslmode=require&options=-c%20search_path%3Dx+y&application_name=a",
        );
        assert_eq!(t.pg.get_options(), Some("-c search_path=x+y"));
        assert_eq!(t.pg.get_application_name(), Some("a"));
        assert_eq!(t.pg.get_password(), None);
    }

    #[test]
    fn refusals_name_the_key_and_never_the_password() {
        for (url, want) in [
            (
                "postgres://u:hunter2@h/db?sslmode=sometimes",
                "sslmode must be one of",
            ),
            (
                "postgres://u:hunter2@h/db?sslmode=require&sslrootcert=system",
                "sslrootcert=system needs sslmode=verify-full",
            ),
            (
                "postgres://u:hunter2@h/db?sslcert=/c.pem&sslkey=/k.pem",
                "`sslcert`: client certificates",
            ),
            (
                "postgres://u:hunter2@h/db?sslcrl=/x",
                "`sslcrl`: not supported",
            ),
            (
                "postgres://u:hunter2@h/db?bogus=1",
                "not a valid PostgreSQL URL",
            ),
        ] {
            let e = parse(url).expect_err(url);
            assert!(e.starts_with(want), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        assert!(!format!("{:?}", ok("postgres://u:hunter2@h/db")).contains("hunter2"));
    }
}
