//! EntityMaps (clauses 4.5.25, 5.5.9.3, 5.5.14, 5.14): the set of entities
//! a query selected, fixed when the map is made, with where each is held
//! (`@none`: here; else the ids of the registrations that answered it), so
//! that a client pages through a stable set. The maps live in memory only,
//! bounded by the number of entries of all maps together.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use ngsi_model::{ErrorKind, NgsiError, NgsiResult};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use crate::query::Within;
use crate::registrations::Origin;
use crate::{
    Broker, Ctx, EntityQuery, QueryResult, Retrieved, TemporalQuery, TemporalResult, ViewOptions,
};

/// The key of `entityMap` that stands for this broker (clause 4.5.25).
pub const HERE: &str = "@none";
/// The longest lifetime a map gets, whatever the client suggests.
pub const MAX_LIFETIME_MICROS: i64 = 86_400_000_000;
/// The response and request header naming a map (Table 6.4.3.2-2).
pub const HEADER: &str = "NGSILD-EntityMap";
/// Where the maps are served; a map's location is this and its id.
pub const BASE_PATH: &str = "/ngsi-ld/v1/entityMaps/";

/// How long maps live and how many entries they may hold.
#[derive(Debug, Clone, Copy)]
pub struct EntityMapConfig {
    /// The lifetime of a map whose client suggests none, in microseconds.
    pub lifetime_micros: i64,
    /// The most entries all maps together hold.
    pub max_entries: usize,
}

impl Default for EntityMapConfig {
    fn default() -> Self {
        Self {
            lifetime_micros: 300_000_000,
            max_entries: 1_000_000,
        }
    }
}

/// What a read asks of EntityMaps: the `entityMap` and `entityMapLifetime`
/// parameters and the `NGSILD-EntityMap` header.
#[derive(Debug, Clone, Default)]
pub struct MapRequest {
    /// `entityMap=true`: answer with a map, made unless `named` is live.
    pub wanted: bool,
    /// The id of the map the `NGSILD-EntityMap` header names.
    pub named: Option<String>,
    /// The lifetime the client suggests (`entityMapLifetime`), in
    /// microseconds.
    pub lifetime_micros: Option<i64>,
}

impl MapRequest {
    /// Reads the parameters and the header. The header may hold the map's
    /// location (absolute or a path) or its bare id: its last path segment
    /// is the id.
    pub fn from_parts(
        entity_map: Option<&str>,
        lifetime: Option<&str>,
        header: Option<&str>,
    ) -> NgsiResult<Self> {
        let wanted = match entity_map {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(NgsiError::bad_data(format!(
                    "entityMap must be true or false, not {other:?}"
                )));
            }
        };
        let lifetime_micros = lifetime.map(parse_lifetime).transpose()?;
        let named = header.map(map_id_of).transpose()?;
        Ok(Self {
            wanted,
            named,
            lifetime_micros,
        })
    }

    /// Whether the read involves a map at all.
    pub fn involved(&self) -> bool {
        self.wanted || self.named.is_some()
    }
}

/// `entityMapLifetime`: an ISO 8601 duration (Table 6.4.3.2-1), kept
/// within [`MAX_LIFETIME_MICROS`].
pub fn parse_lifetime(s: &str) -> NgsiResult<i64> {
    let now = ngsi_model::time::now_micros();
    ngsi_model::time::IsoDuration::parse(s)
        .and_then(|d| d.add_to(now))
        .map(|t| (t - now).clamp(0, MAX_LIFETIME_MICROS))
        .ok_or_else(|| {
            NgsiError::bad_data(format!(
                "entityMapLifetime {s:?} is not an ISO 8601 duration"
            ))
        })
}

/// The map id a `NGSILD-EntityMap` header names: the last path segment,
/// percent-decoded, which must be a URI.
fn map_id_of(header: &str) -> NgsiResult<String> {
    let header = header.trim();
    let segment = match header.find(BASE_PATH.trim_start_matches("/ngsi-ld/v1")) {
        Some(at) => &header[at + "/entityMaps/".len()..],
        None => header,
    };
    let id = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| NgsiError::bad_data("the NGSILD-EntityMap header is not UTF-8"))?;
    crate::check_uri(&id, "EntityMap")?;
    Ok(id.into_owned())
}

/// The location of map `id`, for the `NGSILD-EntityMap` header.
pub fn location(id: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b':')
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    format!(
        "{BASE_PATH}{}",
        percent_encoding::utf8_percent_encode(id, SEGMENT)
    )
}

/// The map a read used, for its answer's header and status.
#[derive(Debug, Clone)]
pub struct MapAnswer {
    /// The map's id.
    pub id: Arc<str>,
    /// Made by this read (201 for queries).
    pub created: bool,
}

/// One entity of a map and where it is held.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The entity id.
    pub id: Arc<str>,
    /// The registrations that hold it, with [`HERE`] for this broker; empty
    /// means here only (the common case costs no allocation).
    pub held: Box<[Arc<str>]>,
}

impl Entry {
    /// An entity held here only.
    pub fn here(id: Arc<str>) -> Self {
        Self {
            id,
            held: Box::default(),
        }
    }

    fn sources(&self) -> impl Iterator<Item = &str> {
        let here = self.held.is_empty().then_some(HERE);
        here.into_iter().chain(self.held.iter().map(|s| &**s))
    }
}

/// What a read needs of a live map: its entity ids in order and the
/// registrations it names.
#[derive(Debug, Clone)]
pub struct MapView {
    /// The map's id.
    pub id: Arc<str>,
    /// The ids of its entities, sorted.
    pub ids: Arc<[Arc<str>]>,
    /// The registrations named by some entry.
    pub sources: Vec<Arc<str>>,
}

#[derive(Debug)]
struct Stored {
    expires_at: i64,
    entries: Vec<Entry>,
}

/// The EntityMaps of all tenants.
#[derive(Debug)]
pub struct EntityMaps {
    config: EntityMapConfig,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    maps: HashMap<(String, Arc<str>), Stored>,
    /// Entries of all maps.
    entries: usize,
}

impl Inner {
    fn live(&mut self, tenant: &str, id: &str, now: i64) -> Option<&mut Stored> {
        let key = (tenant.to_string(), Arc::<str>::from(id));
        if self.maps.get(&key).is_some_and(|m| m.expires_at <= now) {
            self.remove(&key);
        }
        self.maps.get_mut(&key)
    }

    fn remove(&mut self, key: &(String, Arc<str>)) -> bool {
        match self.maps.remove(key) {
            Some(m) => {
                self.entries -= m.entries.len();
                true
            }
            None => false,
        }
    }

    /// Drops expired maps, then the ones that expire first until `room`
    /// more entries fit under `max`.
    fn make_room(&mut self, room: usize, max: usize, now: i64) {
        let expired: Vec<_> = self
            .maps
            .iter()
            .filter(|(_, m)| m.expires_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            self.remove(&k);
        }
        if self.entries + room <= max {
            return;
        }
        let mut by_expiry: Vec<_> = self
            .maps
            .iter()
            .map(|(k, m)| (m.expires_at, k.clone()))
            .collect();
        by_expiry.sort();
        for (_, k) in by_expiry {
            if self.entries + room <= max {
                break;
            }
            self.remove(&k);
        }
    }
}

impl EntityMaps {
    /// No maps yet.
    pub fn new(config: EntityMapConfig) -> Self {
        Self {
            config,
            inner: Mutex::default(),
        }
    }

    /// Keeps a new map of `entries` (sorted by id here) for `tenant`. Fails
    /// when the entries alone are more than all maps may hold.
    pub fn insert(
        &self,
        tenant: &str,
        mut entries: Vec<Entry>,
        lifetime_micros: Option<i64>,
    ) -> NgsiResult<Arc<str>> {
        if entries.len() > self.config.max_entries {
            return Err(NgsiError::bad_data(format!(
                "the query selects {} entities, more than an EntityMap may hold ({})",
                entries.len(),
                self.config.max_entries
            )));
        }
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        entries.dedup_by(|a, b| a.id == b.id);
        let now = ngsi_model::time::now_micros();
        let lifetime = lifetime_micros
            .unwrap_or(self.config.lifetime_micros)
            .clamp(0, MAX_LIFETIME_MICROS);
        let id: Arc<str> = Arc::from(format!(
            "urn:ngsi-ld:EntityMap:{}",
            crate::subscriptions::unique_suffix()
        ));
        let mut inner = self.inner.lock();
        inner.make_room(entries.len(), self.config.max_entries, now);
        inner.entries += entries.len();
        inner.maps.insert(
            (tenant.to_string(), id.clone()),
            Stored {
                expires_at: now.saturating_add(lifetime),
                entries,
            },
        );
        Ok(id)
    }

    /// The live map `id` of `tenant` for a read.
    pub fn view(&self, tenant: &str, id: &str) -> Option<MapView> {
        let now = ngsi_model::time::now_micros();
        let mut inner = self.inner.lock();
        let m = inner.live(tenant, id, now)?;
        let ids: Arc<[Arc<str>]> = m.entries.iter().map(|e| e.id.clone()).collect();
        let mut sources: Vec<Arc<str>> = m
            .entries
            .iter()
            .flat_map(|e| e.held.iter().filter(|s| &***s != HERE).cloned())
            .collect();
        sources.sort();
        sources.dedup();
        Some(MapView {
            id: Arc::from(id),
            ids,
            sources,
        })
    }

    /// The registrations that hold `entity` by map `id`: `None` when the
    /// map is gone, empty when the map holds the entity here only or not
    /// at all.
    pub fn sources_of(&self, tenant: &str, id: &str, entity: &str) -> Option<Vec<Arc<str>>> {
        let now = ngsi_model::time::now_micros();
        let mut inner = self.inner.lock();
        let m = inner.live(tenant, id, now)?;
        let held = match m.entries.binary_search_by(|e| (*e.id).cmp(entity)) {
            Ok(at) => &m.entries[at].held[..],
            Err(_) => &[],
        };
        Some(held.iter().filter(|s| &***s != HERE).cloned().collect())
    }

    /// Whether map `id` of `tenant` exists and has not expired.
    pub fn is_live(&self, tenant: &str, id: &str) -> bool {
        let now = ngsi_model::time::now_micros();
        self.inner.lock().live(tenant, id, now).is_some()
    }

    /// Removes the entities held here only whose ids `keep` rejects, among
    /// those up to `through` (all when `None`): a page that visited them
    /// found they no longer match (clause 5.5.9.3).
    pub fn prune(
        &self,
        tenant: &str,
        id: &str,
        through: Option<&str>,
        keep: impl Fn(&str) -> bool,
    ) {
        let now = ngsi_model::time::now_micros();
        let mut inner = self.inner.lock();
        let Some(m) = inner.live(tenant, id, now) else {
            return;
        };
        let before = m.entries.len();
        m.entries
            .retain(|e| !e.held.is_empty() || through.is_some_and(|t| *e.id > *t) || keep(&e.id));
        let removed = before - m.entries.len();
        inner.entries -= removed;
    }

    /// The JSON representation of map `id` (clause 4.5.25).
    pub fn render(&self, tenant: &str, id: &str) -> Option<Value> {
        let now = ngsi_model::time::now_micros();
        let mut inner = self.inner.lock();
        let m = inner.live(tenant, id, now)?;
        let entities: Map<String, Value> = m
            .entries
            .iter()
            .map(|e| (e.id.to_string(), json!(e.sources().collect::<Vec<_>>())))
            .collect();
        Some(json!({
            "id": id,
            "type": "EntityMap",
            "expiresAt": ngsi_model::time::format_micros(m.expires_at),
            "entityMap": entities,
            "linkedMaps": {},
        }))
    }

    /// Sets the expiry of map `id` (Update EntityMap, clause 5.14.2), kept
    /// within [`MAX_LIFETIME_MICROS`] from now; false when there is no such
    /// map. A time already past ends the map.
    pub fn set_expiry(&self, tenant: &str, id: &str, expires_at: i64) -> bool {
        let now = ngsi_model::time::now_micros();
        let mut inner = self.inner.lock();
        let Some(m) = inner.live(tenant, id, now) else {
            return false;
        };
        m.expires_at = expires_at.min(now.saturating_add(MAX_LIFETIME_MICROS));
        true
    }

    /// Deletes map `id`; false when there is no such map.
    pub fn remove(&self, tenant: &str, id: &str) -> bool {
        let now = ngsi_model::time::now_micros();
        let mut inner = self.inner.lock();
        if inner.live(tenant, id, now).is_none() {
            return false;
        }
        inner.remove(&(tenant.to_string(), Arc::from(id)))
    }

    /// Entries of all maps (for tests and metrics).
    pub fn entries(&self) -> usize {
        self.inner.lock().entries
    }
}

impl Broker {
    /// Query Entities (clause 5.7.2.4) when the read involves an EntityMap:
    /// the live map the client names restricts the query to its entities
    /// and registrations (and loses those the page found no longer
    /// matching, clause 5.5.9.3); otherwise a map is made first (also when
    /// the named one is gone) from all matches here and at the sources. A
    /// query that selects more than maps may hold is answered without one.
    pub async fn query_entities_mapped(
        &self,
        tenant: &str,
        ctx: &Ctx,
        query: &EntityQuery,
        origin: &Origin<'_>,
        map: &MapRequest,
    ) -> NgsiResult<(QueryResult, Option<MapAnswer>)> {
        if !map.involved() {
            let result = self
                .query_entities_distributed(tenant, ctx, query, origin)
                .await?;
            return Ok((result, None));
        }
        if query.split {
            // A map lists the entities each place matched on its own.
            return Err(NgsiError::new(
                ErrorKind::OperationNotSupported,
                "an EntityMap is not made for a query with splitEntities=true",
            ));
        }
        let made = self.live_or_made(tenant, map, async {
            self.make_entity_map(tenant, ctx, query, origin, map.lifetime_micros)
                .await
                .map(|(view, _)| view)
        });
        let Some((view, created)) = made.await? else {
            let result = self
                .query_entities_distributed(tenant, ctx, query, origin)
                .await?;
            return Ok((result, None));
        };
        let within = Arc::new(Within {
            ids: view.ids.clone(),
            met: Default::default(),
        });
        let mut restricted = query.clone();
        restricted.within = Some(within.clone());
        let origin = Origin {
            only: Some(&view.sources),
            ..*origin
        };
        let result = self
            .query_entities_distributed(tenant, ctx, &restricted, &origin)
            .await?;
        self.prune_entity_map(tenant, &view.id, &restricted, &within);
        Ok((
            result,
            Some(MapAnswer {
                id: view.id,
                created,
            }),
        ))
    }

    /// The live map the read names, else the one `make` makes (and whether
    /// it was made); `None` when the read selects more than a map may hold
    /// (it is answered without one).
    async fn live_or_made(
        &self,
        tenant: &str,
        map: &MapRequest,
        make: impl Future<Output = NgsiResult<MapView>>,
    ) -> NgsiResult<Option<(MapView, bool)>> {
        if let Some(view) = map
            .named
            .as_deref()
            .and_then(|id| self.entity_maps.view(tenant, id))
        {
            return Ok(Some((view, false)));
        }
        match make.await {
            Ok(view) => Ok(Some((view, true))),
            Err(e) if e.kind == ErrorKind::TooManyResults => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Drops from map `id` the entities held here only that the query's
    /// page met no more: the store visits the candidates in id order and
    /// stops once the page is full, so every candidate up to the last
    /// match it met was tested. An ordered query visits them otherwise and
    /// prunes nothing.
    fn prune_entity_map(&self, tenant: &str, id: &str, query: &EntityQuery, within: &Within) {
        if query.order_by.is_some() || (query.limit == 0 && !query.count) {
            return;
        }
        let met: HashSet<Arc<str>> = std::mem::take(&mut *within.met.lock())
            .into_iter()
            .collect();
        let window = query.offset.saturating_add(query.limit);
        let through = (!query.count && met.len() >= window)
            .then(|| met.iter().max().cloned())
            .flatten();
        self.entity_maps
            .prune(tenant, id, through.as_deref(), |e| met.contains(e));
    }

    /// Makes an EntityMap of every entity `query` selects here and at the
    /// registered sources (Create EntityMap for Query Entities, clause
    /// 5.14.4): the query's paging is ignored. A query that selects more
    /// than maps may hold fails with TooManyResults.
    pub async fn make_entity_map(
        &self,
        tenant: &str,
        ctx: &Ctx,
        query: &EntityQuery,
        origin: &Origin<'_>,
        lifetime_micros: Option<i64>,
    ) -> NgsiResult<(MapView, Vec<String>)> {
        if !query.wide_enough {
            return Err(crate::query::too_wide());
        }
        crate::query::check_link_depth(query)?;
        let query = &*crate::query::resolve_links(&*self.store, tenant, query);
        let sources = self.query_sources(tenant, query, origin);
        if sources.is_empty() {
            self.check_tenant(tenant)?;
        }
        let mut held: BTreeMap<Arc<str>, Vec<Arc<str>>> = BTreeMap::new();
        if tenant.is_empty() || self.store.tenant_exists(tenant) {
            let met = Mutex::new(Vec::new());
            query.with_selection(|selection| {
                self.visit_matches(tenant, query, selection, |e| met.lock().push(e.id.clone()));
            });
            let here: Arc<str> = Arc::from(HERE);
            for id in met.into_inner() {
                held.entry(id).or_default().push(here.clone());
            }
        }
        let mut warnings = Vec::new();
        if !sources.is_empty() {
            let (answers, w) = self.source_entities(tenant, ctx, origin, sources).await;
            warnings = w;
            for (r, entities) in answers {
                for e in entities.iter().filter(|e| query.selects(e)) {
                    let list = held.entry(e.id.clone()).or_default();
                    if !list.contains(&r.id) {
                        list.push(r.id.clone());
                    }
                }
            }
        }
        if held.len() > self.config.entity_maps.max_entries {
            return Err(NgsiError::new(
                ErrorKind::TooManyResults,
                format!(
                    "the query selects {} entities, more than an EntityMap may hold ({})",
                    held.len(),
                    self.config.entity_maps.max_entries
                ),
            ));
        }
        let entries = held
            .into_iter()
            .map(|(id, list)| match list.as_slice() {
                [only] if &**only == HERE => Entry::here(id),
                _ => Entry {
                    id,
                    held: list.into(),
                },
            })
            .collect();
        let id = self.entity_maps.insert(tenant, entries, lifetime_micros)?;
        let view = self
            .entity_maps
            .view(tenant, &id)
            .ok_or_else(|| NgsiError::internal("a new EntityMap is gone"))?;
        Ok((view, warnings))
    }

    /// Makes an EntityMap of every entity a temporal query selects (Create
    /// EntityMap for Query Temporal Evolution, clause 5.14.5): the entities
    /// held here that have instances in the range and match it. The
    /// temporal API is not forwarded, so every entity is held here.
    pub async fn make_temporal_entity_map(
        &self,
        tenant: &str,
        q: &TemporalQuery,
        lifetime_micros: Option<i64>,
    ) -> NgsiResult<MapView> {
        if !q.has_selector() {
            return Err(crate::temporal::too_wide());
        }
        self.check_tenant(tenant)?;
        let max = self.config.entity_maps.max_entries;
        let matched = self
            .temporal_matches(tenant, q, max.saturating_add(1))
            .await?;
        if matched.len() > max {
            return Err(NgsiError::new(
                ErrorKind::TooManyResults,
                format!("the query selects more entities than an EntityMap may hold ({max})"),
            ));
        }
        let entries = matched
            .into_iter()
            .map(|(he, _)| Entry::here(he.id.clone()))
            .collect();
        let id = self.entity_maps.insert(tenant, entries, lifetime_micros)?;
        self.entity_maps
            .view(tenant, &id)
            .ok_or_else(|| NgsiError::internal("a new EntityMap is gone"))
    }

    /// Query Temporal Evolution (clause 5.7.4.4) with an EntityMap, as
    /// [`Broker::query_entities_mapped`]: the live map restricts the query,
    /// else one is made (of the entities held here: the sources are asked
    /// only for the entities of the maps of entity queries). Nothing is
    /// pruned: the temporal selection tests candidates in chunks.
    pub async fn query_temporal_mapped(
        &self,
        tenant: &str,
        ctx: &Ctx,
        q: &TemporalQuery,
        origin: &Origin<'_>,
        map: &MapRequest,
    ) -> NgsiResult<(TemporalResult, Vec<String>, Option<MapAnswer>)> {
        let unmapped = || async {
            let (result, warnings) = self
                .query_temporal_distributed(tenant, ctx, q, origin)
                .await?;
            Ok((result, warnings, None))
        };
        if !map.involved() {
            return unmapped().await;
        }
        let made = self.live_or_made(
            tenant,
            map,
            self.make_temporal_entity_map(tenant, q, map.lifetime_micros),
        );
        let Some((view, created)) = made.await? else {
            return unmapped().await;
        };
        let mut restricted = q.clone();
        restricted.entities.within = Some(Arc::new(Within {
            ids: view.ids.clone(),
            met: Default::default(),
        }));
        let origin = Origin {
            only: Some(&view.sources),
            ..*origin
        };
        let (result, warnings) = self
            .query_temporal_distributed(tenant, ctx, &restricted, &origin)
            .await?;
        let answer = MapAnswer {
            id: view.id,
            created,
        };
        Ok((result, warnings, Some(answer)))
    }

    /// Retrieve Entity (clause 5.7.1.4) with an EntityMap: a live map
    /// names the registrations asked for the entity (none when it holds
    /// the entity here only, or not at all); otherwise a map of where the
    /// entity was found is made.
    pub async fn retrieve_entity_mapped(
        &self,
        tenant: &str,
        ctx: &Ctx,
        id: &str,
        view: &ViewOptions,
        origin: &Origin<'_>,
        map: &MapRequest,
    ) -> NgsiResult<(Retrieved, Vec<String>, Option<MapAnswer>)> {
        crate::query::check_projection_depth(view)?;
        let named = map.named.as_deref().and_then(|m| {
            self.entity_maps
                .sources_of(tenant, m, id)
                .map(|sources| (m, sources))
        });
        if let Some((map_id, sources)) = named {
            let origin = Origin {
                only: Some(&sources),
                local: origin.local || sources.is_empty(),
                ..*origin
            };
            let (retrieved, warnings) = self
                .retrieve_entity_distributed(tenant, ctx, id, view, &origin)
                .await?;
            let answer = MapAnswer {
                id: Arc::from(map_id),
                created: false,
            };
            return Ok((retrieved, warnings, Some(answer)));
        }
        let (retrieved, warnings) = self
            .retrieve_entity_distributed(tenant, ctx, id, view, origin)
            .await?;
        if !map.involved() {
            return Ok((retrieved, warnings, None));
        }
        let entry = match retrieved.held_by.as_slice() {
            [] => Entry::here(Arc::from(id)),
            [only] if &**only == HERE => Entry::here(Arc::from(id)),
            list => Entry {
                id: Arc::from(id),
                held: list.into(),
            },
        };
        let map_id = self
            .entity_maps
            .insert(tenant, vec![entry], map.lifetime_micros)?;
        Ok((
            retrieved,
            warnings,
            Some(MapAnswer {
                id: map_id,
                created: true,
            }),
        ))
    }

    /// The map of a read of one entity held here (Retrieve Temporal
    /// Evolution, clause 5.7.3.4, which is not forwarded): the live map the
    /// client names, else a new map of the entity.
    pub fn entity_map_of_one(
        &self,
        tenant: &str,
        id: &str,
        map: &MapRequest,
    ) -> NgsiResult<Option<MapAnswer>> {
        if let Some(named) = map.named.as_deref()
            && self.entity_maps.is_live(tenant, named)
        {
            return Ok(Some(MapAnswer {
                id: Arc::from(named),
                created: false,
            }));
        }
        if !map.involved() {
            return Ok(None);
        }
        let id = self.entity_maps.insert(
            tenant,
            vec![Entry::here(Arc::from(id))],
            map.lifetime_micros,
        )?;
        Ok(Some(MapAnswer { id, created: true }))
    }

    /// Retrieve EntityMap (clause 5.14.1).
    pub fn entity_map(&self, tenant: &str, id: &str) -> NgsiResult<Value> {
        crate::check_uri(id, "EntityMap id")?;
        self.entity_maps
            .render(tenant, id)
            .ok_or_else(|| map_not_found(id))
    }

    /// Update EntityMap (clause 5.14.2): only `expiresAt` can be changed;
    /// the output-only members are ignored.
    pub fn update_entity_map(&self, tenant: &str, id: &str, fragment: &Value) -> NgsiResult<()> {
        crate::check_uri(id, "EntityMap id")?;
        let Value::Object(m) = fragment else {
            return Err(NgsiError::bad_data(
                "an EntityMap fragment must be a JSON object",
            ));
        };
        let expires_at = match m.get("expiresAt") {
            None => None,
            Some(Value::String(s)) => {
                Some(ngsi_model::time::parse_datetime(s).ok_or_else(|| {
                    NgsiError::bad_data(format!("expiresAt {s:?} is not a DateTime"))
                })?)
            }
            Some(_) => return Err(NgsiError::bad_data("expiresAt must be a DateTime string")),
        };
        let found = match expires_at {
            Some(t) => self.entity_maps.set_expiry(tenant, id, t),
            None => self.entity_maps.is_live(tenant, id),
        };
        if found {
            Ok(())
        } else {
            Err(map_not_found(id))
        }
    }

    /// Delete EntityMap (clause 5.14.3).
    pub fn delete_entity_map(&self, tenant: &str, id: &str) -> NgsiResult<()> {
        crate::check_uri(id, "EntityMap id")?;
        if self.entity_maps.remove(tenant, id) {
            Ok(())
        } else {
            Err(map_not_found(id))
        }
    }
}

fn map_not_found(id: &str) -> NgsiError {
    NgsiError::not_found(format!("EntityMap {id} does not exist or has expired"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn here(ids: &[&str]) -> Vec<Entry> {
        ids.iter().map(|i| Entry::here(Arc::from(*i))).collect()
    }

    #[test]
    fn requests_read_parameters_and_the_header() {
        let r = MapRequest::from_parts(Some("true"), Some("PT1M"), None).unwrap();
        assert!(r.wanted && r.named.is_none());
        assert_eq!(r.lifetime_micros, Some(60_000_000));
        let r = MapRequest::from_parts(
            None,
            None,
            Some("http://h:1026/ngsi-ld/v1/entityMaps/urn%3Angsi-ld%3AEntityMap%3A1"),
        )
        .unwrap();
        assert_eq!(r.named.as_deref(), Some("urn:ngsi-ld:EntityMap:1"));
        let r = MapRequest::from_parts(None, None, Some("urn:ngsi-ld:EntityMap:2")).unwrap();
        assert_eq!(r.named.as_deref(), Some("urn:ngsi-ld:EntityMap:2"));
        let r = MapRequest::from_parts(None, None, Some(&location("urn:x:1"))).unwrap();
        assert_eq!(r.named.as_deref(), Some("urn:x:1"));
        assert!(MapRequest::from_parts(Some("yes"), None, None).is_err());
        assert!(MapRequest::from_parts(Some("true"), Some("1hour"), None).is_err());
        assert!(MapRequest::from_parts(None, None, Some("not a uri")).is_err());
        // A suggested lifetime beyond the ceiling is cut to it.
        assert_eq!(parse_lifetime("P3650D").unwrap(), MAX_LIFETIME_MICROS);
    }

    #[test]
    fn maps_expire_are_pruned_and_stay_within_their_bound() {
        let maps = EntityMaps::new(EntityMapConfig {
            lifetime_micros: 60_000_000,
            max_entries: 5,
        });
        let a = maps
            .insert("t", here(&["urn:c", "urn:a", "urn:b"]), None)
            .unwrap();
        assert_eq!(maps.entries(), 3);
        // Another tenant does not see it.
        assert!(maps.view("", &a).is_none());
        let v = maps.view("t", &a).unwrap();
        assert_eq!(
            v.ids.iter().map(|s| &**s).collect::<Vec<_>>(),
            ["urn:a", "urn:b", "urn:c"]
        );
        // Pruning up to urn:b keeps urn:c whatever `keep` says.
        maps.prune("t", &a, Some("urn:b"), |id| id != "urn:b" && id != "urn:c");
        assert_eq!(maps.view("t", &a).unwrap().ids.len(), 2);
        assert_eq!(maps.entries(), 2);
        // A second map that does not fit pushes out the first.
        let b = maps
            .insert(
                "t",
                here(&["urn:1", "urn:2", "urn:3", "urn:4"]),
                Some(120_000_000),
            )
            .unwrap();
        assert!(maps.view("t", &a).is_none());
        assert_eq!(maps.entries(), 4);
        // One that could never fit is refused.
        assert!(
            maps.insert("t", here(&["1", "2", "3", "4", "5", "6"]), None)
                .is_err()
        );
        // An expiry in the past ends the map.
        assert!(maps.set_expiry("t", &b, 0));
        assert!(maps.render("t", &b).is_none());
        assert!(!maps.remove("t", &b));
        assert_eq!(maps.entries(), 0);
    }

    #[test]
    fn the_representation_names_where_each_entity_is_held() {
        let maps = EntityMaps::new(EntityMapConfig::default());
        let entries = vec![
            Entry::here(Arc::from("urn:a")),
            Entry {
                id: Arc::from("urn:b"),
                held: vec![Arc::from(HERE), Arc::from("urn:reg:1")].into(),
            },
        ];
        let id = maps.insert("", entries, None).unwrap();
        let v = maps.render("", &id).unwrap();
        assert_eq!(v["type"], "EntityMap");
        assert_eq!(v["entityMap"]["urn:a"], json!(["@none"]));
        assert_eq!(v["entityMap"]["urn:b"], json!(["@none", "urn:reg:1"]));
        assert!(v["expiresAt"].as_str().unwrap().ends_with('Z'));
        assert_eq!(maps.view("", &id).unwrap().sources.len(), 1);
        assert_eq!(
            maps.sources_of("", &id, "urn:b").unwrap(),
            vec![Arc::<str>::from("urn:reg:1")]
        );
        assert!(maps.remove("", &id));
    }
}
