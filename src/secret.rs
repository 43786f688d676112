//! Secrets: read from a file or an environment variable, never inline, and
//! wrapped so that `Debug`/`Display` can never print them.

use std::fmt;
use std::path::{Path, PathBuf};

/// A credential. The only way to see the value is [`Secret::expose`], which
/// makes every use easy to find with grep.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value and remembers it for [`redact`]: any remote text that
    /// echoes it (an error body repeating the bearer token) is scrubbed
    /// before it is logged or stored.
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        remember(&value);
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Every secret value this process holds (configured credentials and the
/// tokens remotes issued). Short values are not remembered: scrubbing "1"
/// out of every message would hide more than it protects.
static KNOWN: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());
const MIN_REDACTED_LEN: usize = 6;

fn remember(value: &str) {
    if value.len() < MIN_REDACTED_LEN {
        return;
    }
    let mut known = KNOWN.write().unwrap_or_else(|e| e.into_inner());
    if !known.iter().any(|k| k == value) {
        known.push(value.to_string());
        // Longest first, so a token that contains another is replaced whole.
        known.sort_by_key(|k| std::cmp::Reverse(k.len()));
    }
}

/// `text` with every known secret value replaced by `[redacted]`. Applied to
/// whatever a remote says before it reaches a log line, an error or the
/// ledger.
pub fn redact(text: &str) -> String {
    let known = KNOWN.read().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_string();
    for k in known.iter() {
        if out.contains(k.as_str()) {
            out = out.replace(k.as_str(), "[redacted]");
        }
    }
    out
}

/// Where a secret comes from, as configured (`X_file` or `X_env`). Holds no
/// secret itself, so it may be printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretRef {
    File(PathBuf),
    Env(String),
}

impl SecretRef {
    /// Picks the one of `X_file` / `X_env` that is set. `key` is the config
    /// key without the suffix (e.g. `sources[0].client_secret`), for errors.
    pub fn from_pair(
        key: &str,
        file: Option<PathBuf>,
        env: Option<String>,
        base_dir: &Path,
    ) -> Result<Option<SecretRef>, String> {
        match (file, env) {
            (Some(_), Some(_)) => Err(format!("{key}: set only one of {key}_file and {key}_env")),
            (Some(path), None) => Ok(Some(SecretRef::File(resolve_path(&path, base_dir)))),
            (None, Some(var)) if var.trim().is_empty() => {
                Err(format!("{key}_env: the variable name is empty"))
            }
            (None, Some(var)) => Ok(Some(SecretRef::Env(var))),
            (None, None) => Ok(None),
        }
    }

    /// Reads the secret. Errors name the file or variable, never the value.
    pub fn load(&self, key: &str) -> Result<Secret, String> {
        match self {
            SecretRef::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!(
                        "{key}_file: cannot read secret file {}: {e}",
                        path.display()
                    )
                })?;
                let value = text.trim_end_matches(['\n', '\r']).to_string();
                if value.is_empty() {
                    return Err(format!(
                        "{key}_file: secret file {} is empty",
                        path.display()
                    ));
                }
                Ok(Secret::new(value))
            }
            SecretRef::Env(var) => match std::env::var(var) {
                Ok(value) if !value.is_empty() => Ok(Secret::new(value)),
                Ok(_) => Err(format!("{key}_env: environment variable {var} is empty")),
                Err(_) => Err(format!("{key}_env: environment variable {var} is not set")),
            },
        }
    }
}

/// Resolves a configured path: `$CREDENTIALS_DIRECTORY/...` expands from the
/// environment (systemd `LoadCredential=`), relative paths are taken from the
/// config file's directory so the daemon does not depend on its working dir.
pub fn resolve_path(path: &Path, base_dir: &Path) -> PathBuf {
    let text = path.to_string_lossy();
    if let Some(rest) = text.strip_prefix("$CREDENTIALS_DIRECTORY/")
        && let Ok(dir) = std::env::var("CREDENTIALS_DIRECTORY")
    {
        return Path::new(&dir).join(rest);
    }
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_text_that_echoes_a_secret_is_scrubbed() {
        let token = Secret::new("eyJhbGciOi.test-bearer-token-91f2");
        let body = format!("401: invalid token {} for realm", token.expose());
        let clean = redact(&body);
        assert!(!clean.contains(token.expose()), "{clean}");
        assert!(
            clean.contains("invalid token [redacted] for realm"),
            "{clean}"
        );
        // Short values are not scrubbed out of every message.
        let _ = Secret::new("abc");
        assert_eq!(redact("abc def"), "abc def");
    }

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn missing_file_error_names_the_key_and_path() {
        let r = SecretRef::File(PathBuf::from("/nonexistent/erp-token"));
        let err = r.load("erp.token").unwrap_err();
        assert!(err.contains("erp.token_file"), "{err}");
        assert!(err.contains("/nonexistent/erp-token"), "{err}");
    }

    #[test]
    fn file_secret_is_trimmed_of_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "abc\n").unwrap();
        let s = SecretRef::File(p).load("k").unwrap();
        assert_eq!(s.expose(), "abc");
    }

    #[test]
    fn both_file_and_env_is_an_error() {
        let err = SecretRef::from_pair(
            "erp.token",
            Some("a".into()),
            Some("B".into()),
            Path::new("/"),
        )
        .unwrap_err();
        assert!(err.contains("erp.token_file") && err.contains("erp.token_env"));
    }
}
