//! The Pearl River (珠江) and its channels as approximate centrelines.
//!
//! No open river geometry was available offline: these polylines were drawn
//! from public maps and are accurate to a few hundred metres. They place the
//! water-level sensors, keep unit grids off the main channels and block
//! generated local roads from crossing them (only the named bridges do).

use crate::geom::Xy;

/// A river channel.
#[derive(Debug, Clone)]
pub struct Channel {
    /// Short stable identifier used in entity ids.
    pub slug: &'static str,
    /// Chinese name.
    pub name_zh: &'static str,
    /// English name.
    pub name_en: &'static str,
    /// Half of the typical channel width in metres (cells closer than this to
    /// the centreline are water).
    pub half_width_m: f64,
    /// Spacing of water-level sensors along the channel in metres.
    pub sensor_spacing_m: f64,
    /// Mean water level at the gauges in metres (Pearl River datum).
    pub mean_level_m: f64,
    /// Approximate centreline, lon/lat.
    pub line: &'static [(f64, f64)],
}

/// The channels, west to east and upstream to downstream.
pub const CHANNELS: &[Channel] = &[
    Channel {
        slug: "front",
        name_zh: "珠江前航道",
        name_en: "Pearl River Front Channel",
        half_width_m: 130.0,
        sensor_spacing_m: 1500.0,
        mean_level_m: 1.2,
        line: &[
            (113.2370, 23.1090),
            (113.2500, 23.1130),
            (113.2650, 23.1140),
            (113.2800, 23.1160),
            (113.2950, 23.1140),
            (113.3100, 23.1120),
            (113.3250, 23.1105),
            (113.3400, 23.1100),
            (113.3600, 23.1080),
            (113.3750, 23.1010),
            (113.4000, 23.0980),
            (113.4200, 23.0920),
            (113.4450, 23.0850),
        ],
    },
    Channel {
        slug: "back",
        name_zh: "珠江后航道",
        name_en: "Pearl River Back Channel",
        half_width_m: 150.0,
        sensor_spacing_m: 1500.0,
        mean_level_m: 1.1,
        line: &[
            (113.2370, 23.1090),
            (113.2400, 23.0900),
            (113.2450, 23.0750),
            (113.2620, 23.0620),
            (113.2900, 23.0580),
            (113.3200, 23.0600),
            (113.3500, 23.0680),
            (113.3800, 23.0750),
            (113.4100, 23.0800),
            (113.4450, 23.0850),
        ],
    },
    Channel {
        slug: "west",
        name_zh: "珠江西航道",
        name_en: "Pearl River West Channel",
        half_width_m: 120.0,
        sensor_spacing_m: 1500.0,
        mean_level_m: 1.3,
        line: &[
            (113.2150, 23.1700),
            (113.2300, 23.1350),
            (113.2370, 23.1090),
        ],
    },
    Channel {
        slug: "shiziyang",
        name_zh: "狮子洋",
        name_en: "Shiziyang Estuary",
        half_width_m: 800.0,
        sensor_spacing_m: 6000.0,
        mean_level_m: 0.9,
        line: &[
            (113.4450, 23.0850),
            (113.5000, 23.0300),
            (113.5500, 22.9500),
            (113.6000, 22.8500),
            (113.6500, 22.7500),
        ],
    },
    Channel {
        slug: "liuxi",
        name_zh: "流溪河",
        name_en: "Liuxi River",
        half_width_m: 60.0,
        sensor_spacing_m: 7000.0,
        mean_level_m: 2.0,
        line: &[
            (113.6000, 23.6200),
            (113.5600, 23.5300),
            (113.4700, 23.4600),
            (113.3800, 23.4200),
            (113.3000, 23.3500),
            (113.2400, 23.2500),
            (113.2150, 23.1700),
        ],
    },
];

impl Channel {
    /// The centreline in local metres.
    pub fn points(&self) -> Vec<Xy> {
        self.line
            .iter()
            .map(|&(lon, lat)| Xy::from_lonlat(lon, lat))
            .collect()
    }
}

/// True if the segment `a`–`b` crosses a channel centreline.
pub fn crosses_water(channels: &[Vec<Xy>], a: Xy, b: Xy) -> bool {
    channels
        .iter()
        .any(|line| line.windows(2).any(|w| segments_cross(a, b, w[0], w[1])))
}

fn segments_cross(p1: Xy, p2: Xy, q1: Xy, q2: Xy) -> bool {
    let orient = |a: Xy, b: Xy, c: Xy| (b.x - a.x) * (c.y - a.y) - (b.y - a.y) * (c.x - a.x);
    let d1 = orient(q1, q2, p1);
    let d2 = orient(q1, q2, p2);
    let d3 = orient(p1, p2, q1);
    let d4 = orient(p1, p2, q2);
    (d1 > 0.0) != (d2 > 0.0) && (d3 > 0.0) != (d4 > 0.0)
}
