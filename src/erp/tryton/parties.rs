//! A new sale's customer as a Tryton party, with its addresses.
//!
//! A customer is found by the source's customer id (a `party.identifier`
//! code `SOURCE:ID`), else by e-mail, else by name and postcode; what is
//! missing is created. One order on its own asks Tryton one question at a
//! time. A batch ([`Parties::resolve`]) asks for all its orders at once,
//! in at most seven calls: one search of the identifiers, one of the
//! e-mails, one of the names with one read of those parties' postcodes,
//! one `create` of every new party with its addresses, one read of these
//! parties' addresses, one `create` of the addresses known parties lack.
//! The answers are the ones the per-order questions would get, asked in
//! the batch's order (the first party by id wins, a customer new to
//! Tryton becomes one party). What the batch leaves open (a customer known
//! by name only with no postcode: always a new party) goes the per-order
//! way with what the batch learned.
//!
//! Every caller holds `erp.master_data`, so one new customer of two orders
//! pushed at once is created once.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::TrytonErp;
use crate::http::Failure;
use crate::model::{Address, Order};

/// What is known of the parties of the orders being pushed. Empty (the
/// default) for one order on its own: then every question goes to Tryton.
#[derive(Default)]
pub(super) struct Parties {
    /// By identifier code: `Some(party)`, or `None` when Tryton has none.
    /// A code not in the map was not asked about.
    by_identifier: HashMap<String, Option<i64>>,
    /// By e-mail, the same way.
    by_email: HashMap<String, Option<i64>>,
    /// By name and postcode, the same way.
    by_name: HashMap<NameKey, Option<i64>>,
    /// Every active address of a party, by id ascending, once read (a
    /// party not in the map: its addresses were not read).
    addresses: HashMap<i64, Vec<(i64, AddressKey)>>,
}

/// What makes two addresses of a party the same: street, postcode, city
/// and country, with surrounding blanks ignored and a blank like none.
#[derive(Clone, Debug, PartialEq, Eq)]
struct AddressKey {
    street: Option<String>,
    postal_code: Option<String>,
    city: Option<String>,
    country: Option<i64>,
}

fn text(s: Option<&str>) -> Option<String> {
    s.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl AddressKey {
    fn of(a: &Address, country: Option<i64>) -> AddressKey {
        AddressKey {
            street: text(a.street.as_deref()),
            postal_code: text(a.postcode.as_deref()),
            city: text(a.city.as_deref()),
            country,
        }
    }

    /// From a `party.address` row.
    fn of_row(row: &Value) -> AddressKey {
        AddressKey {
            street: text(row["street"].as_str()),
            postal_code: text(row["postal_code"].as_str()),
            city: text(row["city"].as_str()),
            country: row["country"].as_i64(),
        }
    }
}

/// The stable identifier of a source's customer in Tryton: kept as a
/// `party.identifier` code (the party `code` is a read-only sequence).
/// A customer with nothing to know it by (no id, e-mail, company or name,
/// as a till's walk-in sale) is the source's one walk-in party,
/// `SOURCE#walk-in` (a source name holds no `:` or `#`, so no customer id
/// can give that code).
fn customer_identifier(order: &Order) -> Option<String> {
    match &order.customer.source_customer_id {
        Some(id) => Some(format!("{}:{id}", order.source)),
        None if is_walk_in(order) => Some(format!("{}#walk-in", order.source)),
        None => None,
    }
}

/// Whether `order`'s customer has nothing to find or name a party by.
fn is_walk_in(order: &Order) -> bool {
    let c = &order.customer;
    c.source_customer_id.is_none() && c.email.is_none() && named(order).is_none()
}

/// The company, else the customer's name, else the billing address's.
fn named(order: &Order) -> Option<String> {
    let c = &order.customer;
    let (billing, _) = addresses_of(order);
    c.company
        .clone()
        .or_else(|| c.name.clone())
        .or_else(|| billing.and_then(|a| a.name.clone()))
}

/// A customer known by name only: the party's name and the billing
/// address's postcode, as Tryton is asked for them (exactly).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct NameKey {
    name: String,
    postcode: String,
}

/// How an order's customer is looked up: the first of these it has.
enum Lookup {
    Identifier(String),
    Email(String),
    /// By name and postcode; `None` without a postcode: nothing to find
    /// it by, so a new party (left to the per-order way).
    Name(Option<NameKey>),
}

fn lookup(order: &Order) -> Lookup {
    match (customer_identifier(order), &order.customer.email) {
        (Some(code), _) => Lookup::Identifier(code),
        (None, Some(email)) => Lookup::Email(email.clone()),
        (None, None) => Lookup::Name(addresses_of(order).0.and_then(|a| a.postcode.clone()).map(
            |postcode| NameKey {
                name: party_name(order),
                postcode,
            },
        )),
    }
}

/// The billing address (else the shipping one) and the shipping address
/// (else the billing one) of an order.
pub(super) fn addresses_of(order: &Order) -> (Option<&Address>, Option<&Address>) {
    let billing = order
        .billing_address
        .as_ref()
        .or(order.shipping_address.as_ref());
    let shipping = order.shipping_address.as_ref().or(billing);
    (billing, shipping)
}

/// The name of a new party: the company, else the customer's name, else
/// the billing address's, else "<source> customer <id>", else the e-mail
/// address, else (a walk-in customer) "<source> walk-in customer".
fn party_name(order: &Order) -> String {
    let c = &order.customer;
    named(order)
        .or_else(|| {
            c.source_customer_id
                .as_ref()
                .map(|id| format!("{} customer {id}", order.source))
        })
        .or_else(|| c.email.clone())
        .unwrap_or_else(|| format!("{} walk-in customer", order.source))
}

/// The values of a new `party.party` for `order`'s customer, with
/// `addresses` (already `party.address` values) created along.
fn party_values(order: &Order, name: String, addresses: Vec<Value>) -> Value {
    let c = &order.customer;
    let mut mechanisms = Vec::new();
    if let Some(email) = &c.email {
        mechanisms.push(json!({"type": "email", "value": email}));
    }
    // The walk-in party is every walk-in's: not the first one's phone.
    if let Some(phone) = c.phone.as_ref().filter(|_| !is_walk_in(order)) {
        mechanisms.push(json!({"type": "phone", "value": phone}));
    }
    let identifiers: Vec<Value> = customer_identifier(order)
        .iter()
        .map(|code| json!({"code": code}))
        .collect();
    // An explicit (possibly empty) list of addresses stops Tryton's default
    // of one blank address.
    json!({
        "name": name,
        "identifiers": [["create", identifiers]],
        "contact_mechanisms": [["create", mechanisms]],
        "addresses": [["create", addresses]],
    })
}

/// The `party.address` values of `a` (without its party).
fn address_values(a: &Address, country: Option<i64>) -> Value {
    json!({
        "street": a.street, "postal_code": a.postcode, "city": a.city,
        "country": country, "party_name": a.name,
    })
}

/// The Tryton country of an address, `None` when it names none.
async fn country_of(erp: &TrytonErp, order: &Order, a: &Address) -> Result<Option<i64>, Failure> {
    match &a.country {
        Some(code) => Ok(Some(
            erp.id_by_code("country.country", code)
                .await?
                .ok_or_else(|| {
                    Failure::permanent(format!(
                        "order {}: country {code} not found in Tryton",
                        order.order_key
                    ))
                })?,
        )),
        None => Ok(None),
    }
}

/// A party planned for creation in a batch, from the first order of its
/// customer.
struct NewParty<'a> {
    order: &'a Order,
    name: String,
    lookup: Lookup,
    emails: Vec<String>,
    /// Its addresses (`party.address` values) and what tells them apart:
    /// each is created once.
    addresses: Vec<(AddressKey, Value)>,
}

impl Parties {
    /// Looks up (and creates) the parties of a batch's orders together; see
    /// the module's documentation. An order whose customer or addresses
    /// cannot be planned here (an address in a country Tryton does not
    /// know) is left to
    /// the per-order way, where it fails alone with its reason.
    pub(super) async fn resolve(erp: &TrytonErp, orders: &[&Order]) -> Result<Parties, Failure> {
        let mut parties = Parties::default();
        let mut codes = Vec::new();
        let mut emails = Vec::new();
        let mut names = Vec::new();
        for order in orders {
            match lookup(order) {
                Lookup::Identifier(code) => codes.push(code),
                Lookup::Email(email) => emails.push(email),
                Lookup::Name(Some(key)) => names.push(key),
                Lookup::Name(None) => {}
            }
        }
        parties.find_identifiers(erp, codes).await?;
        parties.find_emails(erp, emails).await?;
        parties.find_names(erp, names).await?;
        parties.create_missing(erp, orders).await?;
        parties.read_addresses(erp).await?;
        parties.create_addresses(erp, orders).await?;
        Ok(parties)
    }

    /// The party of each identifier code: the lowest party id holding it,
    /// as a search of `party.party` by `identifiers.code` ordered by id.
    async fn find_identifiers(
        &mut self,
        erp: &TrytonErp,
        mut codes: Vec<String>,
    ) -> Result<(), Failure> {
        codes.sort();
        codes.dedup();
        if codes.is_empty() {
            return Ok(());
        }
        let rows = erp
            .search_read(
                "party.identifier",
                json!([["code", "in", codes]]),
                &["code", "party"],
                None,
            )
            .await?;
        for code in codes {
            self.by_identifier.insert(code, None);
        }
        for row in &rows {
            let (Some(code), Some(party)) = (row["code"].as_str(), row["party"].as_i64()) else {
                continue;
            };
            if let Some(found) = self.by_identifier.get_mut(code) {
                *found = Some(found.map_or(party, |p| p.min(party)));
            }
        }
        Ok(())
    }

    /// The party of each e-mail: that of its first e-mail contact
    /// mechanism by id, as the per-order search.
    async fn find_emails(
        &mut self,
        erp: &TrytonErp,
        mut emails: Vec<String>,
    ) -> Result<(), Failure> {
        emails.sort();
        emails.dedup();
        if emails.is_empty() {
            return Ok(());
        }
        let rows = erp
            .search_read(
                "party.contact_mechanism",
                json!([["type", "=", "email"], ["value", "in", emails]]),
                &["value", "party"],
                None,
            )
            .await?;
        for email in emails {
            self.by_email.insert(email, None);
        }
        for row in &rows {
            let (Some(email), Some(party)) = (row["value"].as_str(), row["party"].as_i64()) else {
                continue;
            };
            if let Some(found @ None) = self.by_email.get_mut(email) {
                *found = Some(party);
            }
        }
        Ok(())
    }

    /// The party of each name and postcode: the lowest party id of that
    /// name with an address at that postcode, as the per-order search of
    /// `party.party` by `name` and `addresses.postal_code` ordered by id.
    /// Two calls: the parties of those names with an address at any of
    /// the postcodes, then which postcodes each of them has.
    async fn find_names(&mut self, erp: &TrytonErp, mut keys: Vec<NameKey>) -> Result<(), Failure> {
        keys.sort();
        keys.dedup();
        if keys.is_empty() {
            return Ok(());
        }
        let mut names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        let mut postcodes: Vec<&str> = keys.iter().map(|k| k.postcode.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        postcodes.sort_unstable();
        postcodes.dedup();
        let candidates = erp
            .search_read(
                "party.party",
                json!([
                    ["name", "in", names],
                    ["addresses.postal_code", "in", postcodes]
                ]),
                &["name"],
                None,
            )
            .await?;
        let named: HashMap<i64, &str> = candidates
            .iter()
            .filter_map(|row| Some((row["id"].as_i64()?, row["name"].as_str()?)))
            .collect();
        let at = if named.is_empty() {
            Vec::new()
        } else {
            let ids: Vec<i64> = named.keys().copied().collect();
            erp.search_read(
                "party.address",
                json!([["party", "in", ids], ["postal_code", "in", postcodes]]),
                &["party", "postal_code"],
                None,
            )
            .await?
        };
        for key in &keys {
            self.by_name.insert(key.clone(), None);
        }
        for row in &at {
            let (Some(party), Some(postcode)) =
                (row["party"].as_i64(), row["postal_code"].as_str())
            else {
                continue;
            };
            let Some(name) = named.get(&party) else {
                continue;
            };
            let key = NameKey {
                name: (*name).to_string(),
                postcode: postcode.to_string(),
            };
            if let Some(found) = self.by_name.get_mut(&key) {
                *found = Some(found.map_or(party, |p| p.min(party)));
            }
        }
        Ok(())
    }

    /// The party an order's customer was found as (or planned as, by index
    /// into `planned`).
    fn known(&self, lookup: &Lookup, planned: &[NewParty<'_>]) -> Option<Result<i64, usize>> {
        let planned_for = |wanted: &dyn Fn(&NewParty<'_>) -> bool| planned.iter().position(wanted);
        match lookup {
            Lookup::Identifier(code) => match self.by_identifier.get(code)? {
                Some(p) => Some(Ok(*p)),
                None => planned_for(&|n| matches!(&n.lookup, Lookup::Identifier(c) if c == code))
                    .map(Err),
            },
            // A customer known by e-mail only is found by an e-mail of a
            // party created before it (in the batch's order), as it would
            // be one order at a time.
            Lookup::Email(email) => match self.by_email.get(email)? {
                Some(p) => Some(Ok(*p)),
                None => planned_for(&|n| n.emails.contains(email)).map(Err),
            },
            // Found by name and postcode: a party created before it in the
            // batch (whatever it was looked up by) with that name and an
            // address at that postcode.
            Lookup::Name(Some(key)) => match self.by_name.get(key)? {
                Some(p) => Some(Ok(*p)),
                None => planned_for(&|n| {
                    n.name == key.name
                        && n.addresses
                            .iter()
                            .any(|(_, v)| v["postal_code"].as_str() == Some(key.postcode.as_str()))
                })
                .map(Err),
            },
            Lookup::Name(None) => None,
        }
    }

    /// Creates, in one call, the parties the batch's customers need that
    /// Tryton does not have, each with the addresses its orders use.
    async fn create_missing(&mut self, erp: &TrytonErp, orders: &[&Order]) -> Result<(), Failure> {
        let mut planned: Vec<NewParty<'_>> = Vec::new();
        for &order in orders {
            let lookup = lookup(order);
            let existing = match self.known(&lookup, &planned) {
                Some(Ok(_)) => continue,
                Some(Err(i)) => Some(i),
                None if matches!(lookup, Lookup::Name(None)) => continue,
                // Looked up, and neither in Tryton nor planned.
                None if self.was_asked(&lookup) => None,
                None => continue,
            };
            // An order with no address at all still needs one for its
            // sale: a blank one, as one order at a time makes it.
            let blank = Address::default();
            let (billing, shipping) = addresses_of(order);
            let given = match (billing, shipping) {
                (None, None) => vec![&blank],
                _ => [billing, shipping].into_iter().flatten().collect(),
            };
            let mut wanted = Vec::new();
            let mut plannable = true;
            for a in given {
                match country_of(erp, order, a).await {
                    Ok(country) => wanted.push((a, AddressKey::of(a, country), country)),
                    Err(Failure::Permanent { .. }) => plannable = false,
                    Err(retry) => return Err(retry),
                }
            }
            if !plannable {
                continue;
            }
            let i = match existing {
                Some(i) => i,
                None => {
                    planned.push(NewParty {
                        order,
                        name: party_name(order),
                        emails: order.customer.email.iter().cloned().collect(),
                        addresses: Vec::new(),
                        lookup,
                    });
                    planned.len() - 1
                }
            };
            let new = &mut planned[i];
            for (a, key, country) in wanted {
                if !new.addresses.iter().any(|(k, _)| *k == key) {
                    new.addresses.push((key, address_values(a, country)));
                }
            }
        }
        if planned.is_empty() {
            return Ok(());
        }
        let values = planned
            .iter()
            .map(|n| {
                let addresses = n.addresses.iter().map(|(_, v)| v.clone()).collect();
                party_values(n.order, n.name.clone(), addresses)
            })
            .collect();
        let ids = erp.create_many("party.party", values).await?;
        for (new, id) in planned.into_iter().zip(ids) {
            self.created(&new.lookup, &new.emails, id);
        }
        Ok(())
    }

    fn was_asked(&self, lookup: &Lookup) -> bool {
        match lookup {
            Lookup::Identifier(code) => self.by_identifier.contains_key(code),
            Lookup::Email(email) => self.by_email.contains_key(email),
            Lookup::Name(Some(key)) => self.by_name.contains_key(key),
            Lookup::Name(None) => false,
        }
    }

    /// Remembers a party created for a customer, so the next order of the
    /// same customer (or e-mail) finds it.
    fn created(&mut self, lookup: &Lookup, emails: &[String], party: i64) {
        match lookup {
            Lookup::Identifier(code) => {
                self.by_identifier.insert(code.clone(), Some(party));
            }
            Lookup::Name(Some(key)) => {
                self.by_name
                    .entry(key.clone())
                    .or_insert(None)
                    .get_or_insert(party);
            }
            Lookup::Email(_) | Lookup::Name(None) => {}
        }
        for email in emails {
            let known = self.by_email.entry(email.clone()).or_insert(None);
            known.get_or_insert(party);
        }
    }

    /// Reads the addresses of every party found or created, in one call.
    async fn read_addresses(&mut self, erp: &TrytonErp) -> Result<(), Failure> {
        let mut ids: Vec<i64> = self
            .by_identifier
            .values()
            .chain(self.by_email.values())
            .chain(self.by_name.values())
            .flatten()
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(());
        }
        let rows = erp
            .search_read(
                "party.address",
                json!([["party", "in", ids]]),
                &["party", "street", "postal_code", "city", "country"],
                None,
            )
            .await?;
        for id in ids {
            self.addresses.insert(id, Vec::new());
        }
        for row in &rows {
            let (Some(party), Some(id)) = (row["party"].as_i64(), row["id"].as_i64()) else {
                continue;
            };
            if let Some(list) = self.addresses.get_mut(&party) {
                list.push((id, AddressKey::of_row(row)));
            }
        }
        Ok(())
    }
}

impl Parties {
    /// Creates, in one call, the addresses the batch's orders use that their
    /// parties lack (a returning customer's new address), as [`address`]
    /// would one order at a time; each distinct address of a party once.
    /// An order with an address in a country Tryton does not know is left
    /// to the per-order way, where it fails alone with its reason.
    async fn create_addresses(
        &mut self,
        erp: &TrytonErp,
        orders: &[&Order],
    ) -> Result<(), Failure> {
        let mut planned: Vec<(i64, AddressKey, Value)> = Vec::new();
        let blank = Address::default();
        'orders: for &order in orders {
            let Some(Ok(party)) = self.known(&lookup(order), &[]) else {
                continue;
            };
            let Some(known) = self.addresses.get(&party) else {
                continue;
            };
            let (billing, shipping) = addresses_of(order);
            let given = match (billing, shipping) {
                (None, None) => vec![&blank],
                _ => [billing, shipping].into_iter().flatten().collect(),
            };
            let mut wanted = Vec::new();
            for a in given {
                match country_of(erp, order, a).await {
                    Ok(country) => wanted.push((a, AddressKey::of(a, country), country)),
                    Err(Failure::Permanent { .. }) => continue 'orders,
                    Err(retry) => return Err(retry),
                }
            }
            for (a, key, country) in wanted {
                let have = known.iter().any(|(_, k)| *k == key)
                    || planned.iter().any(|(p, k, _)| *p == party && *k == key);
                if !have {
                    let mut values = address_values(a, country);
                    values["party"] = json!(party);
                    planned.push((party, key, values));
                }
            }
        }
        if planned.is_empty() {
            return Ok(());
        }
        let values = planned.iter().map(|(_, _, v)| v.clone()).collect();
        let ids = erp.create_many("party.address", values).await?;
        for ((party, key, _), id) in planned.into_iter().zip(ids) {
            if let Some(list) = self.addresses.get_mut(&party) {
                list.push((id, key));
            }
        }
        Ok(())
    }
}

/// The customer's party: by the source's customer id (a party identifier
/// `SOURCE:ID`), else by e-mail, else by name and postcode, else new (then
/// `true`: it has no addresses yet). A B2B shop often knows its customer
/// only by id: such a party is named from what is known (company, name,
/// address name, else "<source> customer <id>", else the e-mail), never
/// parked for it. A customer with nothing to know it by (a till's walk-in
/// sale) is the source's walk-in party, found by its identifier
/// `SOURCE#walk-in` and created once. What `parties` knows is not asked
/// again.
pub(super) async fn find_or_create(
    erp: &TrytonErp,
    order: &Order,
    parties: &mut Parties,
) -> Result<(i64, bool), Failure> {
    let c = &order.customer;
    let lookup = lookup(order);
    // What the batch learned, and else the one question to ask Tryton:
    // the model, the domain, and the field of the answer with the party.
    let (known, question) = match &lookup {
        Lookup::Identifier(code) => (
            parties.by_identifier.get(code),
            Some((
                "party.party",
                json!([["identifiers.code", "=", code]]),
                "id",
            )),
        ),
        Lookup::Email(email) => (
            parties.by_email.get(email),
            Some((
                "party.contact_mechanism",
                json!([["type", "=", "email"], ["value", "=", email]]),
                "party",
            )),
        ),
        Lookup::Name(Some(key)) => (
            parties.by_name.get(key),
            Some((
                "party.party",
                json!([
                    ["name", "=", key.name],
                    ["addresses.postal_code", "=", key.postcode]
                ]),
                "id",
            )),
        ),
        Lookup::Name(None) => (None, None),
    };
    match (known, question) {
        (Some(Some(p)), _) => return Ok((*p, false)),
        (None, Some((model, domain, field))) => {
            let rows = erp.search_read(model, domain, &[field], Some(1)).await?;
            if let Some(p) = rows.first().and_then(|r| r[field].as_i64()) {
                return Ok((p, false));
            }
        }
        // Asked with the batch and not found, or nothing to ask by.
        (Some(None), _) | (None, None) => {}
    }
    let name = party_name(order);
    // Addresses are added by `address`.
    let id = erp
        .create("party.party", party_values(order, name, Vec::new()))
        .await?;
    parties.created(&lookup, c.email.as_slice(), id);
    parties.addresses.insert(id, Vec::new());
    Ok((id, true))
}

/// The party's address equal to `addr`, created when missing (at once for
/// a party created just now: it has none).
pub(super) async fn address(
    erp: &TrytonErp,
    order: &Order,
    party: (i64, bool),
    addr: Option<&Address>,
    parties: &mut Parties,
) -> Result<i64, Failure> {
    let (party, new_party) = party;
    let empty = Address::default();
    let a = addr.unwrap_or(&empty);
    let country = country_of(erp, order, a).await?;
    let key = AddressKey::of(a, country);
    match parties.addresses.get(&party) {
        Some(known) => {
            if let Some((id, _)) = known.iter().find(|(_, k)| *k == key) {
                return Ok(*id);
            }
        }
        None if !new_party => {
            let domain = json!([
                ["party", "=", party],
                ["street", "=", a.street],
                ["postal_code", "=", a.postcode],
                ["city", "=", a.city],
                ["country", "=", country],
            ]);
            if let Some(id) = erp.search("party.address", domain, Some(1)).await?.first() {
                return Ok(*id);
            }
        }
        None => {}
    }
    let mut values = address_values(a, country);
    values["party"] = json!(party);
    let id = erp.create("party.address", values).await?;
    if let Some(known) = parties.addresses.get_mut(&party) {
        known.push((id, key));
    }
    Ok(id)
}
