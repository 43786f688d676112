//! Every secret the daemon reads at start, with the config key that names it,
//! so `check-config` can read them all in one run and derive the unit's
//! `LoadCredential=` lines from them.

use super::{CloudSuiteAuth, Config, ErpKind, SourceSettings, TiteliveAuth};
use crate::secret::SecretRef;

/// One secret reference and its key without the `_file` / `_env` suffix
/// (`erp.token`, `sources[1].client_secret`), as errors name it.
pub struct SecretUse<'a> {
    pub key: String,
    pub secret: &'a mut SecretRef,
}

impl Config {
    /// The ERP's secret, the PostgreSQL ledger's password (if any) and those
    /// of every enabled source (a disabled source is never built, so its
    /// secrets are not read), in config order.
    pub fn secrets_mut(&mut self) -> Vec<SecretUse<'_>> {
        let erp_key = match self.erp.kind {
            ErpKind::Http => "erp.token",
            ErpKind::Tryton => "erp.password",
        };
        let mut uses = vec![SecretUse {
            key: erp_key.to_string(),
            secret: &mut self.erp.credential,
        }];
        if let Some(password) = self.ledger.as_mut().and_then(|l| l.password.as_mut()) {
            uses.push(SecretUse {
                key: "ledger.password".to_string(),
                secret: password,
            });
        }
        for (i, source) in self.sources.iter_mut().enumerate() {
            if !source.enabled {
                continue;
            }
            let (name, secret) = match &mut source.settings {
                SourceSettings::CloudSuite(s) => match &mut s.auth {
                    CloudSuiteAuth::OAuth2 { client_secret, .. } => {
                        ("client_secret", client_secret)
                    }
                    CloudSuiteAuth::LegacyToken(token) => ("api_token", token),
                },
                SourceSettings::Titelive(s) => match &mut s.auth {
                    TiteliveAuth::Token(token) => ("token", token),
                    TiteliveAuth::Login { password, .. } => ("system_password", password),
                },
                SourceSettings::Retailys(s) => ("token", &mut s.token),
                SourceSettings::Mplus(s) => ("secret", &mut s.secret),
                SourceSettings::Vinou(s) => ("api_token", &mut s.api_token),
            };
            uses.push(SecretUse {
                key: format!("sources[{i}].{name}"),
                secret,
            });
        }
        uses
    }
}
