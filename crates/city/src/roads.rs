//! The road network: the named expressways and arterials
//! (`roads_data.rs`) plus a generated lattice of secondary and local streets
//! over the built-up grids, joined into one graph usable for routing.
//!
//! Every segment is two-way; the graph holds one directed edge per direction.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use crate::geom::{self, Xy};
use crate::grid::{CELL_M, Grid, cell_centre};
use crate::roads_data::MAJOR_ROADS;
use crate::water::CHANNELS;

/// Functional class of a road.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RoadClass {
    /// 快速路 / 高速公路.
    Expressway,
    /// 主干路.
    Arterial,
    /// 次干路.
    Secondary,
    /// 支路.
    Local,
}

impl RoadClass {
    /// Our name of the class.
    pub fn as_str(self) -> &'static str {
        match self {
            RoadClass::Expressway => "expressway",
            RoadClass::Arterial => "arterial",
            RoadClass::Secondary => "secondary",
            RoadClass::Local => "local",
        }
    }

    /// The Smart Data Models `roadClass` value (OpenStreetMap highway
    /// classes).
    pub fn sdm(self) -> &'static str {
        match self {
            RoadClass::Expressway => "motorway",
            RoadClass::Arterial => "primary",
            RoadClass::Secondary => "secondary",
            RoadClass::Local => "residential",
        }
    }

    /// True for the classes that get a TrafficFlowObserved each.
    pub fn is_main(self) -> bool {
        matches!(self, RoadClass::Expressway | RoadClass::Arterial)
    }
}

/// A node of the road graph.
#[derive(Debug, Clone, Copy)]
pub struct Node {
    /// Position.
    pub pos: Xy,
}

/// A two-way road segment between two nodes.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Stable identifier used in entity ids.
    pub code: String,
    /// Slug of the named road, if it belongs to one.
    pub road: Option<&'static str>,
    /// Chinese name.
    pub name_zh: String,
    /// English name.
    pub name_en: String,
    /// Class.
    pub class: RoadClass,
    /// Lanes per direction.
    pub lanes: u32,
    /// Speed limit in km/h.
    pub speed_kmh: u32,
    /// Start node.
    pub a: usize,
    /// End node.
    pub b: usize,
    /// Length in metres.
    pub length_m: f64,
}

/// A directed edge: one direction of a segment.
#[derive(Debug, Clone, Copy)]
pub struct Edge {
    /// Index of the segment.
    pub segment: usize,
    /// Node the edge leaves.
    pub from: usize,
    /// Node the edge enters.
    pub to: usize,
}

/// The road graph.
#[derive(Debug, Clone, Default)]
pub struct RoadNetwork {
    /// Nodes.
    pub nodes: Vec<Node>,
    /// Segments.
    pub segments: Vec<Segment>,
    /// Directed edges: `2 s` is segment `s` from `a` to `b`, `2 s + 1` back.
    pub edges: Vec<Edge>,
    /// Outgoing edges per node.
    pub out: Vec<Vec<usize>>,
    /// True for nodes of the largest connected component (where vehicles
    /// drive).
    pub in_main: Vec<bool>,
}

/// Longest piece of a named road between two nodes, in metres.
const MAX_PIECE_M: f64 = 800.0;
/// Spacing of the generated lattice, in cells (500 m).
const LATTICE: i32 = 5;

impl RoadNetwork {
    /// Builds the network over the given grids.
    pub fn build(grids: &[Grid]) -> RoadNetwork {
        let mut net = RoadNetwork::default();
        let rivers: Vec<Vec<Xy>> = CHANNELS.iter().map(|c| c.points()).collect();

        // Named roads, densified.
        let mut major_nodes: Vec<(usize, &'static str, bool)> = Vec::new();
        for road in MAJOR_ROADS {
            let mut pts: Vec<Xy> = road
                .line
                .iter()
                .map(|&(lon, lat)| Xy::from_lonlat(lon, lat))
                .collect();
            if road.ring {
                pts.push(pts[0]);
            }
            let mut ids = Vec::new();
            for w in pts.windows(2) {
                let n = (w[0].dist(w[1]) / MAX_PIECE_M).ceil().max(1.0) as usize;
                for k in 0..n {
                    ids.push(w[0].lerp(w[1], k as f64 / n as f64));
                }
            }
            let first = net.nodes.len();
            let count = if road.ring { ids.len() } else { ids.len() + 1 };
            for p in &ids {
                net.nodes.push(Node { pos: *p });
            }
            if !road.ring {
                net.nodes.push(Node {
                    pos: *pts.last().unwrap_or(&pts[0]),
                });
            }
            for k in 0..count {
                let exit = k % 2 == 0 || road.class != RoadClass::Expressway;
                major_nodes.push((first + k, road.slug, exit));
            }
            let pieces = if road.ring { count } else { count - 1 };
            for k in 0..pieces {
                let a = first + k;
                let b = first + (k + 1) % count;
                net.add_segment(Segment {
                    code: format!("{}-{:03}", road.slug, k + 1),
                    road: Some(road.slug),
                    name_zh: road.name_zh.to_string(),
                    name_en: road.name_en.to_string(),
                    class: road.class,
                    lanes: road.lanes,
                    speed_kmh: road.speed_kmh,
                    a,
                    b,
                    length_m: 0.0,
                });
            }
        }

        // Junctions between named roads: nodes of different roads closer than
        // 250 m are joined by a short link.
        for x in 0..major_nodes.len() {
            for y in x + 1..major_nodes.len() {
                let (na, ra, _) = major_nodes[x];
                let (nb, rb, _) = major_nodes[y];
                if ra == rb {
                    continue;
                }
                let d = net.nodes[na].pos.dist(net.nodes[nb].pos);
                if d < 250.0 {
                    net.add_link(na, nb, format!("link-{ra}-{rb}-{na}-{nb}"));
                }
            }
        }

        // The generated lattice over the built-up grids.
        let cells: HashMap<(i32, i32), ()> = grids.iter().map(|g| ((g.i, g.j), ())).collect();
        let mut lattice: HashMap<(i32, i32), usize> = HashMap::new();
        let mut keys: Vec<(i32, i32)> = grids
            .iter()
            .filter(|g| g.i.rem_euclid(LATTICE) == 0 && g.j.rem_euclid(LATTICE) == 0)
            .map(|g| (g.i, g.j))
            .collect();
        keys.sort_unstable();
        for &(i, j) in &keys {
            lattice.insert((i, j), net.nodes.len());
            net.nodes.push(Node {
                pos: cell_centre(i, j),
            });
        }
        for &(i, j) in &keys {
            let a = lattice[&(i, j)];
            for (di, dj, horizontal) in [(LATTICE, 0, true), (0, LATTICE, false)] {
                let Some(&b) = lattice.get(&(i + di, j + dj)) else {
                    continue;
                };
                // Both ends built up, the midpoint too, and no river between.
                if !cells.contains_key(&(i + di / 2, j + dj / 2)) {
                    continue;
                }
                if crate::water::crosses_water(&rivers, net.nodes[a].pos, net.nodes[b].pos) {
                    continue;
                }
                let line = if horizontal { j } else { i };
                let secondary = line.rem_euclid(2 * LATTICE) == 0;
                let k = line.div_euclid(LATTICE);
                let (zh, en) = if horizontal {
                    (format!("横{k}路"), format!("Heng {k} Road (generated)"))
                } else {
                    (format!("纵{k}路"), format!("Zong {k} Road (generated)"))
                };
                net.add_segment(Segment {
                    code: format!("{}{}-{}-{}", if horizontal { "h" } else { "v" }, i, j, line),
                    road: None,
                    name_zh: zh,
                    name_en: en,
                    class: if secondary {
                        RoadClass::Secondary
                    } else {
                        RoadClass::Local
                    },
                    lanes: if secondary { 2 } else { 1 },
                    speed_kmh: if secondary { 50 } else { 30 },
                    a,
                    b,
                    length_m: 0.0,
                });
            }
        }

        // Access links: each exit of a named road joins the nearest lattice
        // node within 350 m.
        let cell = |p: Xy| ((p.x / CELL_M).floor() as i32, (p.y / CELL_M).floor() as i32);
        for &(n, slug, exit) in &major_nodes {
            if !exit {
                continue;
            }
            let p = net.nodes[n].pos;
            let (ci, cj) = cell(p);
            let mut best: Option<(f64, usize)> = None;
            let r = 2 * LATTICE;
            for di in -r..=r {
                for dj in -r..=r {
                    if let Some(&m) = lattice.get(&(ci + di, cj + dj)) {
                        let d = p.dist(net.nodes[m].pos);
                        if d < 350.0 && best.is_none_or(|(bd, _)| d < bd) {
                            best = Some((d, m));
                        }
                    }
                }
            }
            if let Some((_, m)) = best {
                net.add_link(n, m, format!("access-{slug}-{n}"));
            }
        }
        net.mark_main_component();
        net
    }

    fn add_link(&mut self, a: usize, b: usize, code: String) {
        self.add_segment(Segment {
            code,
            road: None,
            name_zh: "连接道".to_string(),
            name_en: "Link road".to_string(),
            class: RoadClass::Secondary,
            lanes: 1,
            speed_kmh: 40,
            a,
            b,
            length_m: 0.0,
        });
    }

    fn add_segment(&mut self, mut seg: Segment) {
        seg.length_m = self.nodes[seg.a].pos.dist(self.nodes[seg.b].pos).max(1.0);
        let s = self.segments.len();
        let (a, b) = (seg.a, seg.b);
        self.segments.push(seg);
        if self.out.len() < self.nodes.len() {
            self.out.resize(self.nodes.len(), Vec::new());
        }
        self.out[a].push(self.edges.len());
        self.edges.push(Edge {
            segment: s,
            from: a,
            to: b,
        });
        self.out[b].push(self.edges.len());
        self.edges.push(Edge {
            segment: s,
            from: b,
            to: a,
        });
    }

    fn mark_main_component(&mut self) {
        self.out.resize(self.nodes.len(), Vec::new());
        let mut comp = vec![usize::MAX; self.nodes.len()];
        let mut sizes = Vec::new();
        for start in 0..self.nodes.len() {
            if comp[start] != usize::MAX {
                continue;
            }
            let c = sizes.len();
            let mut stack = vec![start];
            comp[start] = c;
            let mut size = 0;
            while let Some(n) = stack.pop() {
                size += 1;
                for &e in &self.out[n] {
                    let t = self.edges[e].to;
                    if comp[t] == usize::MAX {
                        comp[t] = c;
                        stack.push(t);
                    }
                }
            }
            sizes.push(size);
        }
        let main = (0..sizes.len()).max_by_key(|&c| (sizes[c], usize::MAX - c));
        self.in_main = comp.iter().map(|&c| Some(c) == main).collect();
    }

    /// The edges vehicles may use: both ends in the main component.
    pub fn drivable_edges(&self) -> Vec<usize> {
        (0..self.edges.len())
            .filter(|&e| self.in_main[self.edges[e].from])
            .collect()
    }

    /// Position at `offset_m` metres along edge `e`, and its heading.
    pub fn position(&self, e: usize, offset_m: f64) -> (Xy, f64) {
        let edge = self.edges[e];
        let (a, b) = (self.nodes[edge.from].pos, self.nodes[edge.to].pos);
        let len = self.segments[edge.segment].length_m;
        (a.lerp(b, (offset_m / len).clamp(0.0, 1.0)), a.heading_to(b))
    }

    /// The segment's line, start to end.
    pub fn segment_line(&self, s: usize) -> [Xy; 2] {
        let seg = &self.segments[s];
        [self.nodes[seg.a].pos, self.nodes[seg.b].pos]
    }

    /// Fastest path (free-flow travel time) from node `from` to node `to`, as
    /// a list of edges; `None` if unreachable. Dijkstra with a binary heap.
    pub fn route(&self, from: usize, to: usize) -> Option<Vec<usize>> {
        #[derive(PartialEq)]
        struct Item(f64, usize);
        impl Eq for Item {}
        impl PartialOrd for Item {
            fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
                Some(self.cmp(o))
            }
        }
        impl Ord for Item {
            fn cmp(&self, o: &Self) -> Ordering {
                o.0.total_cmp(&self.0).then_with(|| o.1.cmp(&self.1))
            }
        }
        let mut dist = vec![f64::INFINITY; self.nodes.len()];
        let mut via = vec![usize::MAX; self.nodes.len()];
        let mut heap = BinaryHeap::new();
        dist[from] = 0.0;
        heap.push(Item(0.0, from));
        while let Some(Item(d, n)) = heap.pop() {
            if n == to {
                break;
            }
            if d > dist[n] {
                continue;
            }
            for &e in &self.out[n] {
                let edge = self.edges[e];
                let seg = &self.segments[edge.segment];
                let t = d + seg.length_m / (f64::from(seg.speed_kmh) / 3.6);
                if t < dist[edge.to] {
                    dist[edge.to] = t;
                    via[edge.to] = e;
                    heap.push(Item(t, edge.to));
                }
            }
        }
        if !dist[to].is_finite() {
            return None;
        }
        let mut path = Vec::new();
        let mut n = to;
        while n != from {
            let e = via[n];
            path.push(e);
            n = self.edges[e].from;
        }
        path.reverse();
        Some(path)
    }
}

/// Distance from `p` to the nearest point of segment `s`.
pub fn dist_to_segment(net: &RoadNetwork, s: usize, p: Xy) -> f64 {
    let [a, b] = net.segment_line(s);
    geom::dist_to_segment(p, a, b)
}
