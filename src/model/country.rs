//! Countries: how a source's country value becomes the ISO 3166-1 alpha-2
//! code of the canonical order. One policy for every source: the source's
//! `country_map` first (a name a till types, "Nederland"; a numeric id,
//! Titelive's 150; a code that is not ISO, "UK"), then a value that already
//! is two letters. Anything else parks the order, naming the value and the
//! key to add it under.

use std::collections::BTreeMap;

/// A source's `country_map`, checked. Keys are compared without case and
/// without blanks around them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CountryMap {
    /// Where it is configured (`sources[2].country_map`), for messages.
    key: String,
    /// Folded source value → ISO code (upper case).
    map: BTreeMap<String, String>,
}

/// No map: two-letter codes only (clients outside the engine, tests).
static NONE: CountryMap = CountryMap {
    key: String::new(),
    map: BTreeMap::new(),
};

fn fold(value: &str) -> String {
    value.trim().to_lowercase()
}

fn is_alpha2(code: &str) -> bool {
    code.len() == 2 && code.chars().all(|c| c.is_ascii_alphabetic())
}

impl CountryMap {
    /// Checks the configured pairs. `key` names the table in messages.
    pub fn new(key: String, pairs: BTreeMap<String, String>) -> Result<CountryMap, String> {
        let mut map = BTreeMap::new();
        for (value, code) in pairs {
            if value.trim().is_empty() {
                return Err(format!("{key}: a key is empty"));
            }
            let code = code.trim();
            if !is_alpha2(code) {
                return Err(format!(
                    "{key}.{value:?}: {code:?} is not an ISO 3166-1 alpha-2 code (two letters, e.g. \"NL\")"
                ));
            }
            if map
                .insert(fold(&value), code.to_ascii_uppercase())
                .is_some()
            {
                return Err(format!(
                    "{key}: {value:?} is given twice (keys are compared without case and blanks)"
                ));
            }
        }
        Ok(CountryMap { key, map })
    }

    /// The empty map: only two-letter values are countries.
    pub fn none() -> &'static CountryMap {
        &NONE
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The configured source values, folded.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// The ISO code for a source's country value (`None`: no country).
    /// `what` names the field in the message (`invoice_address.country`).
    pub fn iso(&self, what: &str, value: Option<&str>) -> Result<Option<String>, String> {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        if !self.map.is_empty()
            && let Some(code) = self.map.get(&fold(value))
        {
            return Ok(Some(code.clone()));
        }
        if is_alpha2(value) {
            return Ok(Some(value.to_ascii_uppercase()));
        }
        Err(format!(
            "{what} {value:?} is not an ISO 3166-1 alpha-2 code; add {value:?} = \"<ISO code>\" to {}",
            self.key_name()
        ))
    }

    fn key_name(&self) -> &str {
        if self.key.is_empty() {
            "the source's country_map"
        } else {
            &self.key
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> Result<CountryMap, String> {
        CountryMap::new(
            "sources[2].country_map".into(),
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn names_ids_and_non_iso_codes_are_mapped_before_two_letters_pass() {
        let m = map(&[
            ("Nederland", "nl"),
            ("België", "BE"),
            ("150", "NL"),
            ("UK", "GB"),
        ])
        .unwrap();
        assert_eq!(
            m.iso("c", Some(" nederland ")).unwrap().as_deref(),
            Some("NL")
        );
        assert_eq!(m.iso("c", Some("BELGIË")).unwrap().as_deref(), Some("BE"));
        assert_eq!(m.iso("c", Some("150")).unwrap().as_deref(), Some("NL"));
        assert_eq!(m.iso("c", Some("uk")).unwrap().as_deref(), Some("GB"));
        assert_eq!(m.iso("c", Some("de")).unwrap().as_deref(), Some("DE"));
        assert_eq!(m.iso("c", Some("  ")).unwrap(), None);
        assert_eq!(m.iso("c", None).unwrap(), None);
    }

    #[test]
    fn an_unknown_value_names_the_field_the_value_and_the_key() {
        let m = map(&[]).unwrap();
        let err = m
            .iso("deliveryAddress.country", Some("Duitsland"))
            .unwrap_err();
        assert!(
            err.contains("deliveryAddress.country \"Duitsland\""),
            "{err}"
        );
        assert!(err.contains("sources[2].country_map"), "{err}");
        let err = CountryMap::default()
            .iso("x", Some("../\u{fffd}"))
            .unwrap_err();
        assert!(err.contains("the source's country_map"), "{err}");
    }

    #[test]
    fn bad_pairs_are_refused_by_name() {
        let err = map(&[("Nederland", "NLD")]).unwrap_err();
        assert!(
            err.contains("sources[2].country_map.\"Nederland\": \"NLD\""),
            "{err}"
        );
        let err = map(&[(" ", "NL")]).unwrap_err();
        assert!(err.contains("a key is empty"), "{err}");
        let err = map(&[("nederland", "NL"), ("Nederland ", "NL")]).unwrap_err();
        assert!(err.contains("given twice"), "{err}");
    }
}
