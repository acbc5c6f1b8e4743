//! Startup settings a server has accepted, per role and database, with the
//! value it showed for each: a login whose settings were all seen before
//! (the usual case: an application's clients share `application_name`,
//! `TimeZone`, `DateStyle`) needs no round trip to a server, and logins
//! keep working on replicas alone while the primary is away.

use std::collections::HashMap;
use std::sync::Mutex;

/// Entries kept before the cache starts over (bounded memory whatever
/// clients send; a few entries per application in practice).
pub const CAPACITY: usize = 4096;

/// `(user, database, lower-cased name, value as given)`.
type Key = (String, String, String, String);

/// The accepted settings and their shown values.
#[derive(Debug, Default)]
pub struct CheckedSettings {
    seen: Mutex<HashMap<Key, String>>,
}

fn key(user: &str, database: &str, name: &str, value: &str) -> Key {
    (
        user.to_string(),
        database.to_string(),
        name.to_ascii_lowercase(),
        value.to_string(),
    )
}

impl CheckedSettings {
    /// The settings as servers showed them, if every one of `given` was
    /// accepted before for this role and database; `None` means check.
    pub fn lookup(
        &self,
        user: &str,
        database: &str,
        given: &[(String, String)],
    ) -> Option<Vec<(String, String)>> {
        let seen = self.seen.lock().ok()?;
        given
            .iter()
            .map(|(name, value)| {
                seen.get(&key(user, database, name, value))
                    .map(|shown| (name.clone(), shown.clone()))
            })
            .collect()
    }

    /// Records that a server accepted `given` and showed them as `shown`
    /// (same order and length).
    pub fn remember(
        &self,
        user: &str,
        database: &str,
        given: &[(String, String)],
        shown: &[(String, String)],
    ) {
        // A name given twice is applied in turn: its values' shown forms
        // are not known one by one.
        let twice = given
            .iter()
            .enumerate()
            .any(|(i, (n, _))| given[..i].iter().any(|(m, _)| m.eq_ignore_ascii_case(n)));
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        if twice {
            return;
        }
        if seen.len() + given.len() > CAPACITY {
            seen.clear();
        }
        for ((name, value), (_, s)) in given.iter().zip(shown) {
            seen.insert(key(user, database, name, value), s.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_login_is_served_only_when_every_value_was_accepted_for_that_role() {
        let c = CheckedSettings::default();
        let given = pairs(&[("DateStyle", "iso"), ("application_name", "app")]);
        assert_eq!(c.lookup("u", "db", &given), None);
        c.remember(
            "u",
            "db",
            &given,
            &pairs(&[("DateStyle", "ISO, MDY"), ("application_name", "app")]),
        );
        assert_eq!(
            c.lookup("u", "db", &given),
            Some(pairs(&[
                ("DateStyle", "ISO, MDY"),
                ("application_name", "app")
            ]))
        );
        // Names in any case; one value never seen: check.
        assert!(
            c.lookup("u", "db", &pairs(&[("datestyle", "iso")]))
                .is_some()
        );
        let other = pairs(&[("DateStyle", "iso"), ("application_name", "other")]);
        assert_eq!(c.lookup("u", "db", &other), None);
        // Another role or database may be refused what this one may set.
        assert_eq!(c.lookup("v", "db", &given), None);
        assert_eq!(c.lookup("u", "db2", &given), None);
    }

    #[test]
    fn a_name_given_twice_is_not_remembered() {
        let c = CheckedSettings::default();
        let given = pairs(&[("TimeZone", "utc"), ("timezone", "cet")]);
        c.remember(
            "u",
            "db",
            &given,
            &pairs(&[("TimeZone", "CET"), ("timezone", "CET")]),
        );
        assert_eq!(c.lookup("u", "db", &pairs(&[("TimeZone", "utc")])), None);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let c = CheckedSettings::default();
        for i in 0..(CAPACITY + 10) {
            let g = pairs(&[("application_name", &format!("app{i}"))]);
            c.remember("u", "db", &g, &g);
        }
        let len = c.seen.lock().map(|s| s.len()).unwrap_or(usize::MAX);
        assert!(len <= CAPACITY, "{len}");
        let last = pairs(&[("application_name", &format!("app{}", CAPACITY + 9))]);
        assert!(c.lookup("u", "db", &last).is_some());
    }
}
