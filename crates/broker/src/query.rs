//! Query Entities (clause 5.7.2), its parameters, the view options shared
//! with Retrieve Entity, and Purge Entities (clause 5.6.21).

use std::sync::Arc;

use ngsi_geo::GeoQuery;
use ngsi_model::render::Format;
use ngsi_model::{AttrValue, Entity, Iri, NgsiError, NgsiResult, Terms, iri};
use ngsi_query::{Query, ScopeQuery, TypeExpr};
use regex::Regex;
use serde_json::Value;
use store::attr_index::{Condition, IndexKey, IndexedCondition};
use store::{Change, Next, Op, Page, Selection};

use crate::target::{EntityTarget, LinkedTarget, Lookup};
use crate::{Broker, Ctx};

/// The URL parameters of POST /entityOperations/query: paging and view;
/// the selection is the body's.
pub const POST_QUERY_PARAMS: &[&str] = &[
    "limit",
    "offset",
    "count",
    "options",
    "format",
    "local",
    "lang",
    "orderBy",
    "orderFrom",
    "collation",
];

/// Query parameters as the client wrote them (already percent-decoded).
/// Shared by the HTTP binding and any other front end.
#[derive(Debug, Clone, Default)]
pub struct QueryParams {
    pub id: Option<String>,
    pub id_pattern: Option<String>,
    pub r#type: Option<String>,
    pub attrs: Option<String>,
    pub pick: Option<String>,
    pub omit: Option<String>,
    pub q: Option<String>,
    pub scope_q: Option<String>,
    pub georel: Option<String>,
    pub geometry: Option<String>,
    pub coordinates: Option<String>,
    pub geoproperty: Option<String>,
    pub limit: Option<String>,
    pub offset: Option<String>,
    pub count: Option<String>,
    pub options: Option<String>,
    pub format: Option<String>,
    pub lang: Option<String>,
    pub dataset_id: Option<String>,
    pub keep: Option<String>,
    pub drop: Option<String>,
    pub order_by: Option<String>,
    pub local: Option<String>,
    pub csf: Option<String>,
    pub order_from: Option<String>,
    pub collation: Option<String>,
    pub expand_values: Option<String>,
    /// Attributes whose values are not JSON-LD: never expanded, even when
    /// `expandValues` names them (clause 4.9, Table 6.4.3.2-1).
    pub json_keys: Option<String>,
    /// The geometry type of `orderFrom` (clause 4.23); else inferred from
    /// how deep its coordinates nest.
    pub order_geometry: Option<String>,
    /// Whether entities may be split between places (Table 6.4.3.2-1);
    /// only `false` is offered: each source applies the filters.
    pub split_entities: Option<String>,
}

/// How matched entities are shown: representation and projection.
#[derive(Debug, Clone, Default)]
pub struct ViewOptions {
    /// The representation.
    pub format: Format,
    /// Show createdAt/modifiedAt.
    pub sys_attrs: bool,
    /// The language to pick from LanguageProperties.
    pub lang: Option<String>,
    /// Keep only these attributes (expanded).
    pub attrs: Option<Vec<Iri>>,
    /// `attrs` was given (not only `pick`): Retrieve Entity answers
    /// ResourceNotFound when the entity has none of them.
    pub attrs_given: bool,
    /// Drop these attributes (expanded).
    pub omit: Option<Vec<Iri>>,
    /// Drop the id member (omit=id).
    pub omit_id: bool,
    /// Drop the type member (omit=type).
    pub omit_type: bool,
    /// Drop the scope member (omit=scope, or pick without scope).
    pub omit_scope: bool,
    /// Keep only these instances (`None` inside means the default instance).
    pub dataset_id: Option<Vec<Option<String>>>,
    /// Retrieve only if the entity matches this type expression.
    pub type_filter: Option<TypeExpr>,
    /// Amend each entity to this earlier version of NGSI-LD (clause
    /// 4.3.6.8, `Prefer: ngsi-ld=<version>`); `None` answers in this
    /// broker's own.
    pub version: Option<ngsi_model::compat::Version>,
    /// Linked Entity retrieval (`join`, clause 4.5.23).
    pub join: Option<crate::linked::Join>,
    /// The projections of the Linked Entities reached through the
    /// Relationships that `pick` or `omit` name with braces
    /// (`rel{...}`, clause 4.21): only their projection members are set.
    /// The Linked Entities of other Relationships are shown whole.
    pub linked: Vec<(Iri, ViewOptions)>,
}

/// One entity selector: ids, an id pattern and a type expression, all of
/// which must hold.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub(crate) ids: Option<Vec<Arc<str>>>,
    pub(crate) id_pattern: Option<IdPattern>,
    pub(crate) types: Option<TypeExpr>,
}

impl Selector {
    fn matches(&self, e: &Entity) -> bool {
        self.matches_id_and_types(&e.id, &|name| e.has_type(name))
    }

    /// The id tests first: subscriptions of one type told apart by their
    /// ids (one per district, say) reject most entities on a byte
    /// comparison of the pattern's literal prefix.
    fn matches_id_and_types(&self, id: &str, has_type: &dyn Fn(&str) -> bool) -> bool {
        self.ids
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|i| **i == *id))
            && self.id_pattern.as_ref().is_none_or(|p| p.is_match(id))
            && self.types.as_ref().is_none_or(|t| t.matches_with(has_type))
    }
}

/// An `idPattern` regular expression with the literal prefix every match
/// starts with, checked first: most patterns are `^urn:ngsi-ld:Type:...`,
/// and a byte comparison rejects most ids without running the regex.
#[derive(Debug, Clone)]
pub struct IdPattern {
    regex: Regex,
    prefix: Box<str>,
}

impl IdPattern {
    /// Compiles `pattern`. A quantifier that follows a quantifier (`a**`,
    /// `a+*`) repeats nothing in ECMAScript regular expressions: refused,
    /// although the regex crate would accept it (ETSI 019_03_02).
    pub fn new(pattern: &str) -> Result<Self, regex::Error> {
        if let Some(at) = repeated_quantifier(pattern) {
            return Err(regex::Error::Syntax(format!(
                "nothing to repeat at byte {at}"
            )));
        }
        Ok(Self {
            regex: Regex::new(pattern)?,
            prefix: literal_prefix(pattern).into(),
        })
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        self.regex.as_str()
    }

    /// Whether `id` matches.
    pub fn is_match(&self, id: &str) -> bool {
        id.starts_with(&*self.prefix) && self.regex.is_match(id)
    }
}

/// The byte position of a `*` or `+` that directly follows a quantifier
/// (outside a character class and not escaped), if any. `*?` and `+?`
/// (lazy) are fine.
fn repeated_quantifier(pattern: &str) -> Option<usize> {
    let (mut escaped, mut in_class, mut after_quantifier) = (false, false, false);
    for (i, c) in pattern.char_indices() {
        if escaped {
            escaped = false;
            after_quantifier = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            _ if in_class => {}
            '*' | '+' if after_quantifier => return Some(i),
            '*' | '+' | '}' => {
                after_quantifier = true;
                continue;
            }
            '?' if after_quantifier => {
                // Lazy: the quantifier is complete.
                after_quantifier = false;
                continue;
            }
            '?' => {
                after_quantifier = true;
                continue;
            }
            _ => {}
        }
        after_quantifier = false;
    }
    None
}

/// The literal text that every match of `pattern` starts with: the plain
/// characters after a leading `^`, without one followed by a quantifier.
/// Empty (no prefilter) for patterns with an alternation anywhere or any
/// other start.
fn literal_prefix(pattern: &str) -> String {
    let Some(rest) = pattern.strip_prefix('^') else {
        return String::new();
    };
    if pattern.contains('|') {
        return String::new();
    }
    let mut prefix = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        let plain = c.is_ascii_alphanumeric() || ":_-/@#=,;!~&'%<>\"".contains(c);
        if !plain {
            break;
        }
        if matches!(chars.peek(), Some('*' | '?' | '{')) {
            break;
        }
        prefix.push(c);
    }
    prefix
}

/// A parsed entity query, with every name expanded.
#[derive(Debug, Clone, Default)]
pub struct EntityQuery {
    pub(crate) selectors: Vec<Selector>,
    pub(crate) attrs_filter: Option<Vec<Iri>>,
    pub(crate) q: Option<Query>,
    pub(crate) scope_q: Option<ScopeQuery>,
    pub(crate) geo: Option<(GeoQuery, Iri)>,
    /// Matches to skip.
    pub offset: usize,
    /// Matches to return at most.
    pub limit: usize,
    /// Count all matches.
    pub count: bool,
    /// The order of the matches (`orderBy`); without it, by id.
    pub order_by: Option<Vec<crate::order::OrderKey>>,
    /// The reference geometry of ordering by distance (`orderFrom`).
    pub order_from: Option<ngsi_geo::Geometry>,
    /// How to render the matches.
    pub view: ViewOptions,
    /// Whether the query names enough to select by on its own (clause
    /// 5.7.2.4), worked out from the parameters as given.
    pub(crate) wide_enough: bool,
    /// `local=true`: registered context sources are not asked (clause
    /// 5.5.13).
    pub local: bool,
    /// The context source filter (`csf`, clause 4.9): which registrations
    /// are asked, by their Context Source Properties.
    pub(crate) csf: Option<Query>,
    /// The EntityMap the query is restricted to (clause 5.5.9.3).
    pub(crate) within: Option<Arc<Within>>,
    /// `splitEntities=true` (Table 6.4.3.2-1): the parts of an entity may
    /// be held in several places, so the sources are asked for what they
    /// hold of the selected entities and the filters apply to the joined
    /// entities.
    pub(crate) split: bool,
}

/// The entities of an EntityMap a query is restricted to, and the matches
/// it met among them (to prune the map after the page).
#[derive(Debug, Default)]
pub(crate) struct Within {
    /// The map's entity ids, sorted.
    pub(crate) ids: Arc<[Arc<str>]>,
    /// The ids of the entities held here that matched, as the store met
    /// them.
    pub(crate) met: parking_lot::Mutex<Vec<Arc<str>>>,
}

impl Within {
    fn holds(&self, id: &str) -> bool {
        self.ids.binary_search_by(|x| (**x).cmp(id)).is_ok()
    }
}

/// One page of rendered query results.
#[derive(Debug, Default)]
pub struct QueryResult {
    /// The rendered entities, each the JSON text of an object with at least
    /// one member (an entity that pick/omit leave empty is not shown, ETSI
    /// 019_17_01).
    pub entities: Vec<Vec<u8>>,
    /// With `join=flat`, the Linked Entities that follow `entities`
    /// (clause 4.5.23.3); they are not counted in `total` nor paged.
    pub linked: Vec<Vec<u8>>,
    /// All matches, when counted.
    pub total: Option<usize>,
    /// `NGSILD-Warning` values: the context sources whose answers are
    /// missing (clause 6.3.17).
    pub warnings: Vec<String>,
}

fn bad(e: impl std::fmt::Display) -> NgsiError {
    NgsiError::bad_data(e.to_string())
}

pub(crate) fn expand_list(list: &str, ctx: &Ctx) -> NgsiResult<Vec<Iri>> {
    let names = ngsi_query::parse_attr_list(list).map_err(bad)?;
    Ok(names.iter().map(|n| iri(&ctx.expand(n))).collect())
}

/// expandValues (clause 4.9, example 12): the unquoted words `q` compares
/// the attributes `names` lists with are terms, expanded with `ctx` as a
/// VocabProperty's vocab is on the way in; those `json_keys` lists stay
/// literal.
pub(crate) fn expand_words(q: &mut Query, names: &[Iri], json_keys: Option<&[Iri]>, ctx: &Ctx) {
    q.map_words(&mut |path, word| {
        let listed = names.iter().any(|n| **n == *path.attr)
            && !json_keys.is_some_and(|j| j.iter().any(|n| **n == *path.attr));
        if listed {
            ctx.expand(word).into_owned()
        } else {
            word.to_string()
        }
    });
}

pub(crate) fn parse_types(s: &str, ctx: &Ctx) -> NgsiResult<TypeExpr> {
    let mut t = ngsi_query::parse_type_expr(s).map_err(bad)?;
    t.map_names(&mut |n| ctx.expand(n).into_owned());
    Ok(t)
}

pub(crate) fn parse_q(s: &str, ctx: &Ctx) -> NgsiResult<Query> {
    let mut q =
        ngsi_query::parse_q(s).map_err(|e| NgsiError::bad_data(format!("invalid q: {e}")))?;
    q.map_attr_names(&mut |n| match n {
        // Metadata members keep their core names.
        "observedAt" | "createdAt" | "modifiedAt" | "unitCode" | "datasetId" => n.to_string(),
        _ => ctx.expand(n).into_owned(),
    });
    q.map_link_types(&mut |t| ctx.expand(t).into_owned());
    // As deep as Linked Entity retrieval may go (joinLevel).
    if q.link_depth() > crate::linked::MAX_JOIN_LEVEL {
        return Err(NgsiError::bad_data(format!(
            "invalid q: a linked entity term follows at most {} relationships",
            crate::linked::MAX_JOIN_LEVEL
        )));
    }
    Ok(q)
}

/// Clause 5.7.2.4: a query whose `q` follows Relationships needs Linked
/// Entity retrieval (`join`), at least as deep (`joinLevel`) as its deepest
/// linked term; else BadRequestData.
pub(crate) fn check_link_depth(query: &EntityQuery) -> NgsiResult<()> {
    let depth = query.q.as_ref().map_or(0, Query::link_depth);
    if depth > 0 {
        match &query.view.join {
            None => {
                return Err(NgsiError::bad_data(
                    "a linked entity term in q (attr{...}) needs Linked Entity retrieval: join=inline or join=flat",
                ));
            }
            Some(join) if join.level < depth => {
                return Err(NgsiError::bad_data(format!(
                    "q follows {depth} relationships, deeper than joinLevel {}",
                    join.level
                )));
            }
            Some(_) => {}
        }
    }
    check_projection_depth(&query.view)
}

/// Clauses 5.7.1.4 and 5.7.2.4: projections into Linked Entities
/// (`rel{...}` in pick or omit) need Linked Entity retrieval (`join`), at
/// least as deep (`joinLevel`) as their braces; else BadRequestData.
pub(crate) fn check_projection_depth(view: &ViewOptions) -> NgsiResult<()> {
    let depth = view.projection_depth();
    match &view.join {
        _ if depth == 0 => Ok(()),
        None => Err(NgsiError::bad_data(
            "a linked-entity projection (attr{...}) in pick or omit needs Linked Entity retrieval: join=inline or join=flat",
        )),
        Some(join) if join.level < depth => Err(NgsiError::bad_data(format!(
            "pick or omit reaches {depth} relationships deep, deeper than joinLevel {}",
            join.level
        ))),
        Some(_) => Ok(()),
    }
}

/// Refuses a `q` with linked-entity terms (`rel{attr}`) where they cannot
/// be resolved: `what` names the place.
pub(crate) fn refuse_links(q: Option<&Query>, what: &str) -> NgsiResult<()> {
    if q.is_some_and(Query::has_links) {
        return Err(NgsiError::bad_data(format!(
            "linked entity terms (attr{{...}}) in q are not supported in {what}"
        )));
    }
    Ok(())
}

fn parse_usize(s: Option<&str>, name: &str, default: usize) -> NgsiResult<usize> {
    match s {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| NgsiError::bad_data(format!("{name} must be a non-negative integer"))),
    }
}

/// The terms of a `pick` or `omit` projection (clause 4.21: `,` or `|`
/// between them, `rel{...}` for the Linked Entities of `rel`).
fn projection_terms(s: &str) -> NgsiResult<Vec<ngsi_query::Projection>> {
    ngsi_query::parse_projection(s).map_err(bad)
}

/// Whether `name` (a term or its IRI) is a system attribute (clause 4.8).
fn is_system_name(name: &str) -> bool {
    let term = name
        .strip_prefix("https://uri.etsi.org/ngsi-ld/")
        .unwrap_or(name);
    matches!(term, "createdAt" | "modifiedAt" | "deletedAt")
}

/// How a projection's names become IRIs (a request's @context, or names
/// expanded already).
pub(crate) type Expand<'a> = dyn Fn(&str) -> Iri + 'a;

/// The projections of the Linked Entities a projection's `rel{...}` terms
/// name, each made by `apply` (pick or omit) from the terms in braces.
fn linked_projections(
    terms: &[ngsi_query::Projection],
    expand: &Expand<'_>,
    apply: fn(&mut ViewOptions, &[ngsi_query::Projection], &Expand<'_>),
) -> Vec<(Iri, ViewOptions)> {
    terms
        .iter()
        .filter(|t| !t.linked.is_empty())
        .map(|t| {
            let mut v = ViewOptions::default();
            apply(&mut v, &t.linked, expand);
            (expand(&t.name), v)
        })
        .collect()
}

/// Whether a `pick`/`omit` name is an entity member rather than an attribute.
fn is_entity_member(name: &str) -> bool {
    matches!(name, "id" | "type" | "scope")
}

fn parse_bool(s: Option<&str>, name: &str) -> NgsiResult<bool> {
    match s {
        None => Ok(false),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(_) => Err(NgsiError::bad_data(format!("{name} must be true or false"))),
    }
}

impl ViewOptions {
    /// Keeps what `terms` name (a `pick`, clause 4.21) and, for each
    /// `rel{...}`, the projection of the Linked Entities of `rel`: level by
    /// level, a plain name picks at its own level only.
    pub(crate) fn pick(&mut self, terms: &[ngsi_query::Projection], expand: &Expand<'_>) {
        let named = |m: &str| terms.iter().any(|t| t.name == m);
        self.omit_id = !named("id");
        self.omit_type = !named("type");
        self.omit_scope = !named("scope");
        let picked: Vec<Iri> = terms
            .iter()
            .filter(|t| !is_entity_member(&t.name))
            .map(|t| expand(&t.name))
            .collect();
        self.attrs = Some(match self.attrs.take() {
            Some(a) => a.into_iter().filter(|x| picked.contains(x)).collect(),
            None => picked,
        });
        self.linked = linked_projections(terms, expand, Self::pick);
    }

    /// Drops what `terms` name (an `omit`, clause 4.21), but a `rel{...}`,
    /// which stays and drops the members its braces name from the Linked
    /// Entities of `rel`.
    pub(crate) fn omit(&mut self, terms: &[ngsi_query::Projection], expand: &Expand<'_>) {
        let plain = || terms.iter().filter(|t| t.linked.is_empty());
        let named = |m: &str| plain().any(|t| t.name == m);
        self.omit_id = named("id");
        self.omit_type = named("type");
        self.omit_scope = named("scope");
        self.omit = Some(
            plain()
                .filter(|t| !is_entity_member(&t.name))
                .map(|t| expand(&t.name))
                .collect(),
        );
        self.linked = linked_projections(terms, expand, Self::omit);
    }

    /// How deep the projections reach into Linked Entities: 0 without
    /// braces, 1 for `rel{a}`, 2 for `rel{a{b}}`.
    pub fn projection_depth(&self) -> usize {
        self.linked
            .iter()
            .map(|(_, v)| 1 + v.projection_depth())
            .max()
            .unwrap_or(0)
    }

    /// How the Linked Entities reached through Relationship `rel` are
    /// shown: in this view's representation, projected as the braces after
    /// `rel` say, else whole.
    pub fn linked_view(&self, rel: &str) -> ViewOptions {
        let projection = self
            .linked
            .iter()
            .find(|(n, _)| **n == *rel)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        ViewOptions {
            format: self.format,
            sys_attrs: self.sys_attrs,
            lang: self.lang.clone(),
            version: self.version,
            ..projection
        }
    }

    /// Parses `options`, `format`, `attrs`, `pick`, `omit`, `lang` and
    /// `datasetId`.
    pub fn from_params(p: &QueryParams, ctx: &Ctx) -> NgsiResult<Self> {
        let mut v = ViewOptions::default();
        let mut format = None;
        if let Some(options) = &p.options {
            for o in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
                match o {
                    "keyValues" | "simplified" => format = Some(Format::KeyValues),
                    "concise" => {
                        if format != Some(Format::KeyValues) {
                            format = Some(Format::Concise)
                        }
                    }
                    "normalized" => {
                        if format.is_none() {
                            format = Some(Format::Normalized)
                        }
                    }
                    "sysAttrs" => v.sys_attrs = true,
                    // Accepted for compatibility; they do not change a query.
                    "noOverwrite" | "replace" | "update" => {}
                    other => {
                        return Err(NgsiError::invalid_request(format!(
                            "unknown option {other:?}"
                        )));
                    }
                }
            }
        }
        if let Some(f) = &p.format {
            format = Some(match f.as_str() {
                "keyValues" | "simplified" => Format::KeyValues,
                "concise" => Format::Concise,
                "normalized" => Format::Normalized,
                other => {
                    return Err(NgsiError::invalid_request(format!(
                        "unknown format {other:?}"
                    )));
                }
            });
        }
        v.format = format.unwrap_or_default();
        if p.pick.is_some() && p.omit.is_some() {
            return Err(NgsiError::bad_data("pick and omit cannot be used together"));
        }
        // Clause 4.21: pick and omit replace attrs (ETSI 018_18_02/03).
        if p.attrs.is_some() && (p.pick.is_some() || p.omit.is_some()) {
            return Err(NgsiError::bad_data(
                "attrs cannot be used together with pick or omit",
            ));
        }
        if let Some(a) = &p.attrs {
            let names = ngsi_query::parse_attr_list(a).map_err(bad)?;
            if let Some(member) = names.iter().find(|n| is_entity_member(n)) {
                return Err(NgsiError::bad_data(format!(
                    "attrs lists attributes; {member:?} is an entity member"
                )));
            }
            v.attrs = Some(names.iter().map(|n| iri(&ctx.expand(n))).collect());
            v.attrs_given = true;
        }
        let expand = |n: &str| iri(&ctx.expand(n));
        if let Some(pick) = &p.pick {
            v.pick(&projection_terms(pick)?, &expand);
        }
        if let Some(omit) = &p.omit {
            v.omit(&projection_terms(omit)?, &expand);
        }
        if let Some(lang) = &p.lang {
            v.lang = Some(lang.trim().to_string());
        }
        if let Some(ds) = &p.dataset_id {
            // Valid URIs, or @none for the default instances (Table
            // 6.4.3.2-1).
            v.dataset_id = Some(
                ds.split(',')
                    .map(|d| match d.trim() {
                        "@none" => Ok(None),
                        d => ngsi_model::parse::check_dataset_id(d).map(|()| Some(d.to_string())),
                    })
                    .collect::<NgsiResult<_>>()?,
            );
        }
        if let Some(t) = p.r#type.as_deref().filter(|t| t.trim() != "*") {
            v.type_filter = Some(parse_types(t, ctx)?);
        }
        Ok(v)
    }
}

impl EntityQuery {
    /// Parses the query-string form (GET /entities, DELETE /entities).
    pub fn from_params(
        p: &QueryParams,
        ctx: &Ctx,
        default_limit: usize,
        max_limit: usize,
    ) -> NgsiResult<Self> {
        let mut selector = Selector::default();
        if let Some(ids) = &p.id {
            let list: Vec<Arc<str>> = ids.split(',').map(|s| Arc::from(s.trim())).collect();
            for i in &list {
                if !ngsi_model::parse::is_absolute_iri(i) {
                    return Err(NgsiError::bad_data(format!("id {i:?} is not a URI")));
                }
            }
            selector.ids = Some(list);
        }
        if let Some(p) = &p.id_pattern {
            selector.id_pattern = Some(
                IdPattern::new(p)
                    .map_err(|e| NgsiError::bad_data(format!("invalid idPattern: {e}")))?,
            );
        }
        // `type=*` selects every type and implies local=true, which it
        // cannot go with local=false (Table 6.4.3.2-1).
        let all_types = p.r#type.as_deref().map(str::trim) == Some("*");
        let local = parse_bool(p.local.as_deref(), "local")?;
        if all_types && p.local.as_deref() == Some("false") {
            return Err(NgsiError::bad_data("type=* implies local=true"));
        }
        if let Some(t) = p.r#type.as_deref().filter(|_| !all_types) {
            selector.types = Some(parse_types(t, ctx)?);
        }
        let split = parse_bool(p.split_entities.as_deref(), "splitEntities")?;
        // A context source filter is a query (clause 4.9) on the Context
        // Source Properties of registrations.
        let csf = p
            .csf
            .as_deref()
            .map(|s| {
                parse_q(s, ctx)
                    .map_err(|e| NgsiError::bad_data(format!("invalid csf: {}", e.detail)))
            })
            .transpose()?;
        refuse_links(csf.as_ref(), "csf")?;
        let geo = match (&p.georel, &p.geometry, &p.coordinates) {
            (None, None, None) => None,
            _ => {
                let g = ngsi_geo::parse_geoquery_params(
                    p.georel.as_deref(),
                    p.geometry.as_deref(),
                    p.coordinates.as_deref(),
                    p.geoproperty.as_deref(),
                )
                .map_err(bad)?;
                let prop = iri(&ctx.expand(g.geoproperty_or_default()));
                Some((g, prop))
            }
        };
        let mut view = ViewOptions::from_params(p, ctx)?;
        view.type_filter = None;
        let mut parsed_q = p.q.as_deref().map(|s| parse_q(s, ctx)).transpose()?;
        // expandValues (clause 4.9, example 12): the unquoted values of the
        // listed attributes are terms, expanded with the @context as a
        // VocabProperty's vocab is on the way in.
        if let (Some(list), Some(q)) = (&p.expand_values, parsed_q.as_mut()) {
            let json = p
                .json_keys
                .as_deref()
                .map(|j| expand_list(j, ctx))
                .transpose()?;
            expand_words(q, &expand_list(list, ctx)?, json.as_deref(), ctx);
        }
        // Clause 5.7.2.4 (ETSI 019_03_05, 019_25, 019_26, 5722_01): a query
        // needs a type, attrs or q naming a non-system attribute or a
        // geo-query, unless it is local or for every type; ids alone, or a
        // scopeQ alone, are not enough (the clause's list has no scopeQ).
        let wide_enough = local
            || all_types
            || selector.types.is_some()
            || p.attrs
                .as_deref()
                .is_some_and(|a| a.split(',').any(|n| !is_system_name(n.trim())))
            || parsed_q
                .as_ref()
                .is_some_and(|q| q.paths().iter().any(|path| !is_system_name(&path.attr)))
            || geo.is_some();
        let q = EntityQuery {
            selectors: vec![selector],
            attrs_filter: view.attrs.clone().filter(|_| p.attrs.is_some()),
            q: parsed_q,
            scope_q: p
                .scope_q
                .as_deref()
                .map(|s| {
                    ngsi_query::parse_scope_q(s)
                        .map_err(|e| NgsiError::bad_data(format!("invalid scopeQ: {e}")))
                })
                .transpose()?,
            geo,
            offset: parse_usize(p.offset.as_deref(), "offset", 0)?,
            limit: parse_usize(p.limit.as_deref(), "limit", default_limit)?,
            count: parse_bool(p.count.as_deref(), "count")?,
            order_by: p
                .order_by
                .as_deref()
                .map(|o| crate::order::parse_order_by(o, ctx))
                .transpose()?,
            order_from: None,
            view,
            wide_enough,
            local: local || all_types,
            csf,
            within: None,
            split,
        };
        let mut q = q;
        q.set_order_reference(p.order_from.as_deref(), p.order_geometry.as_deref())?;
        // Only codepoint order is offered: a collation is refused rather
        // than silently not applied (clause 4.23.1; ETSI 5243_01_05).
        if p.collation.is_some() {
            return Err(NgsiError::bad_data("collation is not supported"));
        }
        q.check_limits(max_limit)?;
        Ok(q)
    }

    /// Parses the body of POST /entityOperations/query (a Query, clause
    /// 5.2.23) with paging and view parameters from the query string.
    pub fn from_json(
        body: &Value,
        p: &QueryParams,
        ctx: &Ctx,
        default_limit: usize,
        max_limit: usize,
    ) -> NgsiResult<Self> {
        let Value::Object(m) = body else {
            return Err(NgsiError::bad_data("a Query must be a JSON object"));
        };
        match m.get("type") {
            Some(Value::String(t)) if t == "Query" => {}
            _ => return Err(NgsiError::bad_data("a Query needs \"type\": \"Query\"")),
        }
        let string = |k: &str| -> NgsiResult<Option<String>> {
            match m.get(k) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(NgsiError::bad_data(format!("{k} must be a string"))),
            }
        };
        let mut params = p.clone();
        // pick and omit: arrays of names or a projection string (Table
        // 5.2.23-1), the query-parameter forms otherwise.
        for (key, slot) in [("pick", &mut params.pick), ("omit", &mut params.omit)] {
            *slot = m.get(key).map(|v| names_list(v, key)).transpose()?;
        }
        // Linked Entity retrieval (clause 4.5.23): join, a positive integer
        // joinLevel, containedBy as one URI or an array of them.
        if let Some(level) = m.get("joinLevel")
            && level.as_u64().is_none_or(|l| l == 0)
        {
            return Err(NgsiError::bad_data("joinLevel must be a positive integer"));
        }
        let join_level = m.get("joinLevel").map(Value::to_string);
        let contained_by = match m.get("containedBy") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            Some(_) => {
                return Err(NgsiError::bad_data(
                    "containedBy must be a URI or an array of URIs",
                ));
            }
        };
        let join = crate::linked::Join::from_params(
            string("join")?.as_deref(),
            join_level.as_deref(),
            contained_by.as_deref(),
        )?;
        params.q = string("q")?;
        // The attributes whose words in q are terms, and those whose values
        // are plain JSON (Table 5.2.23-1): names or a comma-separated list.
        for (key, slot) in [
            ("expandValues", &mut params.expand_values),
            ("jsonKeys", &mut params.json_keys),
        ] {
            if let Some(v) = m.get(key) {
                *slot = Some(names_list(v, key)?);
            }
        }
        params.scope_q = string("scopeQ")?;
        params.csf = string("csf")?;
        match m.get("splitEntities") {
            None => {}
            Some(Value::Bool(b)) => params.split_entities = Some(b.to_string()),
            Some(_) => return Err(NgsiError::bad_data("splitEntities must be true or false")),
        }
        if let Some(lang) = string("lang")? {
            params.lang = Some(lang);
        }
        // The attribute instances shown (Table 5.2.23-1, clause 4.5.5).
        if let Some(ds) = m.get("datasetId") {
            let ds = names_list(ds, "datasetId")?;
            for d in ds.split(',') {
                ngsi_model::parse::check_dataset_id(d.trim())?;
            }
            params.dataset_id = Some(ds);
        }
        params.attrs = match m.get("attrs") {
            None => None,
            Some(Value::Array(a)) if !a.is_empty() => Some(
                a.iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| NgsiError::bad_data("attrs must hold strings"))
                    })
                    .collect::<NgsiResult<Vec<_>>>()?
                    .join(","),
            ),
            Some(_) => return Err(NgsiError::bad_data("attrs must be a non-empty array")),
        };
        // The ordering parameters (Table 5.2.43-1): orderBy (strings),
        // coordinates (an array, needed to order by distance), geometry (a
        // string); a collation is refused as in the query string.
        let mut reference: Option<(String, Option<String>)> = None;
        match m.get("ordering") {
            None => {}
            Some(Value::Object(o)) => {
                params.order_by = o
                    .get("orderBy")
                    .map(|v| names_list(v, "ordering.orderBy"))
                    .transpose()?;
                let geometry = match o.get("geometry") {
                    None => None,
                    Some(Value::String(g)) => Some(g.clone()),
                    Some(_) => {
                        return Err(NgsiError::bad_data("ordering.geometry must be a string"));
                    }
                };
                match o.get("coordinates") {
                    None => {}
                    Some(c @ Value::Array(_)) => reference = Some((c.to_string(), geometry)),
                    Some(_) => {
                        return Err(NgsiError::bad_data("ordering.coordinates must be an array"));
                    }
                }
                if o.contains_key("collation") {
                    params.collation = Some(String::new());
                }
            }
            Some(_) => return Err(NgsiError::bad_data("ordering must be an object")),
        }
        let mut q = if reference.is_some() {
            // The reference is set below, from the body.
            let mut without = params.clone();
            without.order_by = None;
            let mut q = Self::from_params(&without, ctx, default_limit, max_limit)?;
            q.order_by = params
                .order_by
                .as_deref()
                .map(|o| crate::order::parse_order_by(o, ctx))
                .transpose()?;
            q
        } else {
            Self::from_params(&params, ctx, default_limit, max_limit)?
        };
        if let Some((coordinates, geometry)) = &reference {
            q.set_order_reference(Some(coordinates), geometry.as_deref())?;
        }
        q.view.join = join;
        if let Some(g) = m.get("geoQ") {
            let g = ngsi_geo::parse_geoquery_json(g).map_err(bad)?;
            let prop = iri(&ctx.expand(g.geoproperty_or_default()));
            q.geo = Some((g, prop));
        }
        if let Some(entities) = m.get("entities") {
            let Value::Array(list) = entities else {
                return Err(NgsiError::bad_data("entities must be an array"));
            };
            if list.is_empty() {
                return Err(NgsiError::bad_data("entities must not be empty"));
            }
            q.selectors = list
                .iter()
                .map(|sel| {
                    let Value::Object(s) = sel else {
                        return Err(NgsiError::bad_data("an entity selector must be an object"));
                    };
                    let text = |k: &str| -> NgsiResult<Option<&str>> {
                        match s.get(k) {
                            None => Ok(None),
                            Some(Value::String(v)) => Ok(Some(v.as_str())),
                            Some(_) => Err(NgsiError::bad_data(format!(
                                "{k} of an entity selector must be a string"
                            ))),
                        }
                    };
                    let mut out = Selector::default();
                    // id: one URI or an array of URIs (Table 5.2.33-1).
                    let ids: Option<Vec<&str>> = match s.get("id") {
                        None => None,
                        Some(Value::String(v)) => Some(vec![v.as_str()]),
                        Some(Value::Array(a)) if !a.is_empty() => Some(
                            a.iter()
                                .map(|x| {
                                    x.as_str().ok_or_else(|| {
                                        NgsiError::bad_data(
                                            "id of an entity selector must hold strings",
                                        )
                                    })
                                })
                                .collect::<NgsiResult<Vec<_>>>()?,
                        ),
                        Some(_) => {
                            return Err(NgsiError::bad_data(
                                "id of an entity selector must be a URI or an array of URIs",
                            ));
                        }
                    };
                    if let Some(ids) = ids {
                        if let Some(bad_id) =
                            ids.iter().find(|i| !ngsi_model::parse::is_absolute_iri(i))
                        {
                            return Err(NgsiError::bad_data(format!("id {bad_id:?} is not a URI")));
                        }
                        out.ids = Some(ids.into_iter().map(Arc::from).collect());
                    }
                    // The type is mandatory; id takes precedence over
                    // idPattern (clause 5.2.33).
                    if s.get("type").is_none() {
                        return Err(NgsiError::bad_data("an entity selector needs a type"));
                    }
                    if let Some(p) = text("idPattern")?.filter(|_| out.ids.is_none()) {
                        out.id_pattern =
                            Some(IdPattern::new(p).map_err(|e| {
                                NgsiError::bad_data(format!("invalid idPattern: {e}"))
                            })?);
                    }
                    if let Some(t) = text("type")? {
                        out.types = Some(parse_types(t, ctx)?);
                    }
                    Ok(out)
                })
                .collect::<NgsiResult<Vec<_>>>()?;
            q.wide_enough = true;
        }
        if q.geo.is_some() {
            q.wide_enough = true;
        }
        Ok(q)
    }

    /// Sets the reference geometry of ordering by distance from its
    /// coordinates (a JSON array) and geometry type (by default inferred
    /// from how deep the coordinates nest). Ordering by distance needs one
    /// (clause 4.23.3).
    fn set_order_reference(
        &mut self,
        coordinates: Option<&str>,
        geometry: Option<&str>,
    ) -> NgsiResult<()> {
        let needed = self
            .order_by
            .as_deref()
            .is_some_and(crate::order::needs_reference);
        let Some(coordinates) = coordinates else {
            if needed {
                return Err(NgsiError::bad_data(
                    "ordering by distance needs the reference coordinates (orderFrom)",
                ));
            }
            return Ok(());
        };
        let kind = match geometry {
            Some(g) => g,
            None => {
                let depth = coordinates
                    .trim_start()
                    .chars()
                    .take_while(|c| *c == '[' || c.is_whitespace())
                    .filter(|c| *c == '[')
                    .count();
                match depth {
                    0 | 1 => "Point",
                    2 => "LineString",
                    3 => "Polygon",
                    _ => "MultiPolygon",
                }
            }
        };
        let g = ngsi_geo::parse_geometry_params(kind, coordinates)
            .map_err(|e| NgsiError::bad_data(format!("invalid orderFrom: {e}")))?;
        self.order_from = Some(g);
        Ok(())
    }

    fn check_limits(&self, max_limit: usize) -> NgsiResult<()> {
        if self.limit > max_limit {
            return Err(NgsiError::new(
                ngsi_model::ErrorKind::TooManyResults,
                format!("limit {} is above the maximum of {max_limit}", self.limit),
            ));
        }
        if self.limit == 0 && !self.count {
            return Err(NgsiError::bad_data(
                "limit=0 is only allowed with count=true",
            ));
        }
        Ok(())
    }

    /// Whether the query names anything to select by (clause 5.7.2 needs at
    /// least one of type, id, idPattern, attrs, q, geo-query or scopeQ).
    pub fn has_selector(&self) -> bool {
        self.selectors
            .iter()
            .any(|s| s.ids.is_some() || s.id_pattern.is_some() || s.types.is_some())
            || self.attrs_filter.is_some()
            || self.q.is_some()
            || self.scope_q.is_some()
            || self.geo.is_some()
    }

    /// Whether a purge with this query is narrow enough (clause 5.6.21.4):
    /// it names entity types, a non-system attribute (in `attrs` or in
    /// `q`), a geo-query, or is limited to the local scope. Ids and id
    /// patterns alone are not enough.
    pub fn qualifies_for_purge(&self, local: bool, members: &[Iri]) -> bool {
        let system = is_system_attribute;
        let attrs = self
            .attrs_filter
            .iter()
            .flatten()
            .chain(members)
            .any(|n| !system(n));
        let q = self.q.as_ref().is_some_and(|q| {
            let mut names = false;
            q.clone().map_attr_names(&mut |n| {
                names |= !system(n);
                n.to_string()
            });
            names
        });
        local
            || attrs
            || q
            || self.geo.is_some()
            || self.selectors.iter().any(|s| s.types.is_some())
    }

    /// Whether `e` matches every condition of the query.
    pub fn matches(&self, e: &Entity) -> bool {
        self.selects(e) && self.matches_filters(e, None)
    }

    /// Whether `e` matches every condition of the query, the entities that
    /// linked terms of `q` name being looked up with `lookup` (one lookup
    /// per object: for testing one entity, where resolving the terms for
    /// all entities first would cost more).
    pub(crate) fn matches_looking_up(&self, e: &Entity, lookup: &Lookup<'_>) -> bool {
        self.selects(e) && self.matches_filters(e, Some(lookup))
    }

    /// Whether `e` is selected by the entity selectors and `attrs`, the
    /// filters aside: what is asked of an entity a context source answered
    /// (it applied the filters to what it holds, and may have projected
    /// away the attributes they test).
    pub(crate) fn selects(&self, e: &Entity) -> bool {
        self.within.as_ref().is_none_or(|w| w.holds(&e.id))
            && (self.selectors.is_empty() || self.selectors.iter().any(|s| s.matches(e)))
            && self
                .attrs_filter
                .as_ref()
                .is_none_or(|a| a.iter().any(|n| e.attr(n).is_some()))
    }

    /// Whether `e` satisfies `q`, `scopeQ` and the geo-query.
    fn matches_filters(&self, e: &Entity, lookup: Option<&Lookup<'_>>) -> bool {
        self.q.as_ref().is_none_or(|q| match lookup {
            None => q.matches(&EntityTarget(e)),
            Some(lookup) => q.matches(&LinkedTarget {
                entity: e,
                lookup,
                budget: &std::cell::Cell::new(crate::target::MAX_LOOKUPS),
            }),
        }) && self.scope_q.as_ref().is_none_or(|s| {
            let scopes: Vec<&str> = e.scopes.iter().map(|s| &**s).collect();
            s.matches(&scopes)
        }) && self.matches_geo(e)
    }

    /// Whether some instance of the geo-query's GeoProperty in `e` satisfies
    /// it (`true` without a geo-query).
    pub(crate) fn matches_geo(&self, e: &Entity) -> bool {
        self.geo.as_ref().is_none_or(|(g, prop)| {
            e.attr(prop).is_some_and(|instances| {
                instances.iter().any(|a| match &a.value {
                    AttrValue::GeoProperty(v) => {
                        ngsi_geo::parse_geojson(v).is_ok_and(|geom| g.matches(&geom))
                    }
                    _ => false,
                })
            })
        })
    }

    /// Whether an entity with history is selected by its id and types
    /// (the selectors; the temporal query decides the rest).
    pub(crate) fn selects_history(&self, id: &str, types: &[Iri]) -> bool {
        let has_type = |name: &str| types.iter().any(|x| ngsi_model::entity::same_iri(x, name));
        if self.within.as_ref().is_some_and(|w| !w.holds(id)) {
            return false;
        }
        self.selectors.is_empty()
            || self
                .selectors
                .iter()
                .any(|s| s.matches_id_and_types(id, &has_type))
    }

    /// The conditions of `q` that an attribute index can answer: the terms
    /// of a top-level conjunction on an attribute's own value (no
    /// sub-attribute, no compound path) that compare with a number, string,
    /// URI or boolean. Every entity matching `q` satisfies all of them.
    pub(crate) fn index_conditions(&self) -> Vec<IndexedCondition> {
        self.q.as_ref().map(index_conditions).unwrap_or_default()
    }

    /// Whether the store's by-type selection alone decides the query: one
    /// selector whose only condition is a union of types (`A`, `A,B`, `A|B`),
    /// and nothing else to check.
    pub(crate) fn selection_is_exact(&self) -> bool {
        fn union_of_types(t: &TypeExpr) -> bool {
            match t {
                TypeExpr::Type(_) => true,
                TypeExpr::Or(items) => items.iter().all(union_of_types),
                TypeExpr::And(_) => false,
            }
        }
        self.within.is_none()
            && matches!(self.selectors.as_slice(), [s] if s.ids.is_none()
            && s.id_pattern.is_none()
            && s.types.as_ref().is_some_and(union_of_types))
            && self.attrs_filter.is_none()
            && self.q.is_none()
            && self.scope_q.is_none()
            && self.geo.is_none()
    }

    /// Calls `f` with what the store selects candidates by: ids, types
    /// and the indexed conditions of the query.
    pub(crate) fn with_selection<R>(&self, f: impl FnOnce(Selection<'_>) -> R) -> R {
        let (ids, types) = self.selection_parts();
        let conditions = self.index_conditions();
        f(Selection {
            ids: ids.as_deref(),
            types: types.as_deref(),
            conditions: &conditions,
            exact: self.selection_is_exact(),
        })
    }

    pub(crate) fn selection_parts(&self) -> (Option<Vec<Arc<str>>>, Option<Vec<Iri>>) {
        let ids = if self.selectors.iter().all(|s| s.ids.is_some()) && !self.selectors.is_empty() {
            Some(
                self.selectors
                    .iter()
                    .flat_map(|s| s.ids.clone().unwrap_or_default())
                    .collect(),
            )
        } else {
            None
        };
        // An EntityMap's ids are the candidates (those of the selectors
        // among them, when they name ids too).
        let ids = match (&self.within, ids) {
            (None, ids) => ids,
            (Some(w), None) => Some(w.ids.to_vec()),
            (Some(w), Some(ids)) => Some(ids.into_iter().filter(|i| w.holds(i)).collect()),
        };
        let types =
            if self.selectors.iter().all(|s| s.types.is_some()) && !self.selectors.is_empty() {
                Some(
                    self.selectors
                        .iter()
                        .flat_map(|s| {
                            s.types
                                .as_ref()
                                .map(|t| t.names().map(iri).collect::<Vec<_>>())
                                .unwrap_or_default()
                        })
                        .collect(),
                )
            } else {
                None
            };
        (ids, types)
    }
}

/// `query` with its linked-entity terms (`rel{attr}`, clause 4.9 examples
/// 13 and 14) resolved against the entities of `tenant`: each becomes the
/// set of the ids its Relationship may target, found with one store query
/// (a semi-join), so the entities tested afterwards need no lookups (which
/// a store filter, running under the store's read lock, could not make).
pub(crate) fn resolve_links<'q>(
    store: &dyn store::Store,
    tenant: &str,
    query: &'q EntityQuery,
) -> std::borrow::Cow<'q, EntityQuery> {
    if !query.q.as_ref().is_some_and(Query::needs_resolution) {
        return std::borrow::Cow::Borrowed(query);
    }
    let mut resolved = query.clone();
    if let Some(q) = &mut resolved.q {
        q.resolve_links(&mut |hop, rest| Some(linked_ids(store, tenant, hop, rest)));
    }
    std::borrow::Cow::Owned(resolved)
}

/// The ids of the entities of `tenant` of one of `hop`'s types (any type
/// without hints) for which `rest` holds.
fn linked_ids(
    store: &dyn store::Store,
    tenant: &str,
    hop: &ngsi_query::q::Hop,
    rest: &ngsi_query::q::Term,
) -> std::collections::HashSet<Box<str>> {
    let q = Query::Term(rest.clone());
    let types: Option<Vec<Iri>> =
        (!hop.types.is_empty()).then(|| hop.types.iter().map(|t| iri(t)).collect());
    let conditions = index_conditions(&q);
    let ids = parking_lot::Mutex::new(std::collections::HashSet::new());
    let filter = |e: &Entity| {
        let matched = q.matches(&EntityTarget(e));
        if matched {
            ids.lock().insert(Box::from(&*e.id));
        }
        matched
    };
    store.query(
        tenant,
        Selection {
            ids: None,
            types: types.as_deref(),
            conditions: &conditions,
            exact: false,
        },
        &filter,
        // Nothing kept: the filter takes the ids.
        Page {
            offset: 0,
            limit: 0,
            count: true,
        },
    );
    ids.into_inner()
}

/// The conditions of `q` that an attribute index can answer (see
/// [`EntityQuery::index_conditions`]).
fn index_conditions(q: &Query) -> Vec<IndexedCondition> {
    use ngsi_query::q::{Operand, Predicate, Value as QValue};
    fn key(v: &QValue) -> Option<IndexKey> {
        match v {
            QValue::Number(n) => n.as_f64().map(IndexKey::num),
            QValue::String(s) | QValue::Uri(s) => Some(IndexKey::Str(s.as_str().into())),
            QValue::Bool(b) => Some(IndexKey::Bool(*b)),
            _ => None,
        }
    }
    let terms: Vec<&Query> = match q {
        Query::And(items) => items.iter().collect(),
        single @ Query::Term(_) => vec![single],
        Query::Or(_) => Vec::new(),
    };
    terms
        .into_iter()
        .filter_map(|t| {
            let Query::Term(term) = t else {
                return None;
            };
            if !term.via.is_empty()
                || !term.path.sub_attrs.is_empty()
                || !term.path.compound.is_empty()
            {
                return None;
            }
            let condition = match &term.predicate {
                Predicate::Equal(Operand::One(v)) => Condition::AnyOf(vec![key(v)?]),
                Predicate::Equal(Operand::List(vs)) => {
                    Condition::AnyOf(vs.iter().map(key).collect::<Option<Vec<_>>>()?)
                }
                Predicate::Equal(Operand::Range(a, b)) => {
                    Condition::Between(Some(key(a)?), Some(key(b)?))
                }
                Predicate::Greater(v) | Predicate::GreaterEq(v) => {
                    Condition::Between(Some(key(v)?), None)
                }
                Predicate::Less(v) | Predicate::LessEq(v) => {
                    Condition::Between(None, Some(key(v)?))
                }
                _ => return None,
            };
            // Booleans have no order an index range could use.
            if let Condition::Between(Some(IndexKey::Bool(_)), _)
            | Condition::Between(_, Some(IndexKey::Bool(_))) = condition
            {
                return None;
            }
            Some(IndexedCondition {
                attr: iri(&term.path.attr),
                condition,
            })
        })
        .collect()
}

/// The page size above which a query's page is rendered as
/// [`store::cpu_bound`] work.
const HEAVY_RENDER: usize = 200;

/// The error for a query that selects by too little (clause 5.7.2.4).
pub(crate) fn too_wide() -> NgsiError {
    NgsiError::bad_data(
        "a query needs a type, attrs or q naming a non-system attribute, a geo-query or local=true",
    )
}

impl Broker {
    /// Query Entities (clause 5.7.2).
    pub fn query_entities(
        &self,
        tenant: &str,
        ctx: &Ctx,
        query: &EntityQuery,
    ) -> NgsiResult<QueryResult> {
        if !query.wide_enough {
            return Err(too_wide());
        }
        check_link_depth(query)?;
        self.check_tenant(tenant)?;
        let query = &*resolve_links(&*self.store, tenant, query);
        if let Some(keys) = &query.order_by {
            return query.with_selection(|selection| {
                self.query_ordered(tenant, ctx, query, selection, keys)
            });
        }
        let page = self.store_page(
            tenant,
            query,
            Page {
                offset: query.offset,
                limit: query.limit,
                count: query.count,
            },
        );
        let render = || {
            let mut budget = crate::linked::MAX_LINKED;
            let roots: Vec<&Entity> = page.entities.iter().map(|e| &**e).collect();
            QueryResult {
                warnings: Vec::new(),
                entities: roots
                    .iter()
                    .filter_map(|e| self.answer_json(tenant, e, ctx, &query.view, &mut budget))
                    .collect(),
                linked: self.flat_answer(tenant, &roots, ctx, &query.view),
                total: page.total,
            }
        };
        // Rendering takes a few microseconds per entity.
        Ok(if page.entities.len() > HEAVY_RENDER {
            store::cpu_bound(render)
        } else {
            render()
        })
    }

    /// One page of the entities of `tenant` that match `query`, from the
    /// store.
    pub(crate) fn store_page(
        &self,
        tenant: &str,
        query: &EntityQuery,
        page: Page,
    ) -> store::QueryPage {
        let filter = |e: &Entity| {
            let matches = query.matches(e);
            if matches && let Some(w) = &query.within {
                w.met.lock().push(e.id.clone());
            }
            matches
        };
        query.with_selection(|selection| self.store.query(tenant, selection, &filter, page))
    }

    /// Hands every match of `query` among the candidates of `selection` to
    /// `take`, in id order; the store keeps none of them (it only counts),
    /// and the selection is made inexact so that every match is seen.
    pub(crate) fn visit_matches(
        &self,
        tenant: &str,
        query: &EntityQuery,
        selection: Selection<'_>,
        take: impl Fn(&Entity) + Sync,
    ) {
        let filter = |e: &Entity| {
            let matched = query.matches(e);
            if matched {
                take(e);
            }
            matched
        };
        let selection = Selection {
            exact: false,
            ..selection
        };
        self.store.query(
            tenant,
            selection,
            &filter,
            Page {
                offset: 0,
                limit: 0,
                count: true,
            },
        );
    }

    /// Query Entities with `orderBy` (clause 4.23): every match is visited
    /// once to take its sort values (only those are kept, never the whole
    /// entities), the matches are sorted, and the page is read by id.
    fn query_ordered(
        &self,
        tenant: &str,
        ctx: &Ctx,
        query: &EntityQuery,
        selection: Selection<'_>,
        keys: &[crate::order::OrderKey],
    ) -> NgsiResult<QueryResult> {
        type Keyed = (Vec<Option<crate::order::SortValue>>, Arc<str>);
        let keyed: parking_lot::Mutex<Vec<Keyed>> = parking_lot::Mutex::default();
        self.visit_matches(tenant, query, selection, |e| {
            keyed.lock().push((
                crate::order::sort_values(keys, e, query.order_from.as_ref()),
                e.id.clone(),
            ));
        });
        let mut keyed = keyed.into_inner();
        // Stable: ties keep the id order the store visits them in.
        keyed.sort_by(|a, b| crate::order::compare(keys, &a.0, &b.0));
        let total = query.count.then_some(keyed.len());
        let page: Vec<Arc<Entity>> = keyed
            .iter()
            .skip(query.offset)
            .take(query.limit)
            // One deleted since is left out of the page.
            .filter_map(|(_, id)| self.store.get(tenant, id))
            .collect();
        let roots: Vec<&Entity> = page.iter().map(|e| &**e).collect();
        let mut budget = crate::linked::MAX_LINKED;
        Ok(QueryResult {
            entities: roots
                .iter()
                .filter_map(|e| self.answer_json(tenant, e, ctx, &query.view, &mut budget))
                .collect(),
            linked: self.flat_answer(tenant, &roots, ctx, &query.view),
            total,
            warnings: Vec::new(),
        })
    }

    /// Purge Entities (clause 5.6.21): deletes the selected entities, or with
    /// `keep`/`drop` only some of their attributes.
    pub async fn purge_entities(
        &self,
        tenant: &str,
        ctx: &Ctx,
        params: &QueryParams,
        local: bool,
    ) -> NgsiResult<()> {
        if params.keep.is_some() && params.drop.is_some() {
            return Err(NgsiError::bad_data("keep and drop cannot be used together"));
        }
        // Linked-entity projections (`attr{sub}`) are refused (clause 5.6.21.4).
        if let Some(attrs) = &params.attrs
            && attrs
                .split(',')
                .any(|a| !ngsi_model::parse::is_valid_name(a.trim()))
        {
            return Err(NgsiError::bad_data(format!("invalid attrs {attrs:?}")));
        }
        let mut p = params.clone();
        p.count = Some("true".into());
        p.limit = Some("1".into());
        let query = EntityQuery::from_params(&p, ctx, 1, usize::MAX)?;
        let keep = params
            .keep
            .as_deref()
            .map(|k| expand_list(k, ctx))
            .transpose()?;
        let drop = params
            .drop
            .as_deref()
            .map(|d| expand_list(d, ctx))
            .transpose()?;
        let members: Vec<Iri> = keep.iter().chain(&drop).flatten().cloned().collect();
        if !query.qualifies_for_purge(local, &members) {
            return Err(NgsiError::bad_data(
                "purge needs entity types, a non-system attribute (attrs, keep, drop or q), a geo-query or local=true",
            ));
        }
        // Clause 5.6.21.4: a purge selects by the entities' own attributes.
        refuse_links(query.q.as_ref(), "purges (clause 5.6.21.4)")?;
        self.check_tenant(tenant)?;
        let (ids, types) = query.selection_parts();
        let filter = |e: &Entity| query.matches(e);
        let page = self.store.query(
            tenant,
            Selection {
                ids: ids.as_deref(),
                types: types.as_deref(),
                conditions: &[],
                exact: false,
            },
            &filter,
            Page {
                offset: 0,
                limit: usize::MAX,
                count: false,
            },
        );
        let ops = page
            .entities
            .iter()
            .map(|e| {
                let keep = keep.clone();
                let drop = drop.clone();
                Op::new(e.id.clone(), move |current| {
                    let Some(current) = current else {
                        return Ok(Change {
                            next: Next::Keep,
                            report: None,
                        });
                    };
                    if keep.is_none() && drop.is_none() {
                        return Ok(Change::delete());
                    }
                    let mut e = current.clone();
                    if let Some(k) = &keep {
                        e.attrs.retain(|(n, _)| k.contains(n));
                    }
                    if let Some(d) = &drop {
                        e.attrs.retain(|(n, _)| !d.contains(n));
                    }
                    e.modified_at = ngsi_model::time::now_micros();
                    Ok(Change::put(e))
                })
            })
            .collect();
        for r in self.store.write(tenant, ops).await? {
            r?;
        }
        Ok(())
    }
}

/// A member of a POST Query that lists names: a string (a comma list) or a
/// non-empty array of strings, as the comma list of the query string.
fn names_list(v: &Value, key: &str) -> NgsiResult<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(a) if !a.is_empty() => Ok(a
            .iter()
            .map(|x| {
                x.as_str()
                    .ok_or_else(|| NgsiError::bad_data(format!("{key} must hold strings")))
            })
            .collect::<NgsiResult<Vec<_>>>()?
            .join(",")),
        _ => Err(NgsiError::bad_data(format!(
            "{key} must be a non-empty array of strings"
        ))),
    }
}

/// Whether `name` (expanded) is a system attribute that selects nothing by
/// itself: createdAt, modifiedAt, deletedAt, observedAt.
pub(crate) fn is_system_attribute(name: &str) -> bool {
    let short = name
        .strip_prefix(ngsi_model::entity::core_iri::NGSI_LD)
        .unwrap_or(name);
    matches!(
        short,
        "createdAt" | "modifiedAt" | "deletedAt" | "observedAt"
    )
}

#[cfg(test)]
mod tests {
    use super::{IdPattern, literal_prefix};

    #[test]
    fn id_patterns_prefilter_on_their_literal_prefix() {
        for (pattern, prefix) in [
            ("^urn:ngsi-ld:Bench:http:7:", "urn:ngsi-ld:Bench:http:7:"),
            ("^urn:ngsi-ld:Vehicle:.*", "urn:ngsi-ld:Vehicle:"),
            ("^urn:abc*", "urn:ab"),
            ("^urn:a?b", "urn:"),
            ("^urn:a{2}", "urn:"),
            ("^urn:(a|b)", ""),
            ("^a|^b", ""),
            ("urn:x", ""),
            ("(?i)^URN", ""),
            ("^urn\\.x", "urn"),
            ("^[a-z]", ""),
        ] {
            assert_eq!(literal_prefix(pattern), prefix, "{pattern}");
        }
        let p = IdPattern::new("^urn:ngsi-ld:Vehicle:.*bus").unwrap();
        assert!(p.is_match("urn:ngsi-ld:Vehicle:gz-bus"));
        assert!(!p.is_match("urn:ngsi-ld:Vehicl:bus"));
        assert!(!p.is_match("urn:ngsi-ld:Vehicle:taxi"));
    }

    proptest::proptest! {
        /// The prefilter never rejects an id the regex matches.
        #[test]
        fn the_prefilter_never_rejects_a_match(pattern in "\\^[a-c:.*?|{}1-2()\\[\\]-]{0,8}", id in "[a-c:1-2-]{0,10}") {
            if let Ok(p) = IdPattern::new(&pattern) {
                proptest::prop_assert_eq!(p.is_match(&id), regex::Regex::new(&pattern).unwrap().is_match(&id));
            }
        }
    }
}
