//! The processed active context: a term table with IRI expansion and
//! compaction.
//!
//! Processing follows the JSON-LD 1.1 Context Processing and Create Term
//! Definition algorithms (W3C JSON-LD 1.1 Processing Algorithms and API,
//! sections 4.1 and 4.2), reduced to what NGSI-LD needs: `@base`,
//! `@language`, `@direction` and `@propagate` are accepted and ignored,
//! `@reverse` terms are recorded but never chosen for compaction, and scoped
//! contexts (`@context` inside a term definition) are refused in user
//! contexts (clause 5.5.7) and kept unprocessed in core contexts.
//!
//! Two NGSI-LD rules shape it (ETSI GS CIM 009 v1.9.1, clause 5.5.7): the core
//! context is always part of the active context, and it is applied last, so a
//! user context can neither redefine nor remove a core term. Processing
//! therefore starts from the core terms (so user definitions may use core
//! prefixes such as `ngsi-ld:`), silently keeps a core term when a user context
//! redefines it, and never lets `null` drop the core terms.

use foldhash::{HashMap, HashMapExt};
use std::borrow::Cow;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::core::{self, DEFAULT_VOCAB};
use crate::error::ContextError;

/// How deep remote contexts may include each other before processing stops
/// with a "context overflow" error (JSON-LD 1.1 leaves the bound to the
/// processor).
pub(crate) const MAX_REMOTE_DEPTH: usize = 16;

/// How many remote context inclusions one resolution may go through in all,
/// which bounds the work a hostile diamond of contexts including each other
/// many times can cause.
pub(crate) const MAX_INCLUSIONS: usize = 1024;

/// How deeply arrays of contexts may nest inside one another.
const MAX_ARRAY_DEPTH: usize = 32;

/// The JSON-LD keywords (JSON-LD 1.1 section 1.7).
const KEYWORDS: &[&str] = &[
    "@base",
    "@container",
    "@context",
    "@direction",
    "@graph",
    "@id",
    "@import",
    "@included",
    "@index",
    "@json",
    "@language",
    "@list",
    "@nest",
    "@none",
    "@prefix",
    "@propagate",
    "@protected",
    "@reverse",
    "@set",
    "@type",
    "@value",
    "@version",
    "@vocab",
];

/// Container keywords allowed in `@container`.
const CONTAINERS: &[&str] = &[
    "@list",
    "@set",
    "@index",
    "@language",
    "@id",
    "@type",
    "@graph",
];

/// Tells whether `s` is a JSON-LD keyword.
pub fn is_keyword(s: &str) -> bool {
    KEYWORDS.contains(&s)
}

/// Tells whether `s` has the form of a keyword (`@` followed by letters) and
/// so must be ignored as a term (JSON-LD 1.1, Create Term Definition step 4).
fn looks_like_keyword(s: &str) -> bool {
    s.len() > 1 && s.starts_with('@') && s[1..].bytes().all(|b| b.is_ascii_alphabetic())
}

/// Tells whether `s` ends with a generic delimiter of RFC 3986, which makes a
/// simple term usable as a prefix.
fn ends_with_gen_delim(s: &str) -> bool {
    matches!(
        s.as_bytes().last(),
        Some(b':' | b'/' | b'?' | b'#' | b'[' | b']' | b'@')
    )
}

/// Tells whether `prefix` is a valid URI scheme, so that `prefix:rest` is an
/// absolute IRI.
fn is_scheme(prefix: &str) -> bool {
    let mut bytes = prefix.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// Tells whether `iri` is absolute (has a scheme) or a blank node identifier.
fn is_absolute_iri(iri: &str) -> bool {
    match iri.split_once(':') {
        Some((prefix, _)) => prefix == "_" || is_scheme(prefix),
        None => false,
    }
}

/// One entry of the term table.
#[derive(Debug, Clone, PartialEq)]
pub struct TermDefinition {
    id: String,
    type_mapping: Option<String>,
    container: Vec<String>,
    prefix: bool,
    protected: bool,
    reverse: bool,
    core: bool,
    scoped_context: Option<Arc<Value>>,
}

impl TermDefinition {
    /// The IRI (or keyword, for aliases such as `type` → `@type`) the term
    /// expands to.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The `@type` coercion: `@id`, `@vocab`, `@json`, `@none` or an expanded
    /// datatype IRI such as `https://uri.etsi.org/ngsi-ld/DateTime`.
    pub fn type_mapping(&self) -> Option<&str> {
        self.type_mapping.as_deref()
    }

    /// The `@container` keywords, sorted (e.g. `["@list"]`); empty if none.
    pub fn container(&self) -> &[String] {
        &self.container
    }

    /// Tells whether the container mapping includes `keyword` (e.g. `@list`).
    pub fn has_container(&self, keyword: &str) -> bool {
        self.container.iter().any(|c| c == keyword)
    }

    /// Tells whether the term may be used as the prefix of a compact IRI.
    pub fn is_prefix(&self) -> bool {
        self.prefix
    }

    /// Tells whether the term was defined as `@protected`.
    pub fn is_protected(&self) -> bool {
        self.protected
    }

    /// Tells whether the term is a reverse property (`@reverse`).
    pub fn is_reverse(&self) -> bool {
        self.reverse
    }

    /// Tells whether the term comes from the NGSI-LD core context.
    pub fn is_core(&self) -> bool {
        self.core
    }

    /// The term's scoped context, kept as written (not processed).
    pub fn scoped_context(&self) -> Option<&Value> {
        self.scoped_context.as_deref()
    }

    /// Tells whether two definitions mean the same thing, ignoring the
    /// protection and origin flags (JSON-LD 1.1, Create Term Definition step
    /// 27.2).
    fn same_meaning(&self, other: &TermDefinition) -> bool {
        self.id == other.id
            && self.type_mapping == other.type_mapping
            && self.container == other.container
            && self.prefix == other.prefix
            && self.reverse == other.reverse
            && self.scoped_context == other.scoped_context
    }

    /// Whether the definition coerces values, which makes it a worse choice
    /// for compacting a bare IRI than a plain term.
    fn coerces(&self) -> bool {
        self.type_mapping.is_some() || !self.container.is_empty()
    }
}

/// A processed active context: the term table of an `@context`, with the
/// NGSI-LD core context applied last.
///
/// Built by [`crate::ContextResolver::resolve`] (or [`Context::from_value`]
/// for contexts that need nothing remote) and shared as `Arc<Context>`.
#[derive(Debug, Clone)]
pub struct Context {
    terms: HashMap<String, TermDefinition>,
    vocab: String,
    /// Best term for each IRI (or keyword), for compaction.
    inverse: HashMap<String, String>,
    /// Terms usable as compact IRI prefixes: (IRI, term), longest IRI first.
    prefixes: Vec<(String, String)>,
    /// Terms expanded before, with the shared IRI the caller made of each
    /// (see [`Context::expand_term_shared`]).
    memo: Memo,
}

/// The memo of [`Context::expand_term_shared`], bounded; a clone starts
/// empty.
#[derive(Debug, Default)]
struct Memo(parking_lot::RwLock<HashMap<Box<str>, Arc<str>>>);

impl Clone for Memo {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// The most terms one context remembers expansions of.
const MEMO_TERMS: usize = 4096;

/// Fetches the document behind a context URL during processing.
pub(crate) type Loader<'a> = dyn Fn(&str) -> Option<Arc<Value>> + 'a;

impl Context {
    /// The NGSI-LD core context of the implemented version
    /// ([`crate::CORE_CONTEXT_URL`]), processed once and shared.
    pub fn core() -> Arc<Context> {
        core::core()
    }

    /// Processes an `@context` value that needs no network: inline objects,
    /// arrays of them, `null` and URLs of embedded core contexts. Any other
    /// URL fails with [`ContextError::NotAvailable`]; use
    /// [`crate::ContextResolver`] for those.
    pub fn from_value(ctx: &Value) -> Result<Context, ContextError> {
        Context::process(ctx, &|url| core::core_document_arc(url))
    }

    /// Processes `ctx` on top of the core context, loading referenced
    /// documents through `loader`, then applies the core terms last.
    pub(crate) fn process(ctx: &Value, loader: &Loader<'_>) -> Result<Context, ContextError> {
        let core = Context::core();
        let mut builder = Builder {
            terms: core.terms.clone(),
            vocab: None,
            core: Some(&core),
            inclusions: 0,
            in_core: 0,
        };
        builder.process(ctx, loader, &mut Vec::new(), 0)?;
        // The core context is applied last: its terms win over any user
        // definition of the same name.
        for (term, def) in &core.terms {
            builder.terms.insert(term.clone(), def.clone());
        }
        let vocab = builder.vocab.unwrap_or_else(|| core.vocab.clone());
        Ok(Context::finish(builder.terms, vocab))
    }

    /// Builds a core context from its document: every term is marked as core.
    pub(crate) fn build_core(doc: &Value) -> Result<Context, ContextError> {
        let mut builder = Builder {
            terms: HashMap::new(),
            vocab: None,
            core: None,
            inclusions: 0,
            in_core: 0,
        };
        let ctx = doc
            .get("@context")
            .ok_or_else(|| ContextError::Invalid("core context has no @context member".into()))?;
        builder.process(ctx, &|_| None, &mut Vec::new(), 0)?;
        for def in builder.terms.values_mut() {
            def.core = true;
        }
        let vocab = builder.vocab.unwrap_or_else(|| DEFAULT_VOCAB.to_owned());
        Ok(Context::finish(builder.terms, vocab))
    }

    /// Precomputes the compaction tables.
    fn finish(terms: HashMap<String, TermDefinition>, vocab: String) -> Context {
        let mut best: HashMap<&str, &str> = HashMap::new();
        for (term, def) in &terms {
            if def.reverse {
                continue;
            }
            let better = match best.get(def.id.as_str()) {
                None => true,
                Some(current) => {
                    let cur = &terms[*current];
                    (def.coerces(), term.len(), term.as_str())
                        < (cur.coerces(), current.len(), *current)
                }
            };
            if better {
                best.insert(def.id.as_str(), term.as_str());
            }
        }
        let inverse = best
            .into_iter()
            .map(|(iri, term)| (iri.to_owned(), term.to_owned()))
            .collect();
        let mut prefixes: Vec<(String, String)> = terms
            .iter()
            .filter(|(_, d)| d.prefix && !d.reverse && !is_keyword(&d.id))
            .map(|(t, d)| (d.id.clone(), t.clone()))
            .collect();
        prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.1.cmp(&b.1)));
        Context {
            terms,
            vocab,
            inverse,
            prefixes,
            memo: Memo::default(),
        }
    }

    /// The definition of `term`, if the context defines it.
    pub fn term(&self, term: &str) -> Option<&TermDefinition> {
        self.terms.get(term)
    }

    /// All defined terms with their definitions, in no particular order.
    pub fn terms(&self) -> impl Iterator<Item = (&str, &TermDefinition)> {
        self.terms.iter().map(|(t, d)| (t.as_str(), d))
    }

    /// The vocabulary mapping undefined terms expand against
    /// (`https://uri.etsi.org/ngsi-ld/default-context/` unless a user context
    /// set its own `@vocab`).
    pub fn vocab(&self) -> &str {
        &self.vocab
    }

    /// Expands a term as JSON-LD expands property names and types
    /// (vocabulary-relative IRI expansion): keywords stay as they are, defined
    /// terms give their IRI (or keyword alias), compact IRIs `prefix:suffix`
    /// use the prefix's IRI, absolute IRIs stay as they are, and anything else
    /// is appended to `@vocab`.
    pub fn expand_term<'a>(&'a self, term: &'a str) -> Cow<'a, str> {
        if term.starts_with('@') && (is_keyword(term) || looks_like_keyword(term)) {
            return Cow::Borrowed(term);
        }
        if let Some(def) = self.terms.get(term) {
            return Cow::Borrowed(&def.id);
        }
        if let Some((prefix, suffix)) = term.split_once(':') {
            if prefix == "_" || suffix.starts_with("//") {
                return Cow::Borrowed(term);
            }
            if let Some(def) = self.terms.get(prefix)
                && def.prefix
            {
                return Cow::Owned(format!("{}{suffix}", def.id));
            }
            if is_scheme(prefix) {
                return Cow::Borrowed(term);
            }
        }
        Cow::Owned(format!("{}{term}", self.vocab))
    }

    /// Whether [`Context::expand_term`] of `term` is `iri`, without building
    /// the expansion (compaction checks every candidate this way).
    pub(crate) fn expands_to(&self, term: &str, iri: &str) -> bool {
        let joined = |base: &str, rest: &str| iri.strip_prefix(base) == Some(rest);
        if term.starts_with('@') && (is_keyword(term) || looks_like_keyword(term)) {
            return term == iri;
        }
        if let Some(def) = self.terms.get(term) {
            return def.id == iri;
        }
        if let Some((prefix, suffix)) = term.split_once(':') {
            if prefix == "_" || suffix.starts_with("//") {
                return term == iri;
            }
            if let Some(def) = self.terms.get(prefix)
                && def.prefix
            {
                return joined(&def.id, suffix);
            }
            if is_scheme(prefix) {
                return term == iri;
            }
        }
        joined(&self.vocab, term)
    }

    /// [`Context::expand_term`] as a shared string made by `share` (an
    /// interner), remembered per term: the write path expands the same few
    /// attribute names for every entity of a batch and every request that
    /// uses this context.
    pub fn expand_term_shared(&self, term: &str, share: impl FnOnce(&str) -> Arc<str>) -> Arc<str> {
        if let Some(found) = self.memo.0.read().get(term) {
            return found.clone();
        }
        let shared = share(&self.expand_term(term));
        let mut memo = self.memo.0.write();
        if memo.len() < MEMO_TERMS {
            memo.insert(term.into(), shared.clone());
        }
        shared
    }

    /// Compacts an IRI to the name a client of this context expects, the
    /// inverse of [`Context::expand_term`]: a term whose IRI is exactly `iri`
    /// (plain terms before terms with `@type` or `@container`, then the
    /// shortest, then the lexicographically least); else the IRI relative to
    /// `@vocab`; else a compact IRI with the prefix that leaves the shortest
    /// (then least) result; else `iri` itself. Every candidate other than the
    /// last is checked to expand back to `iri`.
    pub fn compact_iri<'a>(&'a self, iri: &'a str) -> Cow<'a, str> {
        if let Some(term) = self.inverse.get(iri) {
            return Cow::Borrowed(term);
        }
        if let Some(rest) = iri.strip_prefix(self.vocab.as_str())
            && !rest.is_empty()
            && self.expands_to(rest, iri)
        {
            return Cow::Borrowed(rest);
        }
        let mut best: Option<String> = None;
        for (prefix_iri, term) in &self.prefixes {
            let Some(suffix) = iri.strip_prefix(prefix_iri.as_str()) else {
                continue;
            };
            if suffix.is_empty() {
                continue;
            }
            let candidate = format!("{term}:{suffix}");
            let shorter = match &best {
                None => true,
                Some(b) => (candidate.len(), &candidate) < (b.len(), b),
            };
            if shorter && self.expands_to(&candidate, iri) {
                best = Some(candidate);
            }
        }
        match best {
            Some(c) => Cow::Owned(c),
            None => Cow::Borrowed(iri),
        }
    }
}

/// The mutable state of context processing.
struct Builder<'c> {
    terms: HashMap<String, TermDefinition>,
    /// The `@vocab` set by the contexts processed so far, if any.
    vocab: Option<String>,
    /// The core context user contexts are processed on top of; `None` while
    /// building a core context itself.
    core: Option<&'c Context>,
    /// Remote contexts processed so far.
    inclusions: usize,
    /// How many core context documents enclose the definitions being
    /// processed (a core context may use scoped contexts, a user context
    /// may not).
    in_core: usize,
}

/// Where a term stands while one local context is processed.
#[derive(Clone, Copy, PartialEq)]
enum Defined {
    InProgress,
    Done,
}

impl Builder<'_> {
    /// The Context Processing algorithm for one (possibly compound) context.
    fn process(
        &mut self,
        ctx: &Value,
        loader: &Loader<'_>,
        chain: &mut Vec<String>,
        depth: usize,
    ) -> Result<(), ContextError> {
        if depth > MAX_ARRAY_DEPTH {
            return Err(ContextError::Invalid(
                "context overflow: arrays nested too deeply".into(),
            ));
        }
        match ctx {
            Value::Array(items) => {
                for item in items {
                    self.process(item, loader, chain, depth + 1)?;
                }
                Ok(())
            }
            Value::Null => {
                // Resetting goes back to the initial context, which for
                // NGSI-LD already holds the core terms.
                self.terms = self.core.map(|c| c.terms.clone()).unwrap_or_default();
                self.vocab = None;
                Ok(())
            }
            Value::String(url) => self.process_remote(url, loader, chain, depth),
            Value::Object(map) => self.process_object(map, loader, chain),
            _ => Err(ContextError::Invalid(
                "invalid local context: expected an object, a URL, an array or null".into(),
            )),
        }
    }

    /// Processes a context referenced by URL.
    fn process_remote(
        &mut self,
        url: &str,
        loader: &Loader<'_>,
        chain: &mut Vec<String>,
        depth: usize,
    ) -> Result<(), ContextError> {
        // The current core context is applied last anyway.
        if self.core.is_some() && core::is_current_core_url(url) {
            return Ok(());
        }
        if chain.iter().any(|u| u == url) {
            return Err(ContextError::Invalid(format!(
                "recursive context inclusion: {url} includes itself"
            )));
        }
        if chain.len() >= MAX_REMOTE_DEPTH {
            return Err(ContextError::Invalid(format!(
                "context overflow: more than {MAX_REMOTE_DEPTH} nested remote contexts at {url}"
            )));
        }
        self.inclusions += 1;
        if self.inclusions > MAX_INCLUSIONS {
            return Err(ContextError::Invalid(format!(
                "context overflow: more than {MAX_INCLUSIONS} remote context inclusions"
            )));
        }
        let doc = loader(url).ok_or_else(|| ContextError::NotAvailable {
            url: url.to_owned(),
            reason: "not loaded".into(),
        })?;
        let inner = remote_context_member(url, &doc)?;
        let core_doc = usize::from(core::is_core_context_url(url));
        chain.push(url.to_owned());
        self.in_core += core_doc;
        let result = self.process(inner, loader, chain, depth + 1);
        self.in_core -= core_doc;
        chain.pop();
        result
    }

    /// Processes one local context object.
    fn process_object(
        &mut self,
        map: &Map<String, Value>,
        loader: &Loader<'_>,
        chain: &mut [String],
    ) -> Result<(), ContextError> {
        if let Some(version) = map.get("@version")
            && version.as_f64() != Some(1.1)
        {
            return Err(ContextError::Invalid(format!(
                "invalid @version value {version}: only 1.1 is supported"
            )));
        }
        if let Some(import) = map.get("@import") {
            let Value::String(url) = import else {
                return Err(ContextError::Invalid(
                    "invalid @import value: expected a URL".into(),
                ));
            };
            self.process_import(url, map, loader, chain)?;
            return Ok(());
        }
        self.process_definitions(map)
    }

    /// Merges an `@import`ed context object under the importing one (JSON-LD
    /// 1.1, Context Processing step 5.6).
    fn process_import(
        &mut self,
        url: &str,
        map: &Map<String, Value>,
        loader: &Loader<'_>,
        chain: &mut [String],
    ) -> Result<(), ContextError> {
        if chain.iter().any(|u| u == url) {
            return Err(ContextError::Invalid(format!(
                "recursive context inclusion: {url} imports itself"
            )));
        }
        let doc = loader(url).ok_or_else(|| ContextError::NotAvailable {
            url: url.to_owned(),
            reason: "not loaded".into(),
        })?;
        let Value::Object(imported) = remote_context_member(url, &doc)? else {
            return Err(ContextError::Invalid(format!(
                "invalid remote context: @import of {url} is not an object"
            )));
        };
        if imported.contains_key("@import") {
            return Err(ContextError::Invalid(format!(
                "invalid context entry: {url} contains @import"
            )));
        }
        let mut merged = imported.clone();
        for (k, v) in map {
            if k != "@import" {
                merged.insert(k.clone(), v.clone());
            }
        }
        self.process_definitions(&merged)
    }

    /// Handles `@vocab`, `@protected` and every term definition of a local
    /// context object.
    fn process_definitions(&mut self, map: &Map<String, Value>) -> Result<(), ContextError> {
        let protected_default = match map.get("@protected") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(ContextError::Invalid("invalid @protected value".into())),
        };
        if let Some(vocab) = map.get("@vocab") {
            match vocab {
                Value::Null => self.vocab = None,
                Value::String(v) if v.is_empty() => {
                    // Relative to @base, which NGSI-LD does not use: ignored.
                }
                Value::String(v) => {
                    let expanded =
                        self.expand_iri(v, map, &mut HashMap::new(), protected_default)?;
                    if !is_absolute_iri(&expanded) {
                        return Err(ContextError::Invalid(format!("invalid vocab mapping {v}")));
                    }
                    self.vocab = Some(expanded);
                }
                _ => return Err(ContextError::Invalid("invalid vocab mapping".into())),
            }
        }
        let mut defined: HashMap<String, Defined> = HashMap::new();
        for key in map.keys() {
            self.define(key, map, &mut defined, protected_default)?;
        }
        Ok(())
    }

    /// The vocabulary currently in force while processing.
    fn current_vocab(&self) -> Option<&str> {
        match (&self.vocab, self.core) {
            (Some(v), _) => Some(v),
            (None, Some(core)) => Some(&core.vocab),
            (None, None) => None,
        }
    }

    /// The Create Term Definition algorithm.
    fn define(
        &mut self,
        term: &str,
        local: &Map<String, Value>,
        defined: &mut HashMap<String, Defined>,
        protected_default: bool,
    ) -> Result<(), ContextError> {
        match defined.get(term) {
            Some(Defined::Done) => return Ok(()),
            Some(Defined::InProgress) => {
                return Err(ContextError::Invalid(format!(
                    "cyclic IRI mapping for term {term}"
                )));
            }
            None => {}
        }
        if term.is_empty() {
            return Err(ContextError::Invalid(
                "invalid term definition: empty term".into(),
            ));
        }
        if matches!(
            term,
            "@base"
                | "@vocab"
                | "@version"
                | "@language"
                | "@direction"
                | "@protected"
                | "@propagate"
                | "@import"
        ) {
            defined.insert(term.to_owned(), Defined::Done);
            return Ok(());
        }
        if term.starts_with('@') && (is_keyword(term) || looks_like_keyword(term)) {
            // Keywords cannot be redefined (except `@type` in JSON-LD 1.1,
            // which only changes container behaviour NGSI-LD does not use);
            // keyword-like terms are ignored.
            defined.insert(term.to_owned(), Defined::Done);
            return Ok(());
        }
        // A user context cannot change a core term: the core context is
        // applied last, so the core definition is what stays.
        if let Some(existing) = self.terms.get(term)
            && existing.core
            && self.core.is_some()
        {
            defined.insert(term.to_owned(), Defined::Done);
            return Ok(());
        }
        let Some(value) = local.get(term) else {
            return Ok(());
        };
        defined.insert(term.to_owned(), Defined::InProgress);
        let result = self.create_definition(term, value, local, defined, protected_default);
        defined.insert(term.to_owned(), Defined::Done);
        let Some(def) = result? else {
            self.remove_term(term)?;
            return Ok(());
        };
        if let Some(existing) = self.terms.get(term)
            && existing.protected
        {
            if existing.same_meaning(&def) {
                // An identical restatement keeps the protected original
                // (JSON-LD 1.1, Create Term Definition step 27.2).
                return Ok(());
            }
            return Err(ContextError::Invalid(format!(
                "protected term redefinition: {term}"
            )));
        }
        self.terms.insert(term.to_owned(), def);
        Ok(())
    }

    /// Drops a term defined as `null` (or with `"@id": null`). The term then
    /// falls back to `@vocab`, which differs from JSON-LD (where it would be
    /// dropped from documents) but keeps expansion total.
    fn remove_term(&mut self, term: &str) -> Result<(), ContextError> {
        if let Some(existing) = self.terms.get(term)
            && existing.protected
        {
            return Err(ContextError::Invalid(format!(
                "protected term redefinition: {term}"
            )));
        }
        self.terms.remove(term);
        Ok(())
    }

    /// Builds the definition of `term` from its value; `None` means the term
    /// maps to `null`.
    fn create_definition(
        &mut self,
        term: &str,
        value: &Value,
        local: &Map<String, Value>,
        defined: &mut HashMap<String, Defined>,
        protected_default: bool,
    ) -> Result<Option<TermDefinition>, ContextError> {
        let (map, simple) = match value {
            Value::Null => return Ok(None),
            Value::String(id) => {
                let mut m = Map::new();
                m.insert("@id".into(), Value::String(id.clone()));
                (Cow::Owned(m), true)
            }
            Value::Object(m) => (Cow::Borrowed(m), false),
            _ => {
                return Err(ContextError::Invalid(format!(
                    "invalid term definition for {term}: expected a string, an object or null"
                )));
            }
        };
        // NGSI-LD: a user @context shall not contain scoped contexts
        // (ETSI GS CIM 009 v1.9.1, clause 5.5.7).
        if map.contains_key("@context") && self.core.is_some() && self.in_core == 0 {
            return Err(ContextError::Invalid(format!(
                "the term definition of {term} has a scoped context, which a user @context cannot have"
            )));
        }
        let protected = match map.get("@protected") {
            None => protected_default,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ContextError::Invalid(format!(
                    "invalid @protected value for {term}"
                )));
            }
        };
        let mut reverse = false;
        let id = if let Some(rev) = map.get("@reverse") {
            let Value::String(rev) = rev else {
                return Err(ContextError::Invalid(format!(
                    "invalid IRI mapping for {term}"
                )));
            };
            reverse = true;
            self.expand_iri(rev, local, defined, protected_default)?
        } else {
            match map.get("@id") {
                Some(Value::Null) => return Ok(None),
                Some(Value::String(id)) if id != term => {
                    if !is_keyword(id) && looks_like_keyword(id) {
                        // Keyword-like values are ignored (step 14.2.2).
                        return Ok(None);
                    }
                    if id == "@context" {
                        return Err(ContextError::Invalid(format!(
                            "invalid keyword alias {term}"
                        )));
                    }
                    self.expand_iri(id, local, defined, protected_default)?
                }
                Some(Value::String(_)) | None => {
                    self.term_iri(term, local, defined, protected_default)?
                }
                Some(_) => {
                    return Err(ContextError::Invalid(format!(
                        "invalid IRI mapping for {term}"
                    )));
                }
            }
        };
        if !is_keyword(&id) && !is_absolute_iri(&id) {
            return Err(ContextError::Invalid(format!(
                "invalid IRI mapping for {term}: {id} is not an absolute IRI"
            )));
        }
        let type_mapping = match map.get("@type") {
            None => None,
            Some(Value::String(t)) => {
                if matches!(t.as_str(), "@id" | "@vocab" | "@json" | "@none") {
                    Some(t.clone())
                } else if t.starts_with('@') {
                    return Err(ContextError::Invalid(format!(
                        "invalid type mapping {t} for {term}"
                    )));
                } else {
                    let expanded = self.expand_iri(t, local, defined, protected_default)?;
                    if !is_absolute_iri(&expanded) {
                        return Err(ContextError::Invalid(format!(
                            "invalid type mapping {t} for {term}"
                        )));
                    }
                    Some(expanded)
                }
            }
            Some(_) => {
                return Err(ContextError::Invalid(format!(
                    "invalid type mapping for {term}"
                )));
            }
        };
        let mut container = Vec::new();
        match map.get("@container") {
            None | Some(Value::Null) => {}
            Some(Value::String(c)) => container.push(c.clone()),
            Some(Value::Array(cs)) => {
                for c in cs {
                    let Value::String(c) = c else {
                        return Err(ContextError::Invalid(format!(
                            "invalid container mapping for {term}"
                        )));
                    };
                    container.push(c.clone());
                }
            }
            Some(_) => {
                return Err(ContextError::Invalid(format!(
                    "invalid container mapping for {term}"
                )));
            }
        }
        if let Some(bad) = container.iter().find(|c| !CONTAINERS.contains(&c.as_str())) {
            return Err(ContextError::Invalid(format!(
                "invalid container mapping {bad} for {term}"
            )));
        }
        container.sort();
        container.dedup();
        let prefix = match map.get("@prefix") {
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ContextError::Invalid(format!(
                    "invalid @prefix value for {term}"
                )));
            }
            None => {
                simple
                    && !term.contains(':')
                    && !term.contains('/')
                    && (ends_with_gen_delim(&id) || id.starts_with("_:"))
            }
        };
        let scoped_context = map.get("@context").map(|c| Arc::new(c.clone()));
        Ok(Some(TermDefinition {
            id,
            type_mapping,
            container,
            prefix,
            protected,
            reverse,
            core: false,
            scoped_context,
        }))
    }

    /// The IRI of a term that has no `@id` of its own (or whose `@id` is
    /// the term itself): a compact IRI, an absolute IRI, or the term
    /// appended to `@vocab`.
    fn term_iri(
        &mut self,
        term: &str,
        local: &Map<String, Value>,
        defined: &mut HashMap<String, Defined>,
        protected_default: bool,
    ) -> Result<String, ContextError> {
        if term.contains(':') {
            return self.expand_iri(term, local, defined, protected_default);
        }
        match self.current_vocab() {
            Some(vocab) => Ok(format!("{vocab}{term}")),
            None => Err(ContextError::Invalid(format!(
                "invalid IRI mapping for {term}: no @vocab to make it absolute"
            ))),
        }
    }

    /// Vocabulary-relative IRI expansion during context processing, which may
    /// define the terms it depends on first (JSON-LD 1.1, IRI Expansion steps
    /// 3 and 6).
    fn expand_iri(
        &mut self,
        value: &str,
        local: &Map<String, Value>,
        defined: &mut HashMap<String, Defined>,
        protected_default: bool,
    ) -> Result<String, ContextError> {
        if value.starts_with('@') && (is_keyword(value) || looks_like_keyword(value)) {
            return Ok(value.to_owned());
        }
        // A self-reference such as `"attributeCount": "attributeCount"` (in
        // several published core contexts) is a cycle in the strict
        // algorithm; it is read as vocabulary-relative instead.
        if local.contains_key(value) && defined.get(value) != Some(&Defined::InProgress) {
            self.define(value, local, defined, protected_default)?;
        }
        if defined.get(value) != Some(&Defined::InProgress)
            && let Some(def) = self.terms.get(value)
        {
            return Ok(def.id.clone());
        }
        if let Some((prefix, suffix)) = value.split_once(':') {
            if prefix == "_" || suffix.starts_with("//") {
                return Ok(value.to_owned());
            }
            if local.contains_key(prefix) && defined.get(prefix) != Some(&Defined::InProgress) {
                self.define(prefix, local, defined, protected_default)?;
            }
            if let Some(def) = self.terms.get(prefix)
                && def.prefix
            {
                return Ok(format!("{}{suffix}", def.id));
            }
            if is_scheme(prefix) {
                return Ok(value.to_owned());
            }
        }
        match self.current_vocab() {
            Some(vocab) => Ok(format!("{vocab}{value}")),
            None => Ok(value.to_owned()),
        }
    }
}

/// The `@context` member of a fetched context document (JSON-LD 1.1, Context
/// Processing step 5.2.5: the document's top-level `@context` is the context).
pub(crate) fn remote_context_member<'v>(
    url: &str,
    doc: &'v Value,
) -> Result<&'v Value, ContextError> {
    doc.as_object()
        .and_then(|o| o.get("@context"))
        .ok_or_else(|| {
            ContextError::Invalid(format!(
                "invalid remote context: {url} is not a JSON object with an @context member"
            ))
        })
}
