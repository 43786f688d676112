//! The systemd side of secrets. The config names a secret as
//! `/run/credentials/ordersync.service/<name>` (or `$CREDENTIALS_DIRECTORY/<name>`);
//! the unit must load a credential `<name>` for it. Here the unit's
//! `LoadCredential=` lines are derived from the config (so the two cannot
//! disagree), and read back from the installed unit so that `check-config`
//! can read each secret from the file the service will get it from.
//! Only names and paths pass through here, never a secret's contents.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Where the service finds its credentials while it runs.
pub const RUN_DIR: &str = "/run/credentials/ordersync.service";
/// Where the derived `LoadCredential=` lines load them from.
pub const SOURCE_DIR: &str = "/etc/ordersync/credentials";
/// The drop-in the installer writes the derived lines to.
pub const DROP_IN: &str = "/etc/systemd/system/ordersync.service.d/credentials.conf";

const UNIT: &str = "ordersync.service";
/// Unit directories in systemd's order of precedence (relative to a root).
const UNIT_DIRS: [&str; 4] = [
    "etc/systemd/system",
    "run/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
];

/// The credential a configured secret path names, if it lies in the
/// service's credentials directory: `Some(Ok(name))`, or `Some(Err(..))`
/// when it does but is no valid credential name (a subdirectory, say).
/// `$CREDENTIALS_DIRECTORY/<name>` arrives here expanded (under the unit) or,
/// outside it, taken as relative to the config's directory.
pub fn credential_name(path: &Path) -> Option<Result<String, String>> {
    let rest = if let Ok(rest) = path.strip_prefix(RUN_DIR) {
        rest.to_path_buf()
    } else if let Some(rest) = std::env::var_os("CREDENTIALS_DIRECTORY")
        .and_then(|dir| path.strip_prefix(dir).ok().map(Path::to_path_buf))
    {
        rest
    } else {
        let mut parts = path.components();
        parts.find(|c| c.as_os_str() == "$CREDENTIALS_DIRECTORY")?;
        parts.as_path().to_path_buf()
    };
    let mut parts = rest.components();
    Some(match (parts.next(), parts.next()) {
        (Some(Component::Normal(name)), None) => match name.to_str() {
            Some(n) if valid_name(n) => Ok(n.to_string()),
            _ => Err(format!(
                "{} is not a credential name systemd accepts",
                name.to_string_lossy()
            )),
        },
        _ => Err(format!(
            "{} is not one file directly in the credentials directory",
            path.display()
        )),
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(':')
        && name.chars().all(|c| c.is_ascii_graphic())
}

/// What one `LoadCredential=` / `LoadCredentialEncrypted=` line gives the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitCredential {
    /// A plain file (or no path: the system credential of the same name).
    Plain(Option<PathBuf>),
    /// Decrypted by systemd at start; cannot be read outside the unit.
    Encrypted(PathBuf),
}

/// The credentials an installed unit loads, by name, and the files they came from.
#[derive(Debug, Default)]
pub struct UnitCredentials {
    pub files: Vec<PathBuf>,
    pub by_name: BTreeMap<String, UnitCredential>,
}

impl UnitCredentials {
    /// Reads `ordersync.service` and its drop-ins (`ordersync.service.d/*.conf`)
    /// as systemd would find them under `root` (`/` for the live system).
    pub fn read(root: &Path) -> Result<UnitCredentials, String> {
        let unit = UNIT_DIRS
            .iter()
            .map(|d| root.join(d).join(UNIT))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                format!(
                    "no {UNIT} under {} (looked in /{})",
                    root.display(),
                    UNIT_DIRS.join(", /")
                )
            })?;
        // Drop-ins of every directory, sorted by file name; a name in a
        // directory of higher precedence hides the same name further down.
        let mut drop_ins: BTreeMap<std::ffi::OsString, PathBuf> = BTreeMap::new();
        for dir in UNIT_DIRS.iter().rev() {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(format!("{UNIT}.d"))) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "conf") {
                    drop_ins.insert(entry.file_name(), path);
                }
            }
        }
        let mut creds = UnitCredentials::default();
        for path in std::iter::once(unit).chain(drop_ins.into_values()) {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            creds.apply(&text);
            creds.files.push(path);
        }
        Ok(creds)
    }

    /// Applies one unit file's `[Service]` credential lines, in order: an
    /// empty assignment clears what came before, as in systemd.
    fn apply(&mut self, text: &str) {
        let mut in_service = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_service = line == "[Service]";
                continue;
            }
            if !in_service || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let encrypted = match key.trim() {
                "LoadCredential" => false,
                "LoadCredentialEncrypted" => true,
                _ => continue,
            };
            let value = value.trim();
            if value.is_empty() {
                self.by_name
                    .retain(|_, c| matches!(c, UnitCredential::Encrypted(_)) != encrypted);
                continue;
            }
            let (name, path) = match value.split_once(':') {
                Some((n, p)) => (n, Some(PathBuf::from(p))),
                None => (value, None),
            };
            let credential = match (encrypted, path) {
                (true, Some(p)) => UnitCredential::Encrypted(p),
                (true, None) => UnitCredential::Encrypted(PathBuf::from(name)),
                (false, p) => UnitCredential::Plain(p),
            };
            self.by_name.insert(name.to_string(), credential);
        }
    }
}

/// The drop-in for `config_path`: one `LoadCredential=<name>:SOURCE_DIR/<name>`
/// per credential name, in the order first named. `notes` become comments.
pub fn drop_in(config_path: &Path, names: &[String], notes: &[String]) -> String {
    let mut out = format!(
        "# Written by `ordersync check-config --unit-credentials` from {}.\n\
         # One line per secret the config names in {RUN_DIR}/:\n\
         # change the config, not this file, then write it again and\n\
         # `systemctl daemon-reload`.\n",
        config_path.display()
    );
    for note in notes {
        out.push_str(&format!("# {note}\n"));
    }
    out.push_str("[Service]\n");
    for name in names {
        out.push_str(&format!("LoadCredential={name}:{SOURCE_DIR}/{name}\n"));
    }
    out
}

/// `path` as seen under `root` (`/` leaves it as it is).
pub fn under_root(root: &Path, path: &Path) -> PathBuf {
    match path.strip_prefix("/") {
        Ok(rel) => root.join(rel),
        Err(_) => root.join(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_credentials_directory_only() {
        let name = |p: &str| credential_name(Path::new(p));
        assert_eq!(
            name("/run/credentials/ordersync.service/erp-token"),
            Some(Ok("erp-token".into()))
        );
        // Outside the unit, `$CREDENTIALS_DIRECTORY/x` was taken as relative
        // to the config's directory.
        assert_eq!(
            name("/etc/ordersync/$CREDENTIALS_DIRECTORY/vinou-token"),
            Some(Ok("vinou-token".into()))
        );
        assert_eq!(name("/etc/ordersync/secrets/erp-token"), None);
        assert_eq!(name("/run/credentials/other.service/erp-token"), None);
        assert!(matches!(
            name("/run/credentials/ordersync.service/sub/erp-token"),
            Some(Err(_))
        ));
        assert!(matches!(
            name("/run/credentials/ordersync.service/a:b"),
            Some(Err(_))
        ));
    }

    #[test]
    fn unit_lines_are_read_in_order_with_resets_and_sections() {
        let mut creds = UnitCredentials::default();
        creds.apply(
            "[Unit]\nLoadCredential=not-service:/x\n[Service]\n\
             LoadCredential=old:/etc/ordersync/credentials/old\n\
             # LoadCredential=commented:/x\n\
             LoadCredentialEncrypted=enc:/etc/ordersync/credentials/enc.cred\n",
        );
        creds.apply("[Service]\nLoadCredential=\nLoadCredential=erp-token:/etc/ordersync/credentials/erp-token\nLoadCredential=system-one\n");
        assert_eq!(
            creds.by_name.keys().collect::<Vec<_>>(),
            ["enc", "erp-token", "system-one"]
        );
        assert_eq!(
            creds.by_name["erp-token"],
            UnitCredential::Plain(Some("/etc/ordersync/credentials/erp-token".into()))
        );
        assert_eq!(creds.by_name["system-one"], UnitCredential::Plain(None));
        assert_eq!(
            creds.by_name["enc"],
            UnitCredential::Encrypted("/etc/ordersync/credentials/enc.cred".into())
        );
    }

    #[test]
    fn the_installed_unit_and_its_drop_ins_are_found_under_a_root() {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc/systemd/system");
        let lib = root.path().join("usr/lib/systemd/system");
        std::fs::create_dir_all(etc.join("ordersync.service.d")).unwrap();
        std::fs::create_dir_all(lib.join("ordersync.service.d")).unwrap();
        std::fs::write(
            lib.join("ordersync.service"),
            "[Service]\nLoadCredential=a:/a\n",
        )
        .unwrap();
        std::fs::write(
            lib.join("ordersync.service.d/credentials.conf"),
            "[Service]\nLoadCredential=hidden:/h\n",
        )
        .unwrap();
        // Same name in /etc hides the packaged drop-in.
        std::fs::write(
            etc.join("ordersync.service.d/credentials.conf"),
            "[Service]\nLoadCredential=b:/b\n",
        )
        .unwrap();
        let creds = UnitCredentials::read(root.path()).unwrap();
        assert_eq!(creds.by_name.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(creds.files.len(), 2);
        let err = UnitCredentials::read(&root.path().join("nothing")).unwrap_err();
        assert!(err.contains("no ordersync.service"), "{err}");
    }
}
