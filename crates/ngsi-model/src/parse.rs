//! Parsing of incoming NGSI-LD documents (normalized or concise) into the
//! model, expanding every term through the request's JSON-LD context.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;

use crate::entity::{AttrExtra, AttrValue, Attribute, Entity, InstanceList, Iri, iri};
use crate::error::{NgsiError, NgsiResult};
use crate::json::JsonDoc;
use crate::time::parse_datetime;

/// Expansion and compaction of terms, implemented by the JSON-LD context of a
/// request. The model never needs more of JSON-LD than this.
pub trait Terms: Send + Sync {
    /// Expands a term (attribute name, type name, vocab value) to its IRI.
    fn expand<'a>(&'a self, term: &'a str) -> Cow<'a, str>;
    /// Compacts an IRI to the shortest term of the context.
    fn compact<'a>(&'a self, iri: &'a str) -> Cow<'a, str>;
    /// Expands a term to its interned IRI (see [`iri`]); contexts may
    /// remember the answer.
    fn expand_iri(&self, term: &str) -> Iri {
        iri(&self.expand(term))
    }
}

/// Terms of the core context only: everything unknown goes to the default
/// vocabulary. Used by tests and as a fallback.
#[derive(Debug, Default, Clone, Copy)]
pub struct DefaultVocab;

/// The `@vocab` of the NGSI-LD core context.
pub const DEFAULT_VOCAB: &str = "https://uri.etsi.org/ngsi-ld/default-context/";

impl Terms for DefaultVocab {
    fn expand<'a>(&'a self, term: &'a str) -> Cow<'a, str> {
        match term {
            "location" | "observationSpace" | "operationSpace" => {
                Cow::Owned(format!("https://uri.etsi.org/ngsi-ld/{term}"))
            }
            _ if is_absolute_iri(term) => Cow::Borrowed(term),
            _ => Cow::Owned(format!("{DEFAULT_VOCAB}{term}")),
        }
    }

    fn compact<'a>(&'a self, iri: &'a str) -> Cow<'a, str> {
        if let Some(rest) = iri.strip_prefix(DEFAULT_VOCAB) {
            return Cow::Borrowed(rest);
        }
        match iri {
            "https://uri.etsi.org/ngsi-ld/location" => Cow::Borrowed("location"),
            "https://uri.etsi.org/ngsi-ld/observationSpace" => Cow::Borrowed("observationSpace"),
            "https://uri.etsi.org/ngsi-ld/operationSpace" => Cow::Borrowed("operationSpace"),
            _ => Cow::Borrowed(iri),
        }
    }
}

/// How to parse an untrusted document.
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    /// The deepest nesting of sub-attributes accepted.
    pub max_sub_attr_depth: usize,
    /// Whether the NGSI-LD Null (`urn:ngsi-ld:null`) may appear: only in
    /// merge and partial-update patches (clause 5.5.8, 5.5.12).
    pub allow_null: bool,
    /// Whether a Property may lack its value (only metadata and
    /// sub-attributes given): only in Merge Entity, where such a fragment
    /// merges into the instance it names (clause 5.6.17). It parses to
    /// the value JSON `null`, which no document can give
    /// ([`Attribute::is_valueless`]).
    pub allow_valueless: bool,
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self {
            max_sub_attr_depth: 16,
            allow_null: false,
            allow_valueless: false,
        }
    }
}

impl ParseLimits {
    /// The options for merge-patch documents, where NGSI-LD Null deletes.
    pub fn patch() -> Self {
        Self {
            allow_null: true,
            ..Self::default()
        }
    }

    /// The options for Merge Entity fragments: a patch whose Properties
    /// may lack their value.
    pub fn merge() -> Self {
        Self {
            allow_valueless: true,
            ..Self::patch()
        }
    }
}

/// What a document must contain to be accepted.
#[derive(Debug, Clone, Copy, Default)]
pub struct EntityRequirements {
    /// The document must carry an `id`.
    pub id: bool,
    /// The document must carry a `type`.
    pub types: bool,
}

/// Members of an entity that are not attributes.
const ENTITY_MEMBERS: &[&str] = &[
    "id",
    "@id",
    "type",
    "@type",
    "scope",
    "@context",
    "createdAt",
    "modifiedAt",
    "deletedAt",
    "expiresAt",
];

/// Members of an attribute that are not sub-attributes.
const ATTRIBUTE_MEMBERS: &[&str] = &[
    "type",
    "value",
    "object",
    "objectType",
    "languageMap",
    "json",
    "vocab",
    "valueList",
    "objectList",
    "datasetId",
    "observedAt",
    "unitCode",
    "createdAt",
    "modifiedAt",
    "deletedAt",
    "instanceId",
    "lang",
    "@context",
    "previousValue",
    "previousObject",
    "valueType",
    "expiresAt",
];

/// The member that carries the value of each attribute kind.
const VALUE_MEMBER: &[(&str, &str)] = &[
    ("Property", "value"),
    ("GeoProperty", "value"),
    ("Relationship", "object"),
    ("LanguageProperty", "languageMap"),
    ("JsonProperty", "json"),
    ("VocabProperty", "vocab"),
    ("ListProperty", "valueList"),
    ("ListRelationship", "objectList"),
];

/// Whether attributes of `kind` cannot have a `unitCode`.
fn is_unitless(kind: &str) -> bool {
    matches!(
        kind,
        "Relationship" | "LanguageProperty" | "JsonProperty" | "ListRelationship"
    )
}

/// Refuses the members that an attribute of `kind` shall never include
/// (clauses 4.5.2.2, 4.5.3.2, 4.5.18 to 4.5.24): the value members of the
/// other kinds, the output-only `previous*` members, the sealed members
/// outside `ngsildproof`, a `unitCode` on kinds without units, and a
/// LanguageProperty `valueType` other than `langString`.
fn check_members<J: JsonDoc>(m: &J, kind: &str, name: &str) -> NgsiResult<()> {
    let own = VALUE_MEMBER
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, v)| *v);
    let refuse = |member: &str| {
        Err(NgsiError::bad_data(format!(
            "attribute {name}: a {kind} cannot have a {member} member"
        )))
    };
    for (member, value) in m.members() {
        let foreign_value = VALUE_MEMBER
            .iter()
            .any(|(_, v)| *v == member && Some(member) != own);
        let unitless = member == "unitCode" && is_unitless(kind);
        let sealed =
            matches!(member, "entityIdSealed" | "entityTypeSealed") && name != "ngsildproof";
        let output_only = matches!(
            member,
            "previousValue"
                | "previousObject"
                | "previousLanguageMap"
                | "previousJson"
                | "previousVocab"
                | "previousValueList"
                | "previousObjectList"
        );
        if foreign_value || unitless || sealed || output_only {
            return refuse(member);
        }
        if member == "valueType"
            && kind == "LanguageProperty"
            && value.as_str() != Some("langString")
        {
            return Err(NgsiError::bad_data(format!(
                "attribute {name}: the valueType of a LanguageProperty must be langString"
            )));
        }
    }
    if name == "ngsildproof" {
        // Its value is the proof object and the sealed members are strings
        // (clause 4.5.2.2).
        let proof_ok = m.get("value").is_none_or(|v| v.is_object());
        let sealed_ok = ["entityIdSealed", "entityTypeSealed"]
            .iter()
            .all(|k| m.get(k).is_none_or(|v| v.as_str().is_some()));
        if !proof_ok || !sealed_ok {
            return Err(NgsiError::bad_data(
                "attribute ngsildproof: the value must be a proof object and the sealed members strings",
            ));
        }
    }
    Ok(())
}

/// Checks a datasetId a client names: a URI, or `@none` for the default
/// instance (clause 4.5.5).
pub fn check_dataset_id(d: &str) -> NgsiResult<()> {
    if d == "@none" || is_absolute_iri(d) {
        Ok(())
    } else {
        Err(NgsiError::bad_data(format!(
            "datasetId {d:?} is neither a URI nor @none"
        )))
    }
}

/// Whether `s` is an absolute IRI (a scheme followed by a colon and at least
/// one further character, with no characters that IRIs forbid).
pub fn is_absolute_iri(s: &str) -> bool {
    let Some(colon) = s.find(':') else {
        return false;
    };
    if s.is_ascii() {
        // The common case, byte by byte: an ASCII IRI has no invisible
        // characters, only the controls and the forbidden ASCII ones.
        let scheme = &s.as_bytes()[..colon];
        return scheme.first().is_some_and(u8::is_ascii_alphabetic)
            && scheme[1..]
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
            && colon + 1 < s.len()
            && !s.bytes().any(|c| IRI_FORBIDDEN[c as usize]);
    }
    is_absolute_iri_by_char(s, colon)
}

/// The ASCII bytes that an IRI cannot hold: controls, space, DEL and
/// `<>"{}|\\^\``.
static IRI_FORBIDDEN: [bool; 128] = {
    let mut table = [false; 128];
    let mut i = 0;
    while i <= b' ' as usize {
        table[i] = true;
        i += 1;
    }
    table[0x7f] = true;
    let forbidden = b"<>\"{}|\\^`";
    let mut j = 0;
    while j < forbidden.len() {
        table[forbidden[j] as usize] = true;
        j += 1;
    }
    table
};

/// [`is_absolute_iri`] char by char, for any text (`colon`: the first one).
fn is_absolute_iri_by_char(s: &str, colon: usize) -> bool {
    let scheme = &s[..colon];
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    first_ok
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && colon + 1 < s.len()
        && !s.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || is_invisible(c)
                || matches!(c, '<' | '>' | '"' | '{' | '}' | '|' | '\\' | '^' | '`')
        })
}

/// Characters that render as nothing or reorder text: an id holding one can
/// look like another id (zero-width and bidirectional controls, BOM,
/// variation selectors, fillers, noncharacters).
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{115F}' | '\u{1160}' | '\u{180E}' | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{2800}' | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}'
        | '\u{FDD0}'..='\u{FDEF}' | '\u{E0000}'..='\u{E0FFF}')
        || (c as u32 & 0xFFFE) == 0xFFFE
}

/// Whether `name` may be used as an entity type or attribute name (clause
/// 4.6.2): a full IRI, a compact IRI `prefix:term`, or a term that starts
/// with a letter followed by letters, digits or underscores.
pub fn is_valid_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 1024 {
        return false;
    }
    if name.contains(':') {
        // A compact IRI or an absolute IRI.
        return is_absolute_iri(name);
    }
    if name.is_ascii() {
        let bytes = name.as_bytes();
        return bytes[0].is_ascii_alphabetic()
            && bytes[1..]
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'_');
    }
    is_valid_term_by_char(name)
}

/// The term rule of [`is_valid_name`] char by char, for any text.
fn is_valid_term_by_char(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(char::is_alphabetic) && chars.all(|c| c.is_alphanumeric() || c == '_')
}

/// Names that the core context reserves for members of entities and
/// attributes; they cannot name attributes (clause 4.6.2).
const RESERVED_NAMES: &[&str] = &[
    "id",
    "type",
    "value",
    "object",
    "objectType",
    "languageMap",
    "json",
    "vocab",
    "valueList",
    "objectList",
    "datasetId",
    "instanceId",
    "observedAt",
    "unitCode",
    "createdAt",
    "modifiedAt",
    "deletedAt",
    "lang",
    "valueType",
    "expiresAt",
    "scope",
    "@context",
];

/// Whether `s` is a valid scope (clause 4.18): `/level(/level)*` where a
/// level is a letter followed by letters, digits or underscores.
pub fn is_valid_scope(s: &str) -> bool {
    s.strip_prefix('/').is_some_and(|rest| {
        rest.split('/').all(|seg| {
            let mut chars = seg.chars();
            chars.next().is_some_and(char::is_alphabetic)
                && chars.all(|c| c.is_alphanumeric() || c == '_')
        })
    })
}

/// Whether `s` is an NGSI-LD DateTime: ISO 8601 in UTC with the mandatory
/// trailing `Z` (clause 4.6.3).
pub fn is_datetime(s: &str) -> bool {
    s.ends_with('Z') && parse_datetime(s).is_some()
}

fn expand_name(terms: &dyn Terms, name: &str, what: &str) -> NgsiResult<Iri> {
    if !is_valid_name(name)
        || (what != "entity type" && RESERVED_NAMES.contains(&name))
        || name == "type"
    {
        return Err(NgsiError::bad_data(format!("invalid {what} name {name:?}")));
    }
    Ok(terms.expand_iri(name))
}

/// Parses the `type` member of an entity: a name or a non-empty array.
pub fn parse_types<J: JsonDoc>(v: &J, terms: &dyn Terms) -> NgsiResult<Vec<Iri>> {
    let mut out = Vec::new();
    match (v.as_str(), v.as_array()) {
        (Some(s), _) => out.push(expand_name(terms, s, "entity type")?),
        (_, Some(items)) if !items.is_empty() => {
            let mut expanded = Vec::with_capacity(items.len());
            for item in items {
                let Some(s) = item.as_str() else {
                    return Err(NgsiError::bad_data(
                        "entity type must be a string or an array of strings",
                    ));
                };
                expanded.push(expand_name(terms, s, "entity type")?);
            }
            crate::entity::extend_unique(&mut out, expanded);
        }
        _ => {
            return Err(NgsiError::bad_data(
                "entity type must be a string or an array of strings",
            ));
        }
    }
    Ok(out)
}

fn parse_scopes<J: JsonDoc>(v: &J) -> NgsiResult<Vec<Box<str>>> {
    let check = |s: &str| -> NgsiResult<Box<str>> {
        if is_valid_scope(s) {
            Ok(s.into())
        } else {
            Err(NgsiError::bad_data(format!("invalid scope {s:?}")))
        }
    };
    match (v.as_str(), v.as_array()) {
        (Some(s), _) => Ok(vec![check(s)?]),
        (_, Some(items)) => items
            .iter()
            .map(|i| match i.as_str() {
                Some(s) => check(s),
                None => Err(NgsiError::bad_data(
                    "scope must be a string or an array of strings",
                )),
            })
            .collect(),
        _ => Err(NgsiError::bad_data(
            "scope must be a string or an array of strings",
        )),
    }
}

/// Parses an entity document (normalized or concise). `@context` is ignored
/// here: the caller resolved it into `terms` already.
pub fn parse_entity<J: JsonDoc>(
    doc: &J,
    terms: &dyn Terms,
    req: EntityRequirements,
    limits: ParseLimits,
) -> NgsiResult<Entity> {
    if !doc.is_object() {
        return Err(NgsiError::bad_data("an entity must be a JSON object"));
    }
    let id = match doc.get("id").or_else(|| doc.get("@id")).map(|v| v.as_str()) {
        Some(Some(s)) if is_absolute_iri(s) && s != crate::entity::core_iri::NULL => s.into(),
        Some(Some(s)) => {
            return Err(NgsiError::bad_data(format!("entity id {s:?} is not a URI")));
        }
        Some(None) => return Err(NgsiError::bad_data("entity id must be a string")),
        None if req.id => return Err(NgsiError::bad_data("entity id is missing")),
        None => "".into(),
    };
    let types = match doc.get("type").or_else(|| doc.get("@type")) {
        Some(v) => parse_types(v, terms)?,
        None if req.types => return Err(NgsiError::bad_data("entity type is missing")),
        None => Vec::new(),
    };
    let scopes = match doc.get("scope") {
        // In a merge patch the Null asks to delete the scopes; it stays in
        // the patch as the only scope so that the merge can see it.
        Some(v) if limits.allow_null && v.as_str() == Some(crate::entity::core_iri::NULL) => {
            vec![crate::entity::core_iri::NULL.into()]
        }
        Some(v) => parse_scopes(v)?,
        None => Vec::new(),
    };
    let expires_at = match doc.get("expiresAt") {
        Some(v) => Some(parse_expiry(v, limits, "the entity")?),
        None => None,
    };
    let attrs = parse_attributes(doc.members(), terms, limits)?;
    Ok(Entity {
        id,
        types,
        scopes,
        attrs,
        created_at: 0,
        modified_at: 0,
        expires_at,
    })
}

/// An `expiresAt` member (clause 4.22): a DateTime, kept as written, or in
/// a merge patch the NGSI-LD Null, which asks to remove it.
fn parse_expiry<J: JsonDoc>(v: &J, limits: ParseLimits, of: &str) -> NgsiResult<Arc<str>> {
    match v.as_str() {
        Some(s) if is_datetime(s) => Ok(crate::time::normalize_datetime(s).into()),
        Some(s) if limits.allow_null && s == crate::entity::core_iri::NULL => Ok(s.into()),
        _ => Err(NgsiError::bad_data(format!(
            "expiresAt of {of} must be a DateTime"
        ))),
    }
}

/// Parses the attributes of an entity or an entity fragment, skipping the
/// entity-level members (id, type, scope, @context, system attributes).
pub fn parse_attributes<'a, J: JsonDoc + 'a>(
    members: impl Iterator<Item = (&'a str, &'a J)>,
    terms: &dyn Terms,
    limits: ParseLimits,
) -> NgsiResult<Vec<(Iri, InstanceList)>> {
    // Both documents' member iterators know their length.
    let count = members.size_hint().0;
    let mut attrs: Vec<(Iri, InstanceList)> = Vec::with_capacity(count);
    let mut places = crate::update::Places::new(&attrs, count, crate::update::attr_name);
    for (name, value) in members {
        if ENTITY_MEMBERS.contains(&name) {
            continue;
        }
        let expanded = expand_name(terms, name, "attribute")?;
        let instances = parse_attribute(name, value, terms, limits)?;
        match places.find(&attrs, &expanded) {
            // Two terms that expand to the same IRI: merge their instances.
            Some(i) => attrs[i].1.extend(instances),
            None => places.push(&mut attrs, (expanded, instances.into())),
        }
    }
    for (name, instances) in &attrs {
        check_instances(name, instances, limits)?;
    }
    Ok(attrs)
}

fn check_instances(name: &str, instances: &[Attribute], limits: ParseLimits) -> NgsiResult<()> {
    if has_repeated_dataset_id(instances) {
        return Err(NgsiError::bad_data(format!(
            "attribute {name} has two instances with the same datasetId"
        )));
    }
    let geo = [
        "https://uri.etsi.org/ngsi-ld/location",
        "https://uri.etsi.org/ngsi-ld/observationSpace",
        "https://uri.etsi.org/ngsi-ld/operationSpace",
    ];
    if geo.contains(&name)
        && instances
            .iter()
            // The NGSI-LD Null of a patch deletes one, whatever its form.
            .any(|a| {
                let deletes = limits.allow_null && crate::update::is_ngsi_null(a);
                !deletes && !matches!(a.value, AttrValue::GeoProperty(_))
            })
    {
        return Err(NgsiError::bad_data(format!(
            "attribute {name} must be a GeoProperty"
        )));
    }
    Ok(())
}

/// Whether two of `instances` have the same datasetId (or both none): by
/// pairs for a few, through a set for many (an attribute may have
/// thousands of instances, and pairs would take the square of that).
pub fn has_repeated_dataset_id(instances: &[Attribute]) -> bool {
    if instances.len() <= 16 {
        return instances
            .iter()
            .enumerate()
            .any(|(i, a)| instances[..i].iter().any(|b| b.dataset_id == a.dataset_id));
    }
    let mut seen = std::collections::HashSet::with_capacity(instances.len());
    !instances
        .iter()
        .all(|a| seen.insert(a.dataset_id.as_deref()))
}

/// Whether `v` is an object that is written as an attribute (it has one of
/// the members that only attributes have).
/// The members that carry the value of an attribute, one per kind
/// (`value` for Property and GeoProperty).
pub const VALUE_MEMBERS: &[&str] = &[
    "value",
    "object",
    "languageMap",
    "json",
    "vocab",
    "valueList",
    "objectList",
];

/// The members of an attribute object that the parser reads, found in one
/// pass over its members rather than one search for each.
struct Slots<'a, J> {
    type_: Option<&'a J>,
    /// The value members, in the order of [`VALUE_MEMBERS`].
    values: [Option<&'a J>; 7],
    object_type: Option<&'a J>,
    dataset_id: Option<&'a J>,
    observed_at: Option<&'a J>,
    unit_code: Option<&'a J>,
    expires_at: Option<&'a J>,
    value_type: Option<&'a J>,
    context: Option<&'a J>,
    coordinates: Option<&'a J>,
    /// A member that [`check_members`] refuses for some kinds or names
    /// whatever the others are (outputs, sealed members, `valueType`).
    odd: bool,
    /// How many members are sub-attributes (not in [`ATTRIBUTE_MEMBERS`]).
    subs: usize,
}

impl<'a, J: JsonDoc> Slots<'a, J> {
    fn of(m: &'a J) -> Self {
        let mut s = Slots {
            type_: None,
            values: [None; 7],
            object_type: None,
            dataset_id: None,
            observed_at: None,
            unit_code: None,
            expires_at: None,
            value_type: None,
            context: None,
            coordinates: None,
            odd: false,
            subs: 0,
        };
        for (member, v) in m.members() {
            match member {
                "type" => s.type_ = Some(v),
                "value" => s.values[0] = Some(v),
                "object" => s.values[1] = Some(v),
                "languageMap" => s.values[2] = Some(v),
                "json" => s.values[3] = Some(v),
                "vocab" => s.values[4] = Some(v),
                "valueList" => s.values[5] = Some(v),
                "objectList" => s.values[6] = Some(v),
                "objectType" => s.object_type = Some(v),
                "datasetId" => s.dataset_id = Some(v),
                "observedAt" => s.observed_at = Some(v),
                "unitCode" => s.unit_code = Some(v),
                "@context" => s.context = Some(v),
                "createdAt" | "modifiedAt" | "deletedAt" | "instanceId" | "lang" => {}
                "expiresAt" => s.expires_at = Some(v),
                "valueType" => {
                    s.value_type = Some(v);
                    s.odd = true;
                }
                "previousValue" | "previousObject" => s.odd = true,
                "coordinates" => {
                    s.coordinates = Some(v);
                    s.subs += 1;
                }
                _ => {
                    s.odd |= member.starts_with("previous") || member.ends_with("Sealed");
                    s.subs += 1;
                }
            }
        }
        s
    }

    /// Whether members that only an attribute instance has are given.
    fn has_instance_members(&self) -> bool {
        self.dataset_id.is_some()
            || self.observed_at.is_some()
            || self.unit_code.is_some()
            || self.expires_at.is_some()
    }

    /// The value member named `member` (one of [`VALUE_MEMBERS`]).
    fn value_member(&self, member: &str) -> Option<&'a J> {
        let i = VALUE_MEMBERS.iter().position(|m| *m == member)?;
        self.values[i]
    }

    /// Whether [`check_members`] could refuse this attribute of `kind`:
    /// when it has a value member of another kind, an odd member, a unit
    /// on a kind without units, or is the proof attribute.
    fn needs_member_check(&self, kind: &str, name: &str) -> bool {
        let own = VALUE_MEMBER
            .iter()
            .find(|(k, _)| *k == kind)
            .and_then(|(_, v)| VALUE_MEMBERS.iter().position(|m| m == v));
        let foreign = self
            .values
            .iter()
            .enumerate()
            .any(|(i, v)| v.is_some() && Some(i) != own);
        self.odd
            || foreign
            || (is_unitless(kind) && self.unit_code.is_some())
            || name == "ngsildproof"
    }
}

fn looks_like_attribute<J: JsonDoc>(v: &J) -> bool {
    v.is_object()
        && ["type", "datasetId"]
            .iter()
            .chain(VALUE_MEMBERS)
            .any(|k| v.get(k).is_some())
}

/// Parses the value of one attribute member: one instance, or an array of
/// instances of a multi-attribute.
pub fn parse_attribute<J: JsonDoc>(
    name: &str,
    value: &J,
    terms: &dyn Terms,
    limits: ParseLimits,
) -> NgsiResult<Vec<Attribute>> {
    match value.as_array() {
        Some(items) if !items.is_empty() && items.iter().all(looks_like_attribute) => items
            .iter()
            .map(|i| parse_instance(name, i, terms, limits, 0))
            .collect(),
        _ => Ok(vec![parse_instance(name, value, terms, limits, 0)?]),
    }
}

/// The GeoJSON geometry types.
pub const GEOJSON_TYPES: &[&str] = &[
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
];

fn kind_of<'a, J: JsonDoc>(m: &Slots<'a, J>, name: &str) -> NgsiResult<&'a str> {
    if let Some(t) = m.type_ {
        let Some(t) = t.as_str() else {
            return Err(NgsiError::bad_data(format!(
                "attribute {name}: type must be a string"
            )));
        };
        let t = t.strip_prefix("https://uri.etsi.org/ngsi-ld/").unwrap_or(t);
        return match t {
            "Property" | "Relationship" | "GeoProperty" | "LanguageProperty" | "JsonProperty"
            | "VocabProperty" | "ListProperty" | "ListRelationship" => Ok(t),
            _ if GEOJSON_TYPES.contains(&t) && m.coordinates.is_some() => Ok("Geometry"),
            _ => Err(NgsiError::bad_data(format!(
                "attribute {name}: unknown attribute type {t:?}"
            ))),
        };
    }
    // Concise form: the kind follows from the member that carries the value;
    // a value that is a GeoJSON geometry makes a GeoProperty.
    if let Some(v) = m.values[0]
        && v.get("type")
            .and_then(J::as_str)
            .is_some_and(|t| GEOJSON_TYPES.contains(&t))
        && v.get("coordinates").is_some()
    {
        return Ok("GeoProperty");
    }
    // The first value member given names the kind (`value`: Property).
    let given = m.values.iter().position(Option::is_some);
    // An object with an instance's members (a datasetId, observedAt, ...)
    // but no value member is a Property that lacks its value, not a
    // compound value: read as a value it would overwrite the wrong instance
    // with its own metadata (a compound value must be written
    // `{"value": {...}}` in concise form).
    if given.is_none() && m.has_instance_members() {
        return Ok("Property");
    }
    Ok(given
        .and_then(|i| VALUE_MEMBER.iter().find(|(_, v)| *v == VALUE_MEMBERS[i]))
        .map_or("CompoundValue", |(kind, _)| kind))
}

fn require<'a, J: JsonDoc>(
    m: &Slots<'a, J>,
    member: &str,
    name: &str,
    kind: &str,
) -> NgsiResult<&'a J> {
    match m.value_member(member) {
        Some(v) if !v.is_null() => Ok(v),
        _ => Err(NgsiError::bad_data(format!(
            "attribute {name}: a {kind} needs a non-null {member}"
        ))),
    }
}

fn parse_uri_value<J: JsonDoc>(v: &J, name: &str) -> NgsiResult<Value> {
    let uri = |i: &J| i.as_str().is_some_and(is_absolute_iri);
    match v.as_array() {
        None if uri(v) => Ok(v.to_value()),
        Some(items) if !items.is_empty() && items.iter().all(uri) => Ok(v.to_value()),
        _ => Err(NgsiError::bad_data(format!(
            "attribute {name}: a relationship object must be a URI or an array of URIs"
        ))),
    }
}

fn expand_vocab<J: JsonDoc>(v: &J, terms: &dyn Terms, name: &str) -> NgsiResult<Value> {
    match (v.as_str(), v.as_array()) {
        (Some(s), _) => Ok(Value::String(terms.expand(s).into_owned())),
        (_, Some(items)) if !items.is_empty() => items
            .iter()
            .map(|i| expand_vocab(i, terms, name))
            .collect::<NgsiResult<Vec<_>>>()
            .map(Value::Array),
        _ => Err(NgsiError::bad_data(format!(
            "attribute {name}: vocab must be a string or an array of strings"
        ))),
    }
}

/// Validates the shape of a GeoJSON geometry (deeper checks, such as closed
/// rings, belong to the geo layer).
pub fn check_geometry(v: &Value) -> Result<(), String> {
    let Value::Object(m) = v else {
        return Err("a geometry must be a GeoJSON object".into());
    };
    let Some(Value::String(t)) = m.get("type") else {
        return Err("a geometry needs a type".into());
    };
    if !GEOJSON_TYPES.contains(&t.as_str()) {
        return Err(format!("unknown geometry type {t:?}"));
    }
    let depth = match t.as_str() {
        "Point" => 0,
        "MultiPoint" | "LineString" => 1,
        "MultiLineString" | "Polygon" => 2,
        _ => 3,
    };
    fn positions(v: &Value, depth: usize) -> bool {
        match v {
            Value::Array(items) if depth == 0 => {
                (2..=3).contains(&items.len())
                    && items.iter().all(|n| n.as_f64().is_some_and(f64::is_finite))
                    && items[0]
                        .as_f64()
                        .is_some_and(|x| (-180.0..=180.0).contains(&x))
                    && items[1]
                        .as_f64()
                        .is_some_and(|y| (-90.0..=90.0).contains(&y))
            }
            Value::Array(items) => {
                !items.is_empty() && items.iter().all(|i| positions(i, depth - 1))
            }
            _ => false,
        }
    }
    match m.get("coordinates") {
        Some(c) if positions(c, depth) => Ok(()),
        _ => Err(format!("invalid coordinates for a {t}")),
    }
}

fn parse_instance<J: JsonDoc>(
    name: &str,
    value: &J,
    terms: &dyn Terms,
    limits: ParseLimits,
    depth: usize,
) -> NgsiResult<Attribute> {
    if depth > limits.max_sub_attr_depth {
        return Err(NgsiError::bad_data(format!(
            "attribute {name}: sub-attributes nested too deeply"
        )));
    }
    if value.is_null() {
        return Err(NgsiError::bad_data(format!(
            "attribute {name}: null is not a valid value"
        )));
    }
    if !value.is_object() {
        // Concise form of a Property: the bare value. The NGSI-LD Null
        // deletes only in a patch (clause 5.5.4).
        let value = value.to_value();
        if !limits.allow_null && json_has_null(&value) {
            return Err(NgsiError::bad_data(format!(
                "attribute {name}: the NGSI-LD Null is only allowed in merge and partial updates"
            )));
        }
        return Ok(Attribute::new(AttrValue::Property(value)));
    }
    let doc = value;
    let m = &Slots::of(doc);
    let kind = kind_of(m, name)?;
    if kind != "CompoundValue" && kind != "Geometry" && m.needs_member_check(kind, name) {
        check_members(doc, kind, name)?;
    }
    let mut consumed_value = true;
    let value = match kind {
        "Property" if limits.allow_valueless && m.value_member("value").is_none() => {
            AttrValue::Property(Value::Null)
        }
        "Property" => AttrValue::Property(require(m, "value", name, kind)?.to_value()),
        "Relationship" => AttrValue::Relationship {
            object: parse_uri_value(require(m, "object", name, kind)?, name)?,
            object_type: match m.object_type {
                Some(v) => Some(expand_vocab(v, terms, name)?),
                None => None,
            },
        },
        "GeoProperty" => {
            let g = require(m, "value", name, kind)?;
            if limits.allow_null && g.as_str() == Some(crate::entity::core_iri::NULL) {
                AttrValue::GeoProperty(g.to_value())
            } else {
                // A geometry may arrive encoded as a JSON string (clause 4.7.2).
                let g = match g.as_str() {
                    Some(s) => serde_json::from_str(s).map_err(|_| {
                        NgsiError::bad_data(format!(
                            "attribute {name}: the geometry string is not GeoJSON"
                        ))
                    })?,
                    None => g.to_value(),
                };
                check_geometry(&g)
                    .map_err(|e| NgsiError::bad_data(format!("attribute {name}: {e}")))?;
                AttrValue::GeoProperty(g)
            }
        }
        "Geometry" => {
            let g = doc.to_value();
            check_geometry(&g)
                .map_err(|e| NgsiError::bad_data(format!("attribute {name}: {e}")))?;
            return Ok(Attribute::new(AttrValue::GeoProperty(g)));
        }
        "LanguageProperty" => match require(m, "languageMap", name, kind)?.to_value() {
            Value::Object(map)
                if map.iter().all(|(k, v)| {
                    is_language_tag(k)
                        && match v {
                            Value::String(_) => true,
                            Value::Array(a) => a.iter().all(Value::is_string),
                            _ => false,
                        }
                }) =>
            {
                AttrValue::LanguageProperty(map)
            }
            _ => {
                return Err(NgsiError::bad_data(format!(
                    "attribute {name}: languageMap must map language tags to strings"
                )));
            }
        },
        "JsonProperty" => {
            // A raw JSON object or an array of objects (clause 4.5.24).
            let j = require(m, "json", name, kind)?;
            let null = limits.allow_null && j.as_str() == Some(crate::entity::core_iri::NULL);
            let objects = j.is_object() || j.as_array().is_some_and(|a| a.iter().all(J::is_object));
            if !null && !objects {
                return Err(NgsiError::bad_data(format!(
                    "attribute {name}: json must be a JSON object or an array of objects"
                )));
            }
            AttrValue::JsonProperty(j.to_value())
        }
        "VocabProperty" => {
            AttrValue::VocabProperty(expand_vocab(require(m, "vocab", name, kind)?, terms, name)?)
        }
        "ListProperty" => match require(m, "valueList", name, kind)?.as_array() {
            Some(items) => AttrValue::ListProperty(items.iter().map(J::to_value).collect()),
            None => {
                return Err(NgsiError::bad_data(format!(
                    "attribute {name}: valueList must be an array"
                )));
            }
        },
        "ListRelationship" => match require(m, "objectList", name, kind)?.as_array() {
            Some(items) => {
                let mut objects = Vec::with_capacity(items.len());
                for item in items {
                    let target = match item.is_object() {
                        true => item.get("object").and_then(J::as_str),
                        false => item.as_str(),
                    };
                    match target {
                        Some(s) if is_absolute_iri(s) => objects.push(Value::String(s.into())),
                        _ => {
                            return Err(NgsiError::bad_data(format!(
                                "attribute {name}: objectList must hold URIs"
                            )));
                        }
                    }
                }
                AttrValue::ListRelationship {
                    objects,
                    object_type: match m.object_type {
                        Some(v) => Some(expand_vocab(v, terms, name)?),
                        None => None,
                    },
                }
            }
            None => {
                return Err(NgsiError::bad_data(format!(
                    "attribute {name}: objectList must be an array"
                )));
            }
        },
        _ => {
            // A JSON object without any attribute member: in concise form this
            // is a Property whose value is the object itself.
            consumed_value = false;
            if doc.member_count() == 0 {
                return Err(NgsiError::bad_data(format!(
                    "attribute {name}: an empty object is not an attribute"
                )));
            }
            AttrValue::Property(doc.to_value())
        }
    };
    if !limits.allow_null && value_has_null(&value) {
        return Err(NgsiError::bad_data(format!(
            "attribute {name}: the NGSI-LD Null is only allowed in merge and partial updates"
        )));
    }
    let mut attr = Attribute::new(value);
    if !consumed_value {
        return Ok(attr);
    }
    if m.context.is_some() {
        return Err(NgsiError::bad_data(format!(
            "attribute {name}: an attribute cannot carry its own @context"
        )));
    }
    if let Some(d) = m.dataset_id {
        match d.as_str() {
            // "@none" names the default instance (clause 4.5.5).
            Some("@none") => {}
            // A datasetId cannot be deleted with the NGSI-LD Null (clause 5.5.8).
            Some(s) if is_absolute_iri(s) && s != crate::entity::core_iri::NULL => {
                attr.dataset_id = Some(crate::entity::shared_text(s))
            }
            _ => {
                return Err(NgsiError::bad_data(format!(
                    "attribute {name}: datasetId must be a URI"
                )));
            }
        }
    }
    if let Some(o) = m.observed_at {
        match o.as_str() {
            // The Null deletes it in a patch (clause 5.5.8).
            Some(s) if limits.allow_null && s == crate::entity::core_iri::NULL => {
                attr.observed_at = Some(s.into())
            }
            Some(s) if is_datetime(s) => {
                attr.observed_at = Some(crate::time::normalize_datetime(s).into())
            }
            _ => {
                return Err(NgsiError::bad_data(format!(
                    "attribute {name}: observedAt must be a DateTime"
                )));
            }
        }
    }
    if let Some(u) = m.unit_code {
        match u.as_str() {
            Some(s)
                if !s.is_empty() && (limits.allow_null || s != crate::entity::core_iri::NULL) =>
            {
                attr.unit_code = Some(s.into())
            }
            _ => {
                return Err(NgsiError::bad_data(format!(
                    "attribute {name}: unitCode must be a string"
                )));
            }
        }
    }
    if m.expires_at.is_some() || m.value_type.is_some() {
        let expires_at = match m.expires_at {
            Some(v) => Some(parse_expiry(v, limits, &format!("attribute {name}"))?),
            None => None,
        };
        let value_type = match m.value_type.map(|v| v.as_str()) {
            // A datatype IRI, coerced as `@vocab` (the core context).
            Some(Some(s)) if !s.is_empty() => Some(terms.expand(s).into()),
            Some(_) => {
                return Err(NgsiError::bad_data(format!(
                    "attribute {name}: valueType must be a string"
                )));
            }
            None => None,
        };
        attr.extra = AttrExtra {
            expires_at,
            value_type,
        }
        .boxed();
    }
    if m.subs == 0 {
        return Ok(attr);
    }
    for (sub_name, sub_value) in doc.members() {
        if ATTRIBUTE_MEMBERS.contains(&sub_name) {
            continue;
        }
        let expanded = expand_name(terms, sub_name, "sub-attribute")?;
        let sub = parse_instance(sub_name, sub_value, terms, limits, depth + 1)?;
        attr.sub.push((expanded, sub));
    }
    Ok(attr)
}

/// Whether `s` looks like a BCP 47 language tag (or `@none`).
pub fn is_language_tag(s: &str) -> bool {
    s == "@none"
        || (!s.is_empty()
            && s.len() <= 35
            && s.split('-').all(|p| {
                !p.is_empty() && p.len() <= 8 && p.chars().all(|c| c.is_ascii_alphanumeric())
            }))
}

/// Whether the NGSI-LD Null appears anywhere in `v`.
pub fn json_has_null(v: &Value) -> bool {
    match v {
        Value::String(s) => s == crate::entity::core_iri::NULL,
        Value::Array(items) => items.iter().any(json_has_null),
        Value::Object(m) => m.values().any(json_has_null),
        _ => false,
    }
}

fn value_has_null(v: &AttrValue) -> bool {
    match v {
        AttrValue::Property(v) | AttrValue::GeoProperty(v) | AttrValue::VocabProperty(v) => {
            json_has_null(v)
        }
        AttrValue::JsonProperty(_) => false,
        AttrValue::Relationship { object, .. } => json_has_null(object),
        AttrValue::LanguageProperty(m) => m.values().any(json_has_null),
        AttrValue::ListProperty(items) | AttrValue::ListRelationship { objects: items, .. } => {
            items.iter().any(json_has_null)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass reading of an attribute's members agrees with the lists
    /// that the rest of the parser keeps: the attribute members are never
    /// sub-attributes, anything else is, and every member that
    /// `check_members` refuses for some kind sends it to that check.
    #[test]
    fn slots_agree_with_the_member_lists() {
        for member in ATTRIBUTE_MEMBERS {
            let doc = serde_json::json!({ *member: 1 });
            assert_eq!(Slots::of(&doc).subs, 0, "{member}");
        }
        for member in ["coordinates", "speed", "previousJson", "entityIdSealed"] {
            let doc = serde_json::json!({ member: 1 });
            assert_eq!(Slots::of(&doc).subs, 1, "{member}");
        }
        let refused = [
            "previousValue",
            "previousObject",
            "previousLanguageMap",
            "previousJson",
            "previousVocab",
            "previousValueList",
            "previousObjectList",
            "entityIdSealed",
            "entityTypeSealed",
            "valueType",
        ];
        for member in refused.iter().chain(VALUE_MEMBERS) {
            let doc = serde_json::json!({"vocab": "x", *member: 1});
            let slots = Slots::of(&doc);
            assert!(
                slots.needs_member_check("VocabProperty", "a") || *member == "vocab",
                "{member}"
            );
        }
        let plain = serde_json::json!({"type": "Property", "value": 1, "unitCode": "C"});
        assert!(!Slots::of(&plain).needs_member_check("Property", "a"));
        assert!(Slots::of(&plain).needs_member_check("Relationship", "a"));
    }

    /// Terms that expand to one IRI merge their instances, however many
    /// attributes come between (past a few, they are found by a map).
    #[test]
    fn terms_of_one_iri_merge_among_many_attributes() {
        for count in [3usize, 40, 200] {
            let mut doc = serde_json::Map::new();
            for i in 0..count {
                doc.insert(
                    format!("a{i}"),
                    serde_json::json!({"type": "Property", "value": i, "datasetId": "urn:d:1"}),
                );
            }
            // The IRI of the first term, given last, with another datasetId.
            doc.insert(
                format!("{DEFAULT_VOCAB}a0"),
                serde_json::json!({"type": "Property", "value": -1, "datasetId": "urn:d:2"}),
            );
            let doc = serde_json::Value::Object(doc);
            let attrs =
                parse_attributes(doc_members(&doc), &DefaultVocab, ParseLimits::default()).unwrap();
            assert_eq!(attrs.len(), count, "{count}");
            assert_eq!(&*attrs[0].0, format!("{DEFAULT_VOCAB}a0"));
            assert_eq!(attrs[0].1.len(), 2, "{count}");
            // The same datasetId twice under one IRI is refused.
            let mut doc = doc;
            doc[format!("{DEFAULT_VOCAB}a0")]["datasetId"] = "urn:d:1".into();
            assert!(
                parse_attributes(doc_members(&doc), &DefaultVocab, ParseLimits::default()).is_err()
            );
        }
    }

    fn doc_members(doc: &serde_json::Value) -> impl Iterator<Item = (&str, &serde_json::Value)> {
        doc.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str(), v))
    }

    proptest::proptest! {
        /// The set and the pairs agree on either side of the threshold.
        #[test]
        fn repeated_dataset_ids_are_found_at_any_count(
            ids in proptest::collection::vec(proptest::option::of(0u8..40), 0..40),
        ) {
            let instances: Vec<Attribute> = ids
                .iter()
                .map(|d| {
                    let mut a = Attribute::new(AttrValue::Property(serde_json::Value::Null));
                    a.dataset_id = d.map(|d| format!("urn:d:{d}").into());
                    a
                })
                .collect();
            let by_pairs = ids.iter().enumerate().any(|(i, a)| ids[..i].contains(a));
            proptest::prop_assert_eq!(has_repeated_dataset_id(&instances), by_pairs);
        }
    }
    use proptest::prelude::*;

    #[test]
    fn absolute_iris() {
        for ok in [
            "urn:ngsi-ld:Road:1",
            "https://example.org/a?b=c#d",
            "x+y.z-1:a",
        ] {
            assert!(is_absolute_iri(ok), "{ok}");
        }
        for bad in [
            "",
            "urn",
            "urn:",
            ":a",
            "1a:b",
            "urn:a b",
            "urn:a\tb",
            "urn:a<b",
            "urn:a\u{7f}",
            "urn:a\u{200B}",
        ] {
            assert!(!is_absolute_iri(bad), "{bad:?}");
        }
    }

    proptest! {
        /// The ASCII fast path agrees with the char-by-char rules.
        #[test]
        fn the_ascii_path_agrees_with_the_char_path(s in "[ -~\t\n\x00\x7f]{0,12}:?[ -~\t\x7f]{0,12}") {
            if let Some(colon) = s.find(':') {
                prop_assert_eq!(is_absolute_iri(&s), is_absolute_iri_by_char(&s, colon));
            } else {
                prop_assert!(!is_absolute_iri(&s));
            }
        }

        /// The same for terms.
        #[test]
        fn the_ascii_term_path_agrees_with_the_char_path(s in "[ -9;-~\t\x00\x7f]{1,12}") {
            prop_assert_eq!(is_valid_name(&s), is_valid_term_by_char(&s));
        }
    }
}
