//! TLS to the PostgreSQL ledger, asked for the way libpq asks for it: in
//! the URL, `sslmode` and `sslrootcert`
//! (`postgres://ordersync@db.internal/ordersync?sslmode=verify-full&sslrootcert=/etc/ordersync/db-ca.pem`).
//!
//! | `sslmode` | encrypted | the server's certificate |
//! |---|---|---|
//! | `disable` | never | not asked for |
//! | `prefer` (the default, as libpq's) | when the server offers TLS | not checked |
//! | `require` | always | not checked, unless `sslrootcert` is given: then as `verify-ca` (libpq does the same) |
//! | `verify-ca` | always | signed by a CA of `sslrootcert` |
//! | `verify-full` | always | signed by a CA of `sslrootcert`, and made out to the URL's host |
//!
//! `sslrootcert` is an absolute path to a PEM file of the CAs to trust, or
//! `system` for the machine's own store. Client certificates (`sslcert`,
//! `sslkey`) are not supported: the password authenticates the node.
//!
//! The URL is checked once, at config time ([`Tls::split`], which never
//! repeats the URL); the CA file is read at each connect, so a renewed CA is
//! taken at the next reconnect.

use std::path::PathBuf;
use std::sync::Arc;

use postgres::config::SslMode;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error as TlsError, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// What the URL asks of TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Where the CAs to trust come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Roots {
    File(PathBuf),
    System,
}

/// A ledger URL's TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tls {
    pub(crate) mode: Mode,
    pub(crate) roots: Option<Roots>,
}

/// The URL parameters read here; tokio-postgres never sees them (it knows
/// no `verify-*` and no `sslrootcert`).
const OURS: [&str; 2] = ["sslmode", "sslrootcert"];
/// libpq's other TLS parameters: refused by name rather than ignored.
const UNSUPPORTED: [&str; 8] = [
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "sslcompression",
    "requiressl",
];

impl Tls {
    /// Takes `sslmode` and `sslrootcert` out of `url`: the URL for the
    /// client and the settings. The error says which parameter is wrong and
    /// how, never the URL or any other part of it.
    pub(crate) fn split(url: &str) -> Result<(String, Tls), String> {
        let mut parsed =
            reqwest::Url::parse(url.trim()).map_err(|e| format!("not a valid URL ({e})"))?;
        let mut mode = None;
        let mut roots = None;
        let mut rest = Vec::new();
        for (key, value) in parsed.query_pairs() {
            match key.as_ref() {
                "sslmode" => {
                    mode = Some(match value.as_ref() {
                        "disable" => Mode::Disable,
                        "prefer" => Mode::Prefer,
                        "require" => Mode::Require,
                        "verify-ca" => Mode::VerifyCa,
                        "verify-full" => Mode::VerifyFull,
                        "allow" => {
                            return Err("sslmode=allow is not supported (it tries without TLS first); use prefer, require or verify-full".into());
                        }
                        _ => {
                            return Err(
                                "sslmode must be one of disable, prefer, require, verify-ca, verify-full"
                                    .into(),
                            );
                        }
                    })
                }
                "sslrootcert" => {
                    roots = Some(if value == "system" {
                        Roots::System
                    } else {
                        let path = PathBuf::from(value.as_ref());
                        if !path.is_absolute() {
                            return Err(format!(
                                "sslrootcert must be an absolute path (or \"system\"), not {:?}",
                                value.as_ref()
                            ));
                        }
                        Roots::File(path)
                    })
                }
                k if UNSUPPORTED.contains(&k) => {
                    return Err(format!(
                        "{k} is not supported (no client certificates; the password authenticates the node)"
                    ));
                }
                _ => rest.push((key.into_owned(), value.into_owned())),
            }
        }
        let tls = Tls {
            mode: mode.unwrap_or(Mode::Prefer),
            roots,
        };
        if matches!(tls.mode, Mode::VerifyCa | Mode::VerifyFull) && tls.roots.is_none() {
            return Err(
                "sslmode=verify-ca and verify-full need sslrootcert (the CA's PEM file, or \"system\")"
                    .into(),
            );
        }
        if !parsed
            .query_pairs()
            .any(|(k, _)| OURS.contains(&k.as_ref()))
        {
            return Ok((url.trim().to_string(), tls));
        }
        parsed.set_query(None);
        if !rest.is_empty() {
            parsed.query_pairs_mut().extend_pairs(rest);
        }
        Ok((parsed.to_string(), tls))
    }

    /// The mode tokio-postgres negotiates with.
    pub(crate) fn ssl_mode(&self) -> SslMode {
        match self.mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }

    /// Whether the server's certificate goes unchecked although the
    /// connection must be encrypted: worth a warning.
    pub(crate) fn unverified_require(&self) -> bool {
        self.mode == Mode::Require && self.roots.is_none()
    }

    /// How a session opened with these settings is protected, for people:
    /// `encrypted` is the server's word on that session.
    pub(crate) fn describe(&self, encrypted: bool) -> &'static str {
        match (encrypted, self.mode, &self.roots) {
            (false, _, _) => "no TLS",
            (true, Mode::VerifyFull, _) => "TLS, verify-full",
            (true, Mode::VerifyCa | Mode::Require, Some(_)) => "TLS, verify-ca",
            (true, _, _) => "TLS, certificate not checked",
        }
    }

    /// The connector for these settings; reads the CA file (or store) now.
    /// The error names the file and what is wrong with it.
    pub(crate) fn connector(&self) -> Result<MakeRustlsConnect, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match (&self.roots, self.mode) {
            (_, Mode::Disable | Mode::Prefer) | (None, _) => Arc::new(Lenient {
                chain: None,
                provider: provider.clone(),
            }),
            (Some(roots), mode) => {
                let store = Arc::new(load_roots(roots)?);
                let webpki = WebPkiServerVerifier::builder_with_provider(store, provider.clone())
                    .build()
                    .map_err(|e| format!("sslrootcert: cannot use its certificates ({e})"))?;
                if mode == Mode::VerifyFull {
                    webpki
                } else {
                    Arc::new(Lenient {
                        chain: Some(webpki),
                        provider: provider.clone(),
                    })
                }
            }
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }
}

/// `check-config`, also offline: the URL's TLS settings, with the CA file
/// read and parsed as a connect would, for people.
pub(crate) fn check(url: &str) -> Result<String, String> {
    let (_, tls) = Tls::split(url)?;
    tls.connector()?;
    let mode = match tls.mode {
        Mode::Disable => "disable",
        Mode::Prefer => "prefer",
        Mode::Require => "require",
        Mode::VerifyCa => "verify-ca",
        Mode::VerifyFull => "verify-full",
    };
    Ok(match &tls.roots {
        None if tls.mode == Mode::Disable => "sslmode=disable: no TLS".to_string(),
        None => format!("sslmode={mode}: encrypted, the server's certificate not checked"),
        Some(Roots::System) => {
            format!("sslmode={mode}: certificate checked against the machine's CA store")
        }
        Some(Roots::File(path)) => format!(
            "sslmode={mode}: certificate checked against {} (read)",
            path.display()
        ),
    })
}

fn load_roots(roots: &Roots) -> Result<rustls::RootCertStore, String> {
    let mut store = rustls::RootCertStore::empty();
    match roots {
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                return Err(format!(
                    "sslrootcert=system: the machine's CA store has no usable certificate{why}"
                ));
            }
        }
        Roots::File(path) => {
            let shown = path.display();
            // A CA bundle is kilobytes (the whole Mozilla store is about
            // 250 KB); a path to something endless (`/dev/zero`) must not
            // eat the memory.
            const MOST: u64 = 16 << 20;
            let mut bytes = Vec::new();
            std::fs::File::open(path)
                .and_then(|f| {
                    std::io::Read::read_to_end(&mut std::io::Read::take(f, MOST + 1), &mut bytes)
                })
                .map_err(|e| format!("sslrootcert: cannot read {shown} ({e})"))?;
            if bytes.len() as u64 > MOST {
                return Err(format!(
                    "sslrootcert: {shown} is larger than 16 MiB: not a CA file"
                ));
            }
            let mut found = 0;
            for cert in CertificateDer::pem_slice_iter(&bytes) {
                let cert =
                    cert.map_err(|e| format!("sslrootcert: {shown} is not a PEM file ({e:?})"))?;
                store.add(cert).map_err(|e| {
                    format!("sslrootcert: a certificate in {shown} is unusable ({e})")
                })?;
                found += 1;
            }
            if found == 0 {
                return Err(format!(
                    "sslrootcert: {shown} holds no certificate (\"-----BEGIN CERTIFICATE-----\")"
                ));
            }
        }
    }
    Ok(store)
}

/// `prefer`, and `require` without `sslrootcert` (`chain: None`): the
/// server's certificate is taken as it comes (libpq does the same).
/// `verify-ca` (`chain: Some`): the chain must lead to a trusted CA,
/// whatever name the certificate is made out to; rustls checks the chain
/// before the name, so a name error means the chain was good. Either way the
/// handshake's signatures are checked against the certificate.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_keeps_what_is_not_ours_and_loses_what_is() {
        let (url, tls) = Tls::split(
            "postgres://u@db.internal:5432/ledger?sslmode=verify-full&application_name=x&sslrootcert=/etc/ca.pem",
        )
        .unwrap();
        assert_eq!(
            url,
            "postgres://u@db.internal:5432/ledger?application_name=x"
        );
        assert_eq!(tls.mode, Mode::VerifyFull);
        assert_eq!(tls.roots, Some(Roots::File("/etc/ca.pem".into())));
        assert_eq!(tls.ssl_mode(), SslMode::Require);

        let (url, tls) = Tls::split("postgres://u@h/d").unwrap();
        assert_eq!(url, "postgres://u@h/d");
        assert_eq!((tls.mode, &tls.roots), (Mode::Prefer, &None));
        assert_eq!(tls.ssl_mode(), SslMode::Prefer);

        let (url, tls) = Tls::split("postgres://u@h/d?sslmode=require").unwrap();
        assert_eq!(url, "postgres://u@h/d");
        assert!(tls.unverified_require());
        let (_, tls) = Tls::split("postgres://u@h/d?sslmode=require&sslrootcert=system").unwrap();
        assert!(!tls.unverified_require());
        assert_eq!(tls.roots, Some(Roots::System));
        let (_, tls) = Tls::split("postgres://u@h/d?sslmode=disable").unwrap();
        assert_eq!(tls.ssl_mode(), SslMode::Disable);
    }

    #[test]
    fn a_wrong_parameter_is_named_and_the_url_is_not_repeated() {
        for (url, named) in [
            (
                "postgres://u@secret-host/d?sslmode=verify",
                "sslmode must be one of",
            ),
            ("postgres://u@secret-host/d?sslmode=allow", "sslmode=allow"),
            (
                "postgres://u@secret-host/d?sslmode=verify-full",
                "need sslrootcert",
            ),
            (
                "postgres://u@secret-host/d?sslmode=verify-ca",
                "need sslrootcert",
            ),
            (
                "postgres://u@secret-host/d?sslrootcert=ca.pem",
                "absolute path",
            ),
            (
                "postgres://u@secret-host/d?sslcert=/c.pem",
                "sslcert is not supported",
            ),
            (
                "postgres://u@secret-host/d?sslkey=/k.pem",
                "sslkey is not supported",
            ),
        ] {
            let e = Tls::split(url).unwrap_err();
            assert!(e.contains(named), "{url}: {e}");
            assert!(
                !e.contains("secret-host"),
                "{url}: the URL was repeated: {e}"
            );
        }
    }

    #[test]
    fn a_ca_file_that_is_missing_empty_or_not_pem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let endless = std::path::PathBuf::from("/dev/zero");
        for (path, said) in [
            (&endless, "larger than 16 MiB"),
            (&missing, "cannot read"),
            (&empty, "holds no certificate"),
            (&junk, "is not a PEM file"),
            (&garbage, "is unusable"),
        ] {
            let tls = Tls {
                mode: Mode::VerifyFull,
                roots: Some(Roots::File(path.clone())),
            };
            let Err(e) = tls.connector() else {
                panic!("{} was taken", path.display())
            };
            assert!(
                e.contains(said) && e.contains(&path.display().to_string()),
                "{e}"
            );
            let url = format!(
                "postgres://u@h/d?sslmode=verify-full&sslrootcert={}",
                path.display()
            );
            assert_eq!(check(&url).unwrap_err(), e);
        }
        assert_eq!(
            check("postgres://u@h/d").unwrap(),
            "sslmode=prefer: encrypted, the server's certificate not checked"
        );
    }

    /// `system` reads the machine's store (Debian's ca-certificates, which
    /// CI installs).
    #[test]
    fn the_systems_store_is_read() {
        let tls = Tls {
            mode: Mode::VerifyFull,
            roots: Some(Roots::System),
        };
        assert!(tls.connector().is_ok());
        let tls = Tls {
            mode: Mode::Require,
            roots: None,
        };
        assert!(tls.connector().is_ok());
    }
}

/// Against the tests' real server, which speaks TLS with a certificate
/// made out to `localhost` (not `127.0.0.1`) and signed by the cluster's
/// own CA (`tests/postgres/cluster.sh`).
#[cfg(test)]
mod server {
    use super::super::connect_client;
    use super::super::testing::TestDb;

    /// `db.url` (`postgres://ordersync@127.0.0.1:PORT/t_N`) with `host` and
    /// the query `query`.
    fn url(db: &TestDb, host: &str, query: &str) -> String {
        let url = db.url.replace("@127.0.0.1:", &format!("@{host}:"));
        if query.is_empty() {
            url
        } else {
            format!("{url}?{query}")
        }
    }

    /// Whether the connection `url` opens is encrypted, as the server sees it.
    fn encrypted(db: &TestDb, url: &str) -> Result<bool, String> {
        let (mut client, _) =
            connect_client(url, Some(&db.password), false).map_err(|e| format!("{e:#}"))?;
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .map_err(|e| e.to_string())?;
        Ok(row.get(0))
    }

    fn refused(db: &TestDb, url: &str) -> String {
        let e = encrypted(db, url).expect_err(url);
        assert!(
            !e.contains(db.password.expose()),
            "the password leaked: {e}"
        );
        assert!(
            e.contains("cannot connect to the PostgreSQL ledger at"),
            "{e}"
        );
        e
    }

    #[test]
    fn each_sslmode_does_what_libpq_does() {
        let db = TestDb::new();
        db.store(); // migrated, so connect_client(.., false) takes it
        let ca = db.ca_file.display().to_string();
        let other = db.other_ca_file.display().to_string();

        // Not asked for: libpq's default, `prefer`, encrypts when it can.
        assert_eq!(encrypted(&db, &url(&db, "127.0.0.1", "")), Ok(true));
        assert_eq!(
            encrypted(&db, &url(&db, "127.0.0.1", "sslmode=disable")),
            Ok(false)
        );
        assert_eq!(
            encrypted(&db, &url(&db, "127.0.0.1", "sslmode=require")),
            Ok(true)
        );

        // verify-full: our CA and the name on the certificate.
        let full = format!("sslmode=verify-full&sslrootcert={ca}");
        assert_eq!(encrypted(&db, &url(&db, "localhost", &full)), Ok(true));
        // The certificate is not made out to 127.0.0.1.
        let e = refused(&db, &url(&db, "127.0.0.1", &full));
        assert!(e.contains("certificate") && e.contains("127.0.0.1"), "{e}");
        // verify-ca checks the signature only; so does require with a CA.
        let ca_only = format!("sslmode=verify-ca&sslrootcert={ca}");
        assert_eq!(encrypted(&db, &url(&db, "127.0.0.1", &ca_only)), Ok(true));
        let require_ca = format!("sslmode=require&sslrootcert={ca}");
        assert_eq!(
            encrypted(&db, &url(&db, "127.0.0.1", &require_ca)),
            Ok(true)
        );

        // A CA that did not sign the server's certificate: refused, in
        // every mode that checks.
        for query in [
            format!("sslmode=verify-full&sslrootcert={other}"),
            format!("sslmode=verify-ca&sslrootcert={other}"),
            format!("sslmode=require&sslrootcert={other}"),
        ] {
            let e = refused(&db, &url(&db, "localhost", &query));
            assert!(e.contains("certificate"), "{query}: {e}");
        }
        // A CA file that is not there: named.
        let e = refused_before_connecting(
            &db,
            &url(
                &db,
                "localhost",
                "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            ),
        );
        assert!(
            e.contains("sslrootcert") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
    }

    fn refused_before_connecting(db: &TestDb, url: &str) -> String {
        let e = encrypted(db, url).expect_err(url);
        assert!(
            !e.contains(db.password.expose()),
            "the password leaked: {e}"
        );
        e
    }

    /// A whole store (the daemon's writers and the reader) on verify-full.
    #[test]
    fn a_store_on_verify_full_opens_and_works() {
        let db = TestDb::new();
        let store = crate::store::Store::connect(&db.verified_url(), Some(&db.password))
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(store.on_postgres());
        let name = db.url.rsplit('/').next().unwrap();
        let shown = store.describe();
        assert!(
            shown.ends_with(&format!("/{name} (TLS, verify-full)")),
            "{shown}"
        );
        for (query, said) in [
            ("", "TLS, certificate not checked"),
            ("?sslmode=disable", "no TLS"),
        ] {
            let store =
                crate::store::Store::connect(&format!("{}{query}", db.url), Some(&db.password))
                    .unwrap_or_else(|e| panic!("{e:#}"));
            let shown = store.describe();
            assert!(shown.ends_with(&format!("/{name} ({said})")), "{shown}");
        }
        let (encrypted, plain) = db.ordersync_sessions();
        assert_eq!(plain, 0);
        assert!(encrypted >= 2, "{encrypted} encrypted sessions");
    }
}
