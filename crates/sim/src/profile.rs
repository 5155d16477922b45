//! Daily cycles: traffic demand, sunlight, parking use, as smooth
//! functions of the local hour (Guangzhou is UTC+8 all year).

use city::assets::ParkingUse;

/// Milliseconds of the UTC+8 offset.
pub const UTC8_MS: i64 = 8 * 3600 * 1000;

/// Local hour of day in `[0, 24)` at Unix time `ms`.
pub fn local_hour(ms: i64) -> f64 {
    (ms + UTC8_MS).rem_euclid(86_400_000) as f64 / 3_600_000.0
}

fn bump(h: f64, centre: f64, width: f64) -> f64 {
    let d = (h - centre).abs().min(24.0 - (h - centre).abs());
    (-(d / width).powi(2)).exp()
}

/// Traffic demand in `[0.1, 1]`: low at night, a morning peak around 08:15
/// and an evening peak around 18:15, a daytime plateau between.
pub fn traffic(h: f64) -> f64 {
    let day = if (7.0..21.0).contains(&h) { 0.45 } else { 0.0 };
    (0.1 + day + 0.55 * bump(h, 8.25, 1.0) + 0.55 * bump(h, 18.25, 1.2)).min(1.0)
}

/// Sunlight in `[0, 1]` (zero at night, peak at 12:30).
pub fn sun(h: f64) -> f64 {
    ((h - 6.3) / 12.7 * std::f64::consts::PI).sin().max(0.0)
}

/// True when streetlights are on (dusk to dawn).
pub fn dark(h: f64) -> bool {
    !(6.25..18.75).contains(&h)
}

/// Expected share of occupied spots of a car park of `usage`.
pub fn parking(usage: ParkingUse, h: f64) -> f64 {
    match usage {
        ParkingUse::Commercial => 0.2 + 0.7 * bump(h, 16.5, 3.5),
        ParkingUse::Office => {
            0.1 + 0.8
                * if (9.0..18.5).contains(&h) {
                    1.0
                } else {
                    bump(h, 13.0, 5.0) * 0.3
                }
        }
        ParkingUse::Residential => 0.92 - 0.55 * if (9.0..17.5).contains(&h) { 1.0 } else { 0.0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_are_at_rush_hours() {
        assert!(traffic(8.25) > 0.95);
        assert!(traffic(18.25) > 0.95);
        assert!(traffic(3.0) < 0.15);
        assert!(traffic(12.0) < traffic(8.25));
    }

    #[test]
    fn local_time_is_utc_plus_8() {
        // 2026-07-01T00:00:00Z is 08:00 in Guangzhou.
        assert_eq!(local_hour(1_782_864_000_000), 8.0);
        assert!(dark(22.0) && !dark(12.0));
    }
}
